"""im2col: the shifted-plane path for stride 1 with "same" padding against the generic loops.

``tinycomp_kernels.im2col.im2col`` sends stride-1 convolutions with OH = H and OW = W (3x3 pad 1) to
``_im2col_same_loops`` (each image plane copied once into a zero-guarded buffer, then KH*KW shifted
blocks of H*W elements written from it); the generic ``_im2col_loops`` (``im2col_jit``, still used for
every other geometry) copies row pieces of OW elements per (tap, image, output row). Both are timed
here on the 3x3 layers of the CIFAR ResNets, into a reused output (the kernels alone) and allocating
their result (what a caller of ``im2col(x, ...)`` pays, page faults of a fresh array included).
Validated equal first; timed round-robin (harness.interleaved, rotated); ratios are medians of
per-round ratios (harness.paired_ratio).

    flock /tmp/tinycomp-bench.lock python benchmarks/bench_im2col.py [--quick] [--threads 2]
"""
import os
import sys

import tinycomp_kernels  # noqa: E402,F401  first: it sets every thread-pool variable before numpy starts
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
from harness import bench_run, interleaved, paired_ratio, write_report  # noqa: E402

# (layer, N, C, H = W)
SHAPES = [("ResNet-20 stage1", 128, 16, 32), ("ResNet-20 stage2", 128, 32, 16), ("ResNet-20 stage3", 128, 64, 8),
          ("ResNet-20 stage3", 256, 64, 8), ("ResNet-18 layer2", 64, 128, 16), ("ResNet-18 layer3", 64, 256, 8)]


def main():
    args, threads = bench_run(__doc__, repeats=11, quick_help="batch / 8, 2 repeats: a smoke run")
    from tinycomp_kernels.im2col import im2col, im2col_jit

    def generic(x, out=None):
        n, c, h, w = x.shape
        out = np.empty((c * 9, n * h * w), np.float32) if out is None else out
        im2col_jit(out, x, 3, 3, 1, 1, 1, 1, 1, 1, h, w)
        return out

    repeats = 2 if args.quick else args.repeats
    rng = np.random.default_rng(0)
    rows = []
    for layer, n, c, h in SHAPES:
        n = max(1, n // 8) if args.quick else n
        x = rng.standard_normal((n, c, h, h)).astype(np.float32)
        a, b = generic(x), im2col(x, 3, 3, 1, 1)
        assert np.array_equal(a, b), layer
        t = interleaved({"generic": lambda: generic(x, a), "same": lambda: im2col(x, 3, 3, 1, 1, out=b),
                         "generic_alloc": lambda: generic(x), "same_alloc": lambda: im2col(x, 3, 3, 1, 1)},
                        repeats=repeats, rotate=True)
        row = {"layer": layer, "N": n, "C": c, "H": h, "MB": a.nbytes / 1e6,
               **{f"{k}_ms": v["median_s"] * 1e3 for k, v in t.items()},
               "x_reused": paired_ratio(t, "generic", "same")[0], "x_alloc": paired_ratio(t, "generic_alloc", "same_alloc")[0]}
        rows.append(row)
        print(f"{layer} N={n}: generic {row['generic_ms']:.2f} ms, same {row['same_ms']:.2f} ms "
              f"(x{row['x_reused']:.2f}); allocating x{row['x_alloc']:.2f}", flush=True)
    columns = [("layer", "layer", None), ("N", "N", None), ("C", "C", None), ("H", "H = W", None),
               ("MB", "cols MB", "{:.1f}"), ("generic_ms", "generic ms", "{:.2f}"), ("same_ms", "same-padding ms", "{:.2f}"),
               ("x_reused", "speed-up, reused out", "{:.2f}x"), ("generic_alloc_ms", "generic allocating ms", "{:.2f}"),
               ("same_alloc_ms", "same-padding allocating ms", "{:.2f}"), ("x_alloc", "speed-up, allocating", "{:.2f}x")]
    write_report("im2col" + ("_quick" if args.quick else ""), rows, columns,
                 extra={"threads": threads, "repeats": repeats},
                 title=f"im2col, 3x3 stride 1 pad 1, float32: shifted-plane path vs generic loops, {threads} threads")


if __name__ == "__main__":
    main()
