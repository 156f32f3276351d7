"""Pruned 3x3 convolution at inference: sparse_conv2d vs the dense float convolution, by sparsity.

Where bench_sparse.py times the product W @ cols on a given patch matrix, this times the whole layer
as a pruned network runs it: ``tinycomp_kernels.sparse_conv.sparse_conv2d`` with the path it picks from
the shapes ("sparse"; the "path" column names it) against the project's fastest float conv,
``tinycomp_kernels.conv.conv2d_forward`` with the full weight (the "tiles" implicit GEMM on these
shapes), float32, stride 1, padding 1. All three paths are also timed forced: "im2col" (the patch
matrix in L3-sized chunks of images when it is large, then the CSR product), "implicit" (the same
product with the patch rows written from x inside the kernel: ``kernels/sparse_implicit.py``) and
"direct" (each kept weight adds a shifted plane: ``kernels/sparse_direct.py``), and "whole" is the
im2col path with the whole batch's patch matrix at once (``return_cols=True``, the training path):
the chunking's gain. Weights are magnitude-pruned to each sparsity (unstructured); every sparse
result is validated against conv2d_forward of the pruned weight before timing. All are timed
round-robin in one run (harness.interleaved, rotated); ratios are medians of per-round ratios
(harness.paired_ratio), with the middle half of the rounds. PyTorch's dense conv2d is timed too when
torch is importable, in a separate process with the same thread count, after the tinycomp rounds
(bench_binary_conv.torch_times): its column divides medians taken minutes apart. PyTorch has no CPU
kernel for unstructured sparse convolution, so its dense conv is what a PyTorch user would run.

    flock /tmp/tinycomp-bench.lock python benchmarks/bench_sparse_conv.py [--quick] [--threads 2]
"""
import os
import sys

import tinycomp_kernels  # noqa: E402,F401  first: it sets every thread-pool variable before numpy starts
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
from bench_binary_conv import torch_times  # noqa: E402
from bench_sparse import magnitude_prune  # noqa: E402
from harness import bench_run, compute_probe, interleaved, paired_ratio, write_report  # noqa: E402

# (net, N, C = O, H = W): the 3x3 stride-1 layers of the CIFAR ResNets
LAYERS = [
    ("ResNet-20 stage1", 64, 16, 32), ("ResNet-20 stage2", 64, 32, 16), ("ResNet-20 stage3", 64, 64, 8),
    ("ResNet-20 stage3", 256, 64, 8), ("ResNet-18 layer2", 64, 128, 16), ("ResNet-18 layer3", 64, 256, 8),
]
SPARSITIES = [0.0, 0.5, 0.8, 0.9, 0.95, 0.99]


