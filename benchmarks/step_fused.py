"""Tiny VGG training step: numbacnn (fused / unfused) vs torch NCHW / channels_last, one process,
alternating blocks; prints medians and ratios against torch's best.

    NUMBA_NUM_THREADS=2 REPS=10 BLOCKS=5 python benchmarks/step_fused.py
"""
import os, time
import numpy as np
import numba
import torch
import numbacnn.functional as F
from numbacnn.models import tiny_vgg
from numbacnn.optim import SGD
from numbacnn.nn import fusion

reps = int(os.environ.get("REPS", "20"))
blocks = int(os.environ.get("BLOCKS", "5"))

def nb_step(cin, size, pad, batch, fused):
    model = tiny_vgg(cin, 10, size, padding=pad, dtype=np.float32, seed=0)
    opt = SGD(model.parameters(), lr=0.01)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, cin, size, size)).astype(np.float32)
    labels = rng.integers(0, 10, batch)
    def step():
        fusion.set_enabled(fused)
        model.zero_grad()
        loss, grad = F.softmax_cross_entropy(model(x), labels)
        model.backward(grad, input_grad=False)
        opt.step()
    return step

def torch_step(cin, size, pad, batch, channels_last):
    tn = torch.nn
    s = (size + 2 * pad - 2) + 2 * pad - 2
    s //= 2; s = s + 2 * pad - 2; s = s + 2 * pad - 2; s //= 2
    m = tn.Sequential(tn.Conv2d(cin, 10, 3, padding=pad), tn.ReLU(), tn.Conv2d(10, 10, 3, padding=pad), tn.ReLU(), tn.MaxPool2d(2),
                      tn.Conv2d(10, 10, 3, padding=pad), tn.ReLU(), tn.Conv2d(10, 10, 3, padding=pad), tn.ReLU(), tn.MaxPool2d(2),
                      tn.Flatten(), tn.Linear(10 * s * s, 10))
    x = torch.randn(batch, cin, size, size)
    if channels_last:
        m = m.to(memory_format=torch.channels_last); x = x.contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 10, (batch,))
    opt = torch.optim.SGD(m.parameters(), lr=0.01)
    lossf = tn.CrossEntropyLoss()
    def step():
        opt.zero_grad(); lossf(m(x), labels).backward(); opt.step()
    return step

def bench(fns):
    for f in fns.values():
        for _ in range(3): f()
    times = {k: [] for k in fns}
    for _ in range(blocks):
        for k, f in fns.items():
            t = time.perf_counter()
            for _ in range(reps): f()
            times[k].append((time.perf_counter() - t) / reps * 1e3)
    return {k: float(np.median(v)) for k, v in times.items()}

def main():
    torch.set_num_threads(numba.get_num_threads())
    print("load", open("/proc/loadavg").read().split()[:3], "threads", numba.get_num_threads())
    for cin, size, pad, batch in [(1, 28, 1, 64), (3, 64, 0, 32)]:
        fns = {"nb_fused": nb_step(cin, size, pad, batch, True), "nb_unfused": nb_step(cin, size, pad, batch, False),
               "torch_nchw": torch_step(cin, size, pad, batch, False), "torch_cl": torch_step(cin, size, pad, batch, True)}
        if os.environ.get("NOUNFUSED"): del fns["nb_unfused"]
        r = bench(fns)
        best = min(r["torch_nchw"], r["torch_cl"])
        print(f"{cin}x{size}x{size} b{batch} p{pad}: " + "  ".join(f"{k} {v:.2f}ms" for k, v in r.items())
              + f"  fused/best {r['nb_fused']/best:.2f}")
    print("load", open("/proc/loadavg").read().split()[:3])


if __name__ == "__main__":  # a script, not an asv module: nothing runs on import
    main()
