"""``numbacnn info``: versions, threading and usable devices; with ``--kernels``, which
kernel runs for every layer of a Tiny VGG (or a checkpoint's model), and where it is."""

from __future__ import annotations

import argparse
import platform


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "info", help="print versions, threads and usable devices (--kernels: which kernel runs per layer)",
        description="Print versions, threads and usable devices. With --kernels, print for every layer (or "
                    "fused group) of a model the kernels that run forward and backward, their file:line and why "
                    "that one: Tiny VGG at the options below, or the model of CHECKPOINT.")
    parser.add_argument("checkpoint", nargs="?", default=None,
                        help="with --kernels: a checkpoint.npz (or its run folder) whose model to describe")
    parser.add_argument("--kernels", action="store_true", help="print which kernel runs for each layer")
    model = parser.add_argument_group("model for --kernels (without CHECKPOINT; as numbacnn train)")
    model.add_argument("--image-size", type=int, default=28, help="input height and width (default: 28)")
    model.add_argument("--channels", type=int, default=1, help="input channels (default: 1)")
    model.add_argument("--kernel-size", type=int, default=3, help="convolution kernel size (default: 3)")
    model.add_argument("--padding", type=int, default=1, help="convolution padding (default: 1)")
    model.add_argument("--stride", type=int, default=1, help="stride of each block's first conv (default: 1)")
    model.add_argument("--batch-norm", action="store_true", help="BatchNorm2d after every convolution")
    model.add_argument("--dropout", type=float, default=0.0, help="dropout before the classifier (default: 0)")
    model.add_argument("--batch-size", type=int, default=64, help="batch of the input shape (default: 64)")
    model.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                       help="parameter and input dtype (default: float32)")
    model.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="device (default: cpu)")
    model.add_argument("--eval", action="store_true", help="forward only, as evaluate and predict run")
    parser.set_defaults(func=run)


def run_kernels(args: argparse.Namespace) -> int:
    """``numbacnn info --kernels``: the kernel table for one model and input shape."""
    import os

    import numpy as np

    from numbacnn.errors import UsageError
    from numbacnn.report.kernels import format_kernel_choices, kernel_choices

    if args.batch_size < 1:
        raise UsageError(f"batch size must be an int >= 1, got {args.batch_size}", "--batch-size",
                         "use --batch-size 1 or more")
    dtype = np.dtype(args.dtype)
    if args.checkpoint is not None:
        from numbacnn.train import load_checkpoint

        path = args.checkpoint
        if os.path.isdir(path):
            path = os.path.join(path, "checkpoint.npz")
        ckpt = load_checkpoint(path)
        kwargs = ckpt.meta["model"]["kwargs"]
        model = ckpt.build_model("cpu")
        shape = (args.batch_size, kwargs["in_channels"], kwargs["image_size"], kwargs["image_size"])
        dtype = np.dtype(kwargs.get("dtype", args.dtype))
        what = f"the model of {args.checkpoint}"
    else:
        from numbacnn.models import tiny_vgg

        try:
            model = tiny_vgg(args.channels, 10, args.image_size, kernel_size=args.kernel_size, padding=args.padding,
                             stride=args.stride, batch_norm=args.batch_norm, dropout=args.dropout, dtype=dtype,
                             seed=0)
        except (TypeError, ValueError) as exc:
            raise UsageError(str(exc).removeprefix("tiny_vgg: "), "the model options",
                             "see numbacnn info --help") from None
        shape = (args.batch_size, args.channels, args.image_size, args.image_size)
        what = "tiny_vgg"
    print(f"{what}, input {'x'.join(map(str, shape))} {dtype.name} on {args.device}, "
          f"{'forward only' if args.eval else 'a training step'}:")
    print(format_kernel_choices(kernel_choices(model, shape, args.device, dtype, training=not args.eval)))
    return 0


def run(args: argparse.Namespace) -> int:
    if args.kernels:
        return run_kernels(args)
    if args.checkpoint is not None:
        from numbacnn.errors import UsageError

        raise UsageError("a checkpoint is read only with --kernels", args.checkpoint,
                         f"run numbacnn info --kernels {args.checkpoint}")
    import numba
    import numpy as np

    from numbacnn import __version__
    from numbacnn._environment import VECTOR_WIDTH
    from numbacnn.device import DeviceError, cuda_available, cuda_kernels_present, cuda_simulator_enabled, require_cuda

    # The threading layer is chosen on the first parallel launch; run a tiny one so
    # the name printed is the one kernels will use.
    from numbacnn.kernels.cpu.activation import relu_forward

    scratch = np.zeros(4)
    relu_forward(scratch, scratch)
    try:
        layer = numba.threading_layer()
    except ValueError:
        layer = "not initialised"

    print(f"numbacnn        {__version__}")
    print(f"python          {platform.python_version()}")
    print(f"numpy           {np.__version__}")
    print(f"numba           {numba.__version__}")
    print(f"threading layer {layer}")
    print(f"threads         {numba.get_num_threads()} (set NUMBA_NUM_THREADS to change)")
    print(f"vectors         {VECTOR_WIDTH[0] if VECTOR_WIDTH else 'as Numba chooses'}")
    cuda_line = "no"
    if not cuda_kernels_present():
        cuda_line = "no (this installation has no CUDA backend)"
    elif cuda_simulator_enabled():
        # never touch the simulated device: without numba-cuda, numba's own simulator
        # has no get_current_device (issue 21)
        try:
            require_cuda()
            usable = "--device cuda runs there, thousands of times slower than the CPU; --device auto uses the CPU"
        except DeviceError as exc:
            reason = str(exc).removeprefix("device 'cuda': ")
            usable = f"unusable: {reason}"
        cuda_line = f"simulator only (NUMBA_ENABLE_CUDASIM=1 is set: {usable})"
    elif cuda_available():
        from numba import cuda

        try:
            name = getattr(cuda.get_current_device(), "name", "unnamed GPU")
            cuda_line = f"yes ({name.decode() if isinstance(name, bytes) else name})"
        except Exception as exc:  # a driver that answers is_available() but not this
            cuda_line = f"no (the GPU did not answer: {type(exc).__name__}: {exc})"
    else:
        cuda_line = 'no (no GPU found, or numba-cuda missing: pip install "numbacnn[cuda]")'
    print("devices         cpu: yes")
    print(f"                cuda: {cuda_line}")
    return 0
