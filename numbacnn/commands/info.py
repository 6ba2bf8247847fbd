"""``numbacnn info``: versions, threading and usable devices."""

from __future__ import annotations

import argparse
import platform


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "info", help="print versions, threads and usable devices",
        description="Print the numbacnn, Python, NumPy and Numba versions, Numba's threading layer and thread "
                    "count, and which devices (cpu, cuda) this machine can use. Takes no options.")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import numba
    import numpy as np

    from numbacnn import __version__
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
