"""Kernels compile once per dtype and are cached on disk (cache=True): a second
process loads them instead of recompiling."""

import subprocess
import sys
import textwrap

PROBE = textwrap.dedent("""
    import numpy as np
    import numbacnn.functional as F
    from numbacnn.kernels.cpu.conv import conv2d_forward
    F.conv2d(np.ones((1, 2, 5, 5), np.float32), np.ones((3, 2, 3, 3), np.float32))
    stats = conv2d_forward.stats
    print(sum(stats.cache_hits.values()), sum(stats.cache_misses.values()))
""")


def test_second_process_loads_kernels_from_the_disk_cache():
    runs = [subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True)
            for _ in range(2)]
    hits, misses = (int(v) for v in runs[1].stdout.split())
    assert hits >= 1 and misses == 0, f"second process recompiled: hits={hits} misses={misses}"
