"""``numbacnn info``: versions, threading and usable devices."""

from __future__ import annotations

import argparse
import platform


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("info", help="print versions, threads and usable devices")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import numba
    import numpy as np

    from numbacnn import __version__
    from numbacnn.device import cuda_available, cuda_kernels_present

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
    cuda_line = "no"
    if not cuda_kernels_present():
        cuda_line = "no (this installation has no CUDA backend)"
    elif cuda_available():
        from numba import cuda

        name = getattr(cuda.get_current_device(), "name", "Numba CUDA simulator")  # the simulator has no name
        cuda_line = f"yes ({name.decode() if isinstance(name, bytes) else name})"
    else:
        cuda_line = 'no (no GPU found, or numba-cuda missing: pip install "numbacnn[cuda]")'
    print("devices         cpu: yes")
    print(f"                cuda: {cuda_line}")
    return 0
