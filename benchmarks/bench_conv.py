"""Float conv2d kernels on ResNet-20's layer shapes (batch 128, CIFAR 32x32), float32.

For each layer shape: forward, backward-input and backward-weight of ``tinycomp_kernels.conv`` with
the algorithm it picks from the shapes ("tiles" = register-tile implicit GEMM for these layers),
each validated against the NumPy reference first (on a small batch), then timed; GFLOP/s counts
2*N*O*OH*OW*C/G*KH*KW per pass. The "gemm" column times a bare ``np.matmul`` of the forward's GEMM
size ((O, C*KH*KW) @ (C*KH*KW, N*OH*OW)) in the same run, the ceiling of any im2col + BLAS conv, and
the forward forced to ``algorithm="im2col"`` (the speed-up column is im2col time / chosen time, timed
round-robin in the same run); the "weighted" row adds the passes up with each shape's count in the network, which is the conv part of
one training step.

    flock /tmp/tinycomp-bench.lock python benchmarks/bench_conv.py [--quick] [--threads 2]
"""
import argparse
import os
import sys

# Numba's OpenMP workers and OpenBLAS's workers both spin-wait after a parallel region by default;
# on 2 cores the alternation im2col (Numba) -> GEMM (BLAS) -> swap (Numba) then leaves three spinning
# threads on two cores and a conv took 10-20x longer. Both must be set before the libraries start.
import tinycomp_kernels  # noqa: E402,F401  first: it sets every thread-pool variable before numpy starts
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
from harness import interleaved, write_report  # noqa: E402

# (name, count in ResNet-20, C, H, O, K, stride, padding): option-B 1x1 shortcuts included.
LAYERS = [
    ("stem 3->16", 1, 3, 32, 16, 3, 1, 1),
    ("s1 16->16", 6, 16, 32, 16, 3, 1, 1),
    ("s2 16->32 /2", 1, 16, 32, 32, 3, 2, 1),
    ("s2 32->32", 5, 32, 16, 32, 3, 1, 1),
    ("s3 32->64 /2", 1, 32, 16, 64, 3, 2, 1),
    ("s3 64->64", 5, 64, 8, 64, 3, 1, 1),
    ("short 16->32 1x1/2", 1, 16, 32, 32, 1, 2, 0),
    ("short 32->64 1x1/2", 1, 32, 16, 64, 1, 2, 0),
]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="batch 16, 2 repeats: a smoke run")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()

    import numba
    from threadpoolctl import threadpool_limits

    numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    threadpool_limits(args.threads, user_api="blas")
    from tinycomp_kernels.conv import (conv2d_algorithm, conv2d_backward_input, conv2d_backward_weight,
                                       conv2d_forward, conv2d_ref)

    N = 16 if args.quick else args.batch
    repeats = 2 if args.quick else args.repeats
    rng = np.random.default_rng(0)
    rows, totals = [], {"fwd": 0.0, "bwd_in": 0.0, "bwd_w": 0.0}
    for name, count, C, H, O, K, s, p in LAYERS:
        # validate on a small batch (float64 reference) before timing anything
        xv = rng.standard_normal((2, C, H, H)).astype(np.float32)
        wv = rng.standard_normal((O, C, K, K)).astype(np.float32)
        ref = conv2d_ref(xv.astype(np.float64), wv.astype(np.float64), s, p)
        got = conv2d_forward(xv, wv, s, p)
        assert np.allclose(got, ref, rtol=1e-4, atol=1e-3), name
        dv = rng.standard_normal(ref.shape).astype(np.float32)
        dx = conv2d_backward_input(dv, wv, xv.shape, s, p)
        dxr = rng.standard_normal(xv.shape)
        assert np.isclose(np.vdot(dx, dxr), np.vdot(dv, conv2d_ref(dxr, wv.astype(np.float64), s, p)), rtol=1e-4), name
        dw = conv2d_backward_weight(dv, xv, wv.shape, s, p)
        dwr = rng.standard_normal(wv.shape)
        assert np.isclose(np.vdot(dw, dwr), np.vdot(dv, conv2d_ref(xv.astype(np.float64), dwr, s, p)), rtol=1e-4), name

        x = rng.standard_normal((N, C, H, H)).astype(np.float32)
        w = (rng.standard_normal((O, C, K, K)) * 0.1).astype(np.float32)
        out = conv2d_forward(x, w, s, p)
        dout = rng.standard_normal(out.shape).astype(np.float32)
        OH = out.shape[2]
        P = N * OH * OH
        wm, cols = w.reshape(O, -1), rng.standard_normal((C * K * K, P)).astype(np.float32)
        gflop = 2.0 * P * O * C * K * K / 1e9
        t = interleaved({
            "fwd": lambda: conv2d_forward(x, w, s, p),
            "bwd_in": lambda: conv2d_backward_input(dout, w, x.shape, s, p),
            "bwd_w": lambda: conv2d_backward_weight(dout, x, w.shape, s, p),
            "im2col_fwd": lambda: conv2d_forward(x, w, s, p, algorithm="im2col"),
            "gemm": lambda: np.matmul(wm, cols),
        }, repeats=repeats)
        del cols
        row = {"layer": name, "count": count, "algo": conv2d_algorithm(x.shape, w.shape, s, p),
               "gflop": gflop}
        for key in ("fwd", "bwd_in", "bwd_w", "im2col_fwd", "gemm"):
            row[f"{key}_ms"] = t[key]["median_s"] * 1e3
            row[f"{key}_gflops"] = gflop / t[key]["median_s"]
        row["fwd_vs_im2col"] = t["im2col_fwd"]["median_s"] / t["fwd"]["median_s"]
        for key in totals:
            totals[key] += count * t[key]["median_s"] * 1e3
        rows.append(row)
    rows.append({"layer": "weighted total (ms)", "count": "", "algo": "", "gflop": "",
                 **{f"{k}_ms": v for k, v in totals.items()}})
    cols_spec = [("layer", "layer", None), ("count", "#", None), ("algo", "algorithm", None),
                 ("fwd_ms", "fwd ms", "{:.2f}"), ("fwd_gflops", "fwd GF/s", "{:.1f}"),
                 ("bwd_in_ms", "bwd-in ms", "{:.2f}"), ("bwd_in_gflops", "bwd-in GF/s", "{:.1f}"),
                 ("bwd_w_ms", "bwd-w ms", "{:.2f}"), ("bwd_w_gflops", "bwd-w GF/s", "{:.1f}"),
                 ("im2col_fwd_gflops", "im2col+GEMM fwd GF/s", "{:.1f}"), ("fwd_vs_im2col", "fwd speed-up", "{:.2f}"),
                 ("gemm_gflops", "bare GEMM GF/s", "{:.1f}")]
    write_report("conv" + ("_quick" if args.quick else ""), rows, cols_spec,
                 extra={"batch": N, "threads": args.threads, "repeats": repeats,
                        "env": {k: os.environ.get(k) for k in ("OMP_WAIT_POLICY", "OPENBLAS_THREAD_TIMEOUT")}},
                 title=f"float conv2d, ResNet-20 shapes, batch {N}, float32, {args.threads} threads")


if __name__ == "__main__":
    main()
