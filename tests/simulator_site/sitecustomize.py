"""Python imports ``sitecustomize`` at start-up from its path: a test puts this folder
on ``PYTHONPATH`` so that the Python processes it starts under Numba's CUDA
simulator (and their children) get what conftest.py gives the test processes:
tests/cuda_simulator.py's short switch interval and locked shared arrays."""

import os

if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
    import importlib.util
    import sys
    from pathlib import Path

    _spec = importlib.util.spec_from_file_location("cuda_simulator",
                                                   Path(__file__).resolve().parents[1] / "cuda_simulator.py")
    _module = importlib.util.module_from_spec(_spec)
    sys.modules["cuda_simulator"] = _module  # conftest.py's `import cuda_simulator` finds this one
    _spec.loader.exec_module(_module)
    _module.prepare()
