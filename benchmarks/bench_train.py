"""A whole Tiny VGG training step (forward, loss, backward, SGD) and inference."""

import numpy as np

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
