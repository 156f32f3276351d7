"""Binary-weight convolution (BC/BWN inference, float activations, packed 1-bit weights) vs the float conv.

    python benchmarks/bench_binary_weight_conv.py [--quick]

Both sides take float32 NCHW activations and return float32 NCHW outputs. The float side is
tinycomp_kernels.conv.conv2d_forward (im2col + OpenBLAS sgemm, the project's fastest float conv)
with the dense weights alpha*sign(w); a local im2col + np.matmul stands in if that module is
missing. Numba and BLAS use the same thread count (recorded). Every variant is validated against
the float result before timing; ratios come from one interleaved run.
"""
import argparse
import os
import sys

import tinycomp_kernels  # noqa: F401  first: it sets every thread-pool variable before numpy starts
import numpy as np
import numba

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import interleaved, write_report  # noqa: E402

from tinycomp_kernels.binary_weight import binary_weight_conv2d, pack_weights_per_filter  # noqa: E402

# (name, C, H, O, stride): 3x3 kernels, padding 1
RESNET18 = [("r18 conv3", 128, 28, 128, 1), ("r18 conv4", 256, 14, 256, 1), ("r18 conv5", 512, 7, 512, 1),
            ("r18 conv4 s2", 128, 28, 256, 2)]
RESNET20 = [("r20 stage1", 16, 32, 16, 1), ("r20 stage2", 32, 16, 32, 1), ("r20 stage3", 64, 8, 64, 1),
            ("r20 stage3 s2", 32, 16, 64, 2)]


def float_conv():
    try:
        from tinycomp_kernels.conv import conv2d_forward
        return "tinycomp_kernels.conv.conv2d_forward", lambda x, w, s, p: conv2d_forward(x, w, s, p, 1, 1)
    except ImportError:
        from tinycomp_kernels.im2col import im2col

        def local(x, w, s, p):
            N = x.shape[0]
            O, C, KH, KW = w.shape
            OH = (x.shape[2] + 2 * p - KH) // s + 1
            OW = (x.shape[3] + 2 * p - KW) // s + 1
            cols = im2col(x, KH, KW, s, p)                         # (C*KH*KW, N*OH*OW)
            y = np.matmul(w.reshape(O, -1), cols)                  # (O, N*OH*OW)
            return np.ascontiguousarray(y.reshape(O, N, OH, OW).transpose(1, 0, 2, 3))  # (N, O, OH, OW)
        return "local im2col + np.matmul", local


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="few repeats; batch 64 only for ResNet-20 shapes")
    args = ap.parse_args()
    from threadpoolctl import threadpool_limits
    threads = numba.get_num_threads()
    fname, fconv = float_conv()
    rng = np.random.default_rng(0)
    rows = []
    cases = [(b, *s) for s in RESNET18 + RESNET20 for b in (1, 64)]
    if args.quick:
        cases = [c for c in cases if c[0] == 1 or c[1].startswith("r20")]
    with threadpool_limits(limits=threads, user_api="blas"):
        for N, name, C, H, O, s in cases:
            x = rng.standard_normal((N, C, H, H), dtype=np.float32)
            w = rng.standard_normal((O, C, 3, 3), dtype=np.float32)
            w_bits, alpha = pack_weights_per_filter(w, scale="filter")
            wf = (alpha[:, None, None, None] * np.where(w >= 0, 1.0, -1.0)).astype(np.float32)
            ref = fconv(x, wf, s, 1)
            got = binary_weight_conv2d(x, w_bits, alpha, 3, s, 1)
            err = float(np.max(np.abs(got - ref)) / np.max(np.abs(ref)))
            assert err < 1e-4, (name, N, err)
            big = N * H * H * C * O >= 64 * 28 * 28 * 128 * 128
            reps = 3 if args.quick or big else 15
            res = interleaved({"binary": lambda: binary_weight_conv2d(x, w_bits, alpha, 3, s, 1),
                               "float": lambda: fconv(x, wf, s, 1)}, repeats=reps)
            OH = ref.shape[2]
            macs = N * O * OH * OH * C * 9
            rows.append({
                "layer": name, "N": N, "C": C, "HxW": f"{H}x{H}", "O": O, "stride": s,
                "binary_ms": res["binary"]["median_s"] * 1e3, "float_ms": res["float"]["median_s"] * 1e3,
                "binary_min_ms": res["binary"]["min_s"] * 1e3, "float_min_ms": res["float"]["min_s"] * 1e3,
                "binary_first_ms": res["binary"]["first_s"] * 1e3,
                "speedup": res["float"]["median_s"] / res["binary"]["median_s"],
                "binary_GMACs": macs / res["binary"]["median_s"] / 1e9,
                "float_GFLOPs": 2 * macs / res["float"]["median_s"] / 1e9,
                "weight_bytes_float": wf.nbytes, "weight_bytes_bits": w_bits.nbytes + alpha.nbytes,
                "max_rel_err": err,
            })
            print(rows[-1]["layer"], N, f"{rows[-1]['speedup']:.2f}x", flush=True)
    cols = [("layer", "layer", None), ("N", "N", None), ("C", "C", None), ("HxW", "HxW", None), ("O", "O", None),
            ("stride", "s", None), ("binary_ms", "binary-weight ms", "{:.3f}"), ("float_ms", "float conv ms", "{:.3f}"),
            ("speedup", "float / binary", "{:.2f}x"), ("float_GFLOPs", "float GFLOP/s", "{:.1f}"),
            ("weight_bytes_float", "weights float B", None), ("weight_bytes_bits", "weights bits B", None),
            ("max_rel_err", "max rel err", "{:.1e}")]
    write_report("binary_weight_conv" + ("_quick" if args.quick else ""), rows, cols,
                 extra={"float_conv": fname, "threads": threads, "threading_layer": numba.threading_layer(),
                        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
                        "kernel": "4-tap lookup tables: one add per 4 weights per output channel"},
                 title="Binary-weight conv (BWN, 3x3, pad 1) vs float32 conv")


if __name__ == "__main__":
    main()
