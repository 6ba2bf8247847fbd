"""The training step of each model ``numbacnn train`` builds (issue 18's variants), on the
main job's shape (1x28x28, batch 64): plain, ``--batch-norm``, ``--stride 2``,
``--kernel-size 5 --padding 2``, ``--kernel-size 7 --padding 3``. One benchmark per
variant, so asv tracks each across commits (``compare_torch.py --variants`` puts them
beside PyTorch)."""

import numpy as np

from .common import TinyVGGStep

VARIANTS = {
    "plain": dict(padding=1),
    "batch_norm": dict(padding=1, batch_norm=True),
    "stride2": dict(padding=1, stride=2),
    "kernel5": dict(padding=2, kernel_size=5),
    "kernel7": dict(padding=3, kernel_size=7),
}


class VariantTrainingStep:
    params = [list(VARIANTS)]
    param_names = ["variant"]
    timeout = 600

    def setup(self, variant):
        self.step = TinyVGGStep(64, "float32", in_channels=1, image_size=28, **VARIANTS[variant])
        losses = [self.step.step() for _ in range(2)]  # compile or load from the cache, warm up
        if not all(np.isfinite(losses)):
            raise AssertionError(f"{variant}: training step loss is not finite: {losses}")

    def time_training_step(self, variant):
        self.step.step()
