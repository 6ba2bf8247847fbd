"""The fused wing: groups of layers run as one op, and the CPU fast path behind them.

Open in this order:

- ``eligibility.py``: a group as values (:class:`ConvBlock`) and the one rule that
  decides whether it takes the CPU fast path for an input (:func:`fast_path`), with
  every size from ``shapes.py``;
- ``chain.py``: :class:`BlockChain`, consecutive ``Conv2d (-> BatchNorm2d) -> ReLU
  (-> MaxPool2d)`` blocks as one op (``forward`` / ``backward``), each block either composed from the
  functional ops (``functional/fused.py``, the definition) or on the fast path, with
  what neighbours share handed over as values;
- ``buffers.py``: zero-bordered buffers and :class:`BlockBuffers`, one fast block's
  buffers (kept in a :class:`numbacnn.workspace.Workspaces`, the one workspace system);
- ``bordered_ops.py``: the fast path's ops on bordered buffers, calling the CPU
  kernels (``kernels/cpu/conv_rows.py``, ``conv_weight_grad.py``, ``bordered.py``,
  and batch norm's fast variants in ``norm.py``)
  through ``numbacnn.device.backend("cpu")``.

``numbacnn.nn.Sequential`` sees only :class:`BlockChain` (through ``nn/fusion.py``);
``numbacnn info --kernels`` asks :func:`fast_path` which kernels a model's layers run.
"""

from numbacnn.fused.chain import BlockChain, Handoff, NormParams
from numbacnn.fused.eligibility import ConvBlock, FastPath, NormSpec, PoolSpec, fast_path

__all__ = ["BlockChain", "ConvBlock", "FastPath", "Handoff", "NormParams", "NormSpec", "PoolSpec", "fast_path"]
