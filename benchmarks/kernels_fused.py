"""Per-kernel GFLOP/s, before (the unfused backend calls, padding copies included) and after
(the bordered fused kernels) on Tiny VGG's conv layers; one process, alternating blocks.

    NUMBA_NUM_THREADS=2 python benchmarks/kernels_fused.py float32
"""
import sys, time, numpy as np, numba
import numbacnn.kernels.cpu as B
import numbacnn.fused.bordered_ops as FF
from numbacnn.fused.buffers import bordered_empty, interior

def bench(fns, reps=10, blocks=5):
    for f in fns.values(): f(); f()
    t = {k: [] for k in fns}
    for _ in range(blocks):
        for k, f in fns.items():
            s = time.perf_counter()
            for _ in range(reps): f()
            t[k].append((time.perf_counter() - s) / reps)
    return {k: float(np.median(v)) for k, v in t.items()}

def main():
    dt = np.dtype(sys.argv[1] if len(sys.argv) > 1 else "float32")
    rng = np.random.default_rng(0)
    print("load", open("/proc/loadavg").read().split()[:3], "threads", numba.get_num_threads(), dt)
    print("| layer | N C HxW p | kernel | before ms | after ms | before GFLOP/s | after GFLOP/s |")
    print("|---|---|---|---:|---:|---:|---:|")
    layers = [("conv_1_1", 64, 1, 28, 1, False), ("conv_1_2", 64, 10, 28, 1, True), ("conv_2_1", 64, 10, 14, 1, False),
              ("conv_2_2", 64, 10, 14, 1, True),
              ("conv_1_1", 32, 3, 64, 0, False), ("conv_1_2", 32, 10, 62, 0, True), ("conv_2_1", 32, 10, 30, 0, False),
              ("conv_2_2", 32, 10, 28, 0, True)]
    for name, N, C, H, p, pool in layers:
        Fn, K = 10, 3
        OH = H + 2 * p - 2
        q = K - 1 - p
        x = rng.standard_normal((N, C, H, H)).astype(dt)
        w = rng.standard_normal((Fn, C, K, K)).astype(dt); b = rng.standard_normal(Fn).astype(dt)
        xp = bordered_empty(x.shape, (p, p), dt); interior(xp, (p, p), x.shape)[...] = x
        y = np.empty((N, Fn, OH, OH), dt); ybuf = bordered_empty(y.shape, (0, 0), dt)
        pooled = bordered_empty((N, Fn, OH // 2, OH // 2), (0, 0), dt); ind = np.empty(pooled.shape, np.int64)
        gzv = rng.standard_normal(y.shape).astype(dt)
        gz = bordered_empty(y.shape, (q, q), dt); interior(gz, (q, q), y.shape)[...] = gzv
        gz1 = bordered_empty(y.shape, (1, 1), dt); interior(gz1, (1, 1), y.shape)[...] = gzv
        gx = np.empty(x.shape, dt); gxb = bordered_empty(x.shape, (0, 0), dt)
        gw = np.empty(w.shape, dt); gb = np.empty(Fn, dt)
        flops = 2 * N * Fn * C * K * K * OH * OH
        args = (1, 1, p, p, 1, 1, 1)
        def old_fwd():
            B.conv2d_forward(y, x, w, b, *args); B.relu_forward(y.reshape(-1), y.reshape(-1))
            if pool: B.max_pool2d_forward_indices(pooled, ind, y, 2, 2, 2, 2, 0, 0, 1, 1)
        def new_fwd():
            if pool: FF.conv2d_relu_padded(xp, w, b, ybuf, (0, 0), pooled=pooled, indices=ind)
            else: FF.conv2d_relu_padded(xp, w, b, ybuf, (0, 0))
        def old_gw(): B.conv2d_backward_weight(gw, gzv, x, *args); B.conv2d_backward_bias(gb, gzv)
        def new_gw(): FF.conv2d_backward_padded(gz, (q, q), xp, w, (p, p), gz_bordered_by_1=gz1 if p == 0 else None)
        fns = {"old_fwd": old_fwd, "new_fwd": new_fwd, "old_gw": old_gw, "new_gw": new_gw}
        if C >= 4:
            def old_gi(): B.conv2d_backward_input(gx, gzv, w, *args)
            flipped = np.ascontiguousarray(w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))
            import numbacnn.kernels.cpu.conv_rows as KF
            kern = KF.conv_rows_kernel(C, K, K, KF.MODE_BIAS, gz.shape[2], gz.shape[3], 0, 0, itemsize=dt.itemsize)
            dummy = np.empty((1, 1, 1, 1), np.int64); nob = np.zeros(C, dt)
            def new_gi(): kern(gxb, gxb, dummy, gxb, gz, flipped, nob)
            fns.update(old_gi=old_gi, new_gi=new_gi)
        r = bench(fns)
        label = "fwd+relu" + ("+pool" if pool else "")
        for kind, lab in [("fwd", label), ("gw", "grad-weight+bias"), ("gi", "grad-input")]:
            if f"old_{kind}" in r:
                a, c = r[f"old_{kind}"], r[f"new_{kind}"]
                print(f"| {name} | {N} {C} {H}x{H} p{p} | {lab} | {a*1e3:.3f} | {c*1e3:.3f} | {flops/a/1e9:.0f} | {flops/c/1e9:.0f} |")
    print("load", open("/proc/loadavg").read().split()[:3])


if __name__ == "__main__":  # a script, not an asv module: nothing runs on import
    main()