def main():
    args, threads = bench_run(__doc__, repeats=10, quick_help="batch / 8, 2 repeats: a smoke run")
    from tinycomp_kernels.conv import conv2d_forward
    from tinycomp_kernels.csr import csr_from_dense
    from tinycomp_kernels.sparse_conv import sparse_conv2d, sparse_conv2d_algorithm

    repeats = 2 if args.quick else args.repeats
    probe_before = compute_probe()
    rng = np.random.default_rng(0)
    rows, layers, layer_of_row = [], [], []
    for net, n, c, h in LAYERS:
        n = max(1, n // 8) if args.quick else n
        layers.append((n, c, h, c, 1))
        x = rng.standard_normal((n, c, h, h)).astype(np.float32)
        w_full = rng.standard_normal((c, c, 3, 3)).astype(np.float32)
        for s in SPARSITIES:
            w = magnitude_prune(w_full, s)
            indptr, indices, values = csr_from_dense(w.reshape(c, -1))
            want = conv2d_forward(x, w, 1, 1)
            for algorithm in (None, "im2col", "implicit", "direct"):
                got = sparse_conv2d(x, indptr, indices, values, w.shape, 1, 1, algorithm=algorithm)
                assert np.allclose(got, want, rtol=1e-3, atol=1e-3 * np.sqrt(9 * c)), (net, n, s, algorithm)
            t = interleaved({
                "dense": lambda: conv2d_forward(x, w_full, 1, 1),
                "sparse": lambda: sparse_conv2d(x, indptr, indices, values, w.shape, 1, 1),
                "im2col": lambda: sparse_conv2d(x, indptr, indices, values, w.shape, 1, 1, algorithm="im2col"),
                "implicit": lambda: sparse_conv2d(x, indptr, indices, values, w.shape, 1, 1, algorithm="implicit"),
                "direct": lambda: sparse_conv2d(x, indptr, indices, values, w.shape, 1, 1, algorithm="direct"),
                "whole": lambda: sparse_conv2d(x, indptr, indices, values, w.shape, 1, 1, return_cols=True),
            }, repeats=repeats, rotate=True)
            ratio, q25, q75 = paired_ratio(t, "dense", "sparse")
            row = {"layer": net, "N": n, "C": c, "H": h, "sparsity": s, "nnz": int(len(values)),
                   "path": sparse_conv2d_algorithm(x.shape, w.shape, len(values), 1, 1),
                   "im2col_ms": t["im2col"]["median_s"] * 1e3, "implicit_ms": t["implicit"]["median_s"] * 1e3,
                   "direct_ms": t["direct"]["median_s"] * 1e3, "implicit_x": paired_ratio(t, "im2col", "implicit")[0],
                   "dense_ms": t["dense"]["median_s"] * 1e3, "sparse_ms": t["sparse"]["median_s"] * 1e3,
                   "sparse_x": ratio, "sparse_x_iqr": f"{q25:.2f}-{q75:.2f}", "whole_ms": t["whole"]["median_s"] * 1e3,
                   "chunking_x": paired_ratio(t, "whole", "im2col")[0]}
            rows.append(row)
            layer_of_row.append(len(layers) - 1)
            print(f"{net} N={n} C={c} {h}x{h} s={s:.2f}: dense {row['dense_ms']:.2f} ms, "
                  f"sparse ({row['path']}) {row['sparse_ms']:.2f} ms, x{ratio:.2f} (im2col {row['im2col_ms']:.2f}, "
                  f"implicit {row['implicit_ms']:.2f}, direct {row['direct_ms']:.2f}, whole patch matrix {row['whole_ms']:.2f} ms)",
                  flush=True)
    torch_s, torch_note = torch_times(layers, threads, repeats)
    for row, i in zip(rows, layer_of_row):
        ts = None if torch_s is None else torch_s[i]
        row["torch_dense_ms"] = None if ts is None else ts * 1e3
        row["sparse_vs_torch"] = None if ts is None else ts / (row["sparse_ms"] / 1e3)
    columns = [("layer", "layer", None), ("N", "N", None), ("C", "C = O", None), ("H", "H = W", None),
               ("sparsity", "sparsity", "{:.0%}"), ("dense_ms", "dense conv ms", "{:.2f}"),
               ("path", "path", None), ("sparse_ms", "sparse_conv2d ms", "{:.2f}"), ("sparse_x", "sparse vs dense", "{:.2f}x"),
               ("sparse_x_iqr", "middle half of rounds", None), ("im2col_ms", "im2col path ms", "{:.2f}"),
               ("implicit_ms", "implicit path ms", "{:.2f}"), ("implicit_x", "implicit vs im2col", "{:.2f}x"),
               ("direct_ms", "direct path ms", "{:.2f}"), ("whole_ms", "im2col, whole patch matrix ms", "{:.2f}"),
               ("chunking_x", "im2col: chunks vs whole", "{:.2f}x"), ("torch_dense_ms", "torch dense ms", "{:.2f}"),
               ("sparse_vs_torch", "sparse vs torch", "{:.2f}x")]
    write_report("sparse_conv" + ("_quick" if args.quick else ""), rows, columns,
                 extra={"threads": threads, "repeats": repeats, "torch": torch_note,
                        "probe_gflops": {"before": probe_before, "after": compute_probe()}},
                 title=f"pruned 3x3 conv (sparse_conv2d, inference) vs dense conv2d_forward, float32, "
                       f"{threads} threads ({torch_note})")


if __name__ == "__main__":
    main()
