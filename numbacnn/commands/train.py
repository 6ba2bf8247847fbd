"""``numbacnn train``: train Tiny VGG (Fashion-MNIST by default) and report test accuracy."""

from __future__ import annotations

import argparse
import dataclasses
import signal
from pathlib import Path

from numbacnn.commands import DefaultsHelpFormatter
from numbacnn.data import DATASETS
from numbacnn.train import DTYPES, NORMALIZATIONS, OPTIMIZERS, SCHEDULES


def _defaults():
    from numbacnn.train import TrainConfig

    return TrainConfig()


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """The options that set a TrainConfig field (``--dataset`` ... ``--normalize``),
    one definition shared by ``numbacnn train`` and ``numbacnn sweep`` (whose grid
    varies the configuration they set). ``--epochs`` and ``--device`` default to
    None so that a resumed run can tell whether they were given."""
    d = _defaults()
    parser.add_argument("--dataset", choices=DATASETS, default=d.dataset,
                        help="fashion-mnist is read from $NUMBACNN_DATA or /usr/share/datasets/fashion-mnist")
    parser.add_argument("--data-dir", default=None,
                        help="folder with the dataset's files (imagefolder: one subfolder per class)")
    parser.add_argument("--epochs", type=int, default=None, help=f"number of epochs (default {d.epochs})")
    parser.add_argument("--batch-size", type=int, default=d.batch_size, help="training images per step")
    parser.add_argument("--lr", type=float, default=d.lr, help="learning rate")
    parser.add_argument("--optimizer", choices=OPTIMIZERS, default=d.optimizer, help="update rule")
    parser.add_argument("--momentum", type=float, default=d.momentum, help="SGD momentum")
    parser.add_argument("--weight-decay", type=float, default=d.weight_decay,
                        help="L2 penalty (decoupled for adamw)")
    parser.add_argument("--schedule", choices=SCHEDULES, default=d.schedule,
                        help="learning-rate schedule over the epochs")
    parser.add_argument("--seed", type=int, default=d.seed, help="weights, validation split and batch order")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None,
                        help=f"where to train (default {d.device}: CUDA when usable)")
    parser.add_argument("--padding", type=int, default=d.padding, help="padding of every convolution")
    parser.add_argument("--filters", type=int, default=d.filters, help="channels of every convolution")
    parser.add_argument("--kernel-size", type=int, default=d.kernel_size,
                        help="height and width of every convolution's kernel")
    parser.add_argument("--stride", type=int, default=d.stride, help="stride of each block's first convolution (the second "
                        "keeps stride 1, the pools 2x2/2): 3x3 kernels, padding 1, stride 2 take 28x28 to 14x14")
    parser.add_argument("--batch-norm", action="store_true", default=d.batch_norm,
                        help="BatchNorm2d after every convolution (train/eval modes handled by fit/evaluate)")
    parser.add_argument("--dropout", type=float, default=d.dropout, metavar="P",
                        help="dropout probability before the classifier's Linear layer (0: none)")
    parser.add_argument("--image-size", type=int, default=d.image_size,
                        help="imagefolder: resize images to this size")
    parser.add_argument("--channels", type=int, choices=(1, 3), default=d.channels,
                        help="imagefolder: 1 for grey, 3 for RGB")
    parser.add_argument("--val-fraction", type=float, default=d.val_fraction,
                        help="share of the training set held out for per-epoch validation")
    parser.add_argument("--dtype", choices=DTYPES, default=d.dtype,
                        help="floating-point type of weights and activations")
    parser.add_argument("--normalize", choices=NORMALIZATIONS, default=d.normalize,
                        help="standardize: per-channel mean/std of the training images; scale: x/255")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train", help="train Tiny VGG and print the test accuracy",
        description="Train CNN Explainer's Tiny VGG. Writes OUT/checkpoint.npz after every epoch and "
                    "OUT/metrics.json. With --resume, the run continues from a checkpoint with its saved "
                    "settings (only --epochs, --device and --threads may change) to the same result as an "
                    "uninterrupted run.",
        formatter_class=DefaultsHelpFormatter,
    )
    add_config_arguments(parser)
    parser.add_argument("--out", default="runs/tiny_vgg", help="folder for checkpoint.npz and metrics.json")
    parser.add_argument("--resume", nargs="?", const="", default=None, metavar="CHECKPOINT",
                        help="continue from CHECKPOINT (default: OUT/checkpoint.npz)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a checkpoint already in OUT (without it, a new run into a folder holding "
                             "another run's checkpoint is refused)")
    parser.add_argument("--threads", default="auto", metavar="auto|N",
                        help="CPU threads of the training step: auto times the full count against fewer now and "
                             "then and keeps the faster (a busy machine makes every parallel step wait for its "
                             "slowest thread); N fixes it. Results are the same bit for bit either way")
    parser.add_argument("--keep-best", action="store_true",
                        help="also keep OUT/best.npz, the checkpoint of the epoch with the best validation "
                             "accuracy (PyTorch Lightning's ModelCheckpoint(monitor=..., save_top_k=1))")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="show the progress bar (default: only when stderr is a terminal)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from numbacnn.train.threads import set_default_threads

    # errors (bad option, data, checkpoint, output folder, diverged loss) become one
    # line in numbacnn.cli.main
    previous_threads = set_default_threads(args.threads)  # checked before any work
    try:
        return _run(args)
    finally:
        set_default_threads(previous_threads)


def _run(args: argparse.Namespace) -> int:
    from numbacnn.train import CHECKPOINT_NAME, TrainConfig, load_checkpoint, train
    from numbacnn.train.outdir import tidy_output_folder

    resume = None
    if args.resume is not None:
        resume = Path(args.resume) if args.resume else Path(args.out) / CHECKPOINT_NAME
        try:
            config = load_checkpoint(resume).config
        except (OSError, ValueError):
            # refused (no checkpoint: a run killed in its first save): the temporary file
            # that run left is removed all the same, as the run itself would have
            tidy_output_folder(args.out)
            raise
        print(f"resuming with the settings saved in {resume}; of the options given, only --epochs, "
              f"--device and --threads apply")
    else:
        fields = {f.name for f in dataclasses.fields(TrainConfig)}
        config = TrainConfig(**{k: v for k, v in vars(args).items() if k in fields and v is not None})
    if args.epochs is not None:
        config.epochs = args.epochs
    if args.device is not None:
        config.device = args.device
    # schedulers and `kill` stop jobs with SIGTERM: it ends the run the way Ctrl-C does (one
    # line, exit 130); checkpoints are written atomically, so the last one is kept whole
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        train(config, out=args.out, resume=resume, progress=args.progress, overwrite=args.overwrite,
              keep_best=args.keep_best)
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
