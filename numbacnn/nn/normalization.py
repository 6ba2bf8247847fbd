"""BatchNorm2d, PyTorch's ``nn.BatchNorm2d``, with its buffers' names
(``running_mean``, ``running_var``, ``num_batches_tracked``) so state dicts map 1:1."""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

import numbacnn.functional as F
from numbacnn.device import get_default_device, resolve_device, to_device
from numbacnn.nn.module import Module, Parameter


class BatchNorm2d(Module):
    """Batch normalisation over (N, C, H, W) (or (C, H, W)) per channel.

    Training mode normalises with the batch statistics and updates the running
    ones (``momentum``; None = a cumulative average, 1 / num_batches_tracked);
    eval mode uses the running statistics. ``affine`` adds a learnt ``weight``
    (ones) and ``bias`` (zeros). A batch norm in eval mode inside a network in
    training mode (a frozen batch norm, as in fine-tuning) has a backward too: the
    running statistics are constants, so gx = weight * invstd * gy, and the weight
    and bias gradients are sums as in training.

    Parameters
    ----------
    num_features : int
        C.
    eps : float
    momentum : float or None
    affine : bool
    track_running_stats : bool
        When False there are no buffers and both modes use the batch statistics.
    dtype : float32 or float64
    device : str or None
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = True,
                 track_running_stats: bool = True, dtype: Any = np.float32, device: str | None = None) -> None:
        super().__init__()
        name = "BatchNorm2d"
        if isinstance(num_features, bool) or not isinstance(num_features, (int, np.integer)) or num_features < 1:
            raise ValueError(f"{name}: num_features must be a positive int, got {num_features!r}")
        if momentum is not None and (isinstance(momentum, bool) or not isinstance(momentum, numbers.Real)):
            raise TypeError(f"{name}: momentum must be a number or None (cumulative average), got {momentum!r}")
        dt = np.dtype(dtype)
        if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise TypeError(f"{name}: dtype must be float32 or float64, got {dt}")
        where = resolve_device(device) if device else get_default_device()
        self.num_features, self.eps, self.momentum = int(num_features), float(eps), momentum
        self.affine, self.track_running_stats = bool(affine), bool(track_running_stats)
        if self.affine:
            self.weight = Parameter(to_device(np.ones(num_features, dt), where))
            self.bias = Parameter(to_device(np.zeros(num_features, dt), where))
        else:
            self.weight = self.bias = None
        if self.track_running_stats:
            self.register_buffer("running_mean", to_device(np.zeros(num_features, dt), where))
            self.register_buffer("running_var", to_device(np.ones(num_features, dt), where))
            self.register_buffer("num_batches_tracked", np.array(0, dtype=np.int64))
        else:
            self.running_mean = self.running_var = None
        self._x: Any = None
        self._batch_stats = True

    def _unbatched(self, x: Any) -> tuple[Any, bool]:
        if len(x.shape) == 3:
            return x.reshape((1, *x.shape)), True
        if len(x.shape) != 4:
            raise ValueError(f"BatchNorm2d: expected x of shape (N, C, H, W) or (C, H, W), got {tuple(x.shape)}")
        return x, False

    def uses_batch_stats(self) -> bool:
        """Whether a forward now normalises with the batch's statistics (training, or no
        running statistics) rather than the running ones."""
        return self.training or not self.track_running_stats

    def count_batch(self) -> float:
        """Count a forward's batch (training with running statistics) and return the
        running statistics' update weight for it: ``momentum``, or 1 / batches so far
        when momentum is None (PyTorch's cumulative average); 0.0 when not updating.
        A fused Sequential block calls this in place of :meth:`forward`."""
        if not (self.training and self.track_running_stats):
            return 0.0
        self.num_batches_tracked = np.array(int(self.num_batches_tracked) + 1, dtype=np.int64)
        return 1.0 / int(self.num_batches_tracked) if self.momentum is None else float(self.momentum)

    def forward(self, x: Any) -> Any:
        x4, unbatched = self._unbatched(x)
        batch_stats = self.uses_batch_stats()
        momentum = self.count_batch()
        y = F.batch_norm(x4, self.running_mean, self.running_var,
                         None if self.weight is None else self.weight.data,
                         None if self.bias is None else self.bias.data, batch_stats, momentum, self.eps)
        # kept in eval mode too (a reference, no copy): a frozen batch norm under training
        # layers (fine-tuning) has a backward, weight * invstd * gy from the running
        # statistics, as PyTorch's
        self._x = x4
        self._batch_stats = batch_stats
        return y.reshape(tuple(x.shape)) if unbatched else y

    def backward(self, gy: Any, input_grad: bool = True) -> Any:
        if self._x is None:
            raise RuntimeError("BatchNorm2d.backward: no cached input; call forward first")
        shape = tuple(gy.shape)
        gy4 = gy.reshape(tuple(self._x.shape))
        gx, gweight, gbias = F.batch_norm_backward(
            gy4, self._x, self.running_mean, self.running_var, None if self.weight is None else self.weight.data,
            self._batch_stats, self.eps)
        if self.weight is not None:
            self.weight.accumulate(gweight)
            self.bias.accumulate(gbias)
        self._x = None
        return gx.reshape(shape) if input_grad else None

    def flops(self, input_shape: tuple[int, ...]) -> int:
        return 2 * int(np.prod(input_shape, dtype=np.int64))

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"track_running_stats={self.track_running_stats}")
