"""A whole Tiny VGG training step (forward, loss, backward, SGD) and inference, and
one whole epoch of the main job (``numbacnn train``'s defaults on Fashion-MNIST)."""

import numpy as np

import numbacnn.functional as F
from numbacnn.models import tiny_vgg

from .common import BATCHES, DTYPES, TinyVGGStep


class TrainingStep:
    params = (BATCHES, DTYPES)
    param_names = ["batch", "dtype"]
    timeout = 600

    def setup(self, batch, dtype):
        self.step = TinyVGGStep(batch, dtype)
        losses = [self.step.step() for _ in range(2)]  # compile, warm up
        if not all(np.isfinite(losses)):
            raise AssertionError(f"training step loss is not finite: {losses}")
        logits = self.step.infer()
        if logits.shape != (batch, 10) or logits.dtype != np.dtype(dtype):
            raise AssertionError(f"inference gave {logits.shape} {logits.dtype}")

    def time_training_step(self, batch, dtype):
        self.step.step()

    def time_inference(self, batch, dtype):
        self.step.infer()


class TrainingStepMemory:
    """Peak resident memory of a process that has run training steps (float32)."""

    params = [BATCHES]
    param_names = ["batch"]
    timeout = 600

    def setup(self, batch):
        self.step = TinyVGGStep(batch, "float32")
        self.step.step()

    def peakmem_training_step(self, batch):
        for _ in range(3):
            self.step.step()


def main_job_loader(seed: int = 0):
    """(training loader, source) of the main job: ``numbacnn train``'s defaults
    (Fashion-MNIST, 5% held out for validation, standardised, batch 64, shuffled).

    Fashion-MNIST is read from its usual place (``$NUMBACNN_DATA`` or
    /usr/share/datasets/fashion-mnist); where it is missing, generated uint8 images
    and labels of the same shapes (60,000 x 1 x 28 x 28) stand in and ``source``
    says "generated": the same amount of work, but not Fashion-MNIST's numbers.
    """
    from numbacnn.data import BatchLoader, Dataset, Normalizer, stratified_split
    from numbacnn.errors import DatasetNotFoundError
    from numbacnn.train import TrainConfig
    from numbacnn.train.job import prepare_data

    config = TrainConfig(epochs=1, device="cpu", seed=seed)
    try:
        return prepare_data(config).train, "fashion-mnist"
    except DatasetNotFoundError:
        rng = np.random.default_rng(seed)
        images = rng.integers(0, 256, (60_000, 1, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, 60_000).astype(np.int64)
        train = Dataset(images, labels, tuple(str(i) for i in range(10)))
        keep, _ = stratified_split(train.labels, config.val_fraction, seed)
        train = train.subset(keep)
        return (BatchLoader(train, config.batch_size, Normalizer.fit(train.images), shuffle=True, seed=seed,
                            dtype=np.dtype(config.dtype)), "generated")


def _main_job_source() -> str:
    """What the epoch benchmark trains on, shown as its parameter in asv's output."""
    from numbacnn.data import load_fashion_mnist
    from numbacnn.errors import DatasetNotFoundError

    try:
        load_fashion_mnist()
        return "fashion-mnist"
    except DatasetNotFoundError:
        return "generated (Fashion-MNIST not found)"
    except Exception:  # noqa: BLE001 - an unreadable file: the benchmark's setup will say why
        return "fashion-mnist"


class TrainingEpoch:
    """One epoch of the main job, as ``numbacnn train --epochs 1`` runs it on the CPU:
    Tiny VGG (1x28x28, padding 1, 10 filters) + SGD (lr 0.01, momentum 0.9), batch 64,
    57,000 images (891 steps), the fused Sequential path; the loader's normalisation
    and the per-batch accuracy count are included, evaluation is not.

    The parameter names the data: "fashion-mnist", or generated images of the same
    shapes where Fashion-MNIST is not installed (same work, not its accuracy).
    Issue 10's target: <= 5 s on the 2-core development machine (12.1 s before).
    """

    params = [[_main_job_source()]]
    param_names = ["data"]
    timeout = 900
    number = 1
    repeat = (1, 3, 120.0)  # an epoch is long: at most three, fewer when the first takes minutes
    warmup_time = 0

    def setup(self, data):
        from numbacnn.train import TrainConfig
        from numbacnn.train.job import make_optimizer
        from numbacnn.train.loop import train_one_epoch

        config = TrainConfig(epochs=1, device="cpu")
        self.loader, source = main_job_loader(config.seed)
        if not data.startswith(source):
            raise AssertionError(f"TrainingEpoch: asked for {data!r} data, the loader has {source!r}")
        self.model = tiny_vgg(1, 10, 28, config.filters, kernel_size=config.kernel_size, padding=config.padding,
                              dtype=np.dtype(config.dtype), seed=config.seed)
        self.optimizer = make_optimizer(config, self.model)
        self.train_one_epoch = train_one_epoch
        # compile every kernel (Numba's disk cache makes this quick after the first run)
        images, labels = next(iter(self.loader))
        for _ in range(2):
            loss, grad = F.softmax_cross_entropy(self.model(images), labels)
            self.optimizer.zero_grad()
            self.model.backward(grad, input_grad=False)
            self.optimizer.step()
        if not np.isfinite(loss):
            raise AssertionError(f"TrainingEpoch: warm-up loss is {loss}")
        self.epoch = 0

    def time_epoch(self, data):
        result = self.train_one_epoch(self.model, self.optimizer, self.loader, "cpu", self.epoch, 1, progress=False)
        self.epoch += 1
        if not np.isfinite(result["train_loss"]):
            raise AssertionError(f"TrainingEpoch: loss {result['train_loss']}")
