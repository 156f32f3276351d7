"""SAL inference form (k*k shifted sparse 1x1 matmuls) vs the dense 3x3 convolution it equals.

ResNet-20's stride-1 SAL layers (3x3, C = O = 16 at 32x32, 32 at 16x16, 64 at 8x8) and C = O = 64 at
16x16, batch 1 and 64 (--quick: batch 8), with the rounded attention keeping one tap per (o, c) pair
(the SAL end state) and with 50 % of the pairs also pruned:
- sal:        tinycomp_kernels.sal.sal_conv2d on the packed layer (H*W MACs per kept pair);
- conv:       the project's float conv (tinycomp_kernels.conv.conv2d_forward) with the dense
              rounded-mask weight (9x the MACs of SAL at one tap per pair);
- im2col+mm:  tinycomp_kernels.im2col + np.matmul of the same dense weight (the textbook dense path);
- csr conv:   tinycomp_kernels.sparse_conv.sparse_conv2d with the rounded weight in CSR (same nnz as SAL,
              through the path it picks: direct or implicit, no patch matrix).
All validated against sal_conv2d_ref first; timed round-robin (harness.interleaved), same thread count
for Numba and BLAS.

    flock /tmp/tinycomp-bench.lock python benchmarks/bench_sal.py [--quick] [--threads 2]
"""
import os
import sys

import tinycomp_kernels  # noqa: E402,F401  first: it sets every thread-pool variable before numpy starts
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
from harness import bench_run, interleaved, write_report  # noqa: E402

LAYERS = ((16, 32), (32, 16), (64, 8), (64, 16))  # (C = O, H = W)


def case(x, w, pruned, repeats, rng):
    """One layer, batch and pair pruning: the four variants validated, then timed round-robin."""
    from tinycomp_kernels.conv import conv2d_forward
    from tinycomp_kernels.csr import csr_from_dense
    from tinycomp_kernels.im2col import im2col
    from tinycomp_kernels.sal import sal_conv2d, sal_conv2d_ref, sal_dense_weight, sal_pack
    from tinycomp_kernels.sparse_conv import sparse_conv2d

    N, C, H, _ = x.shape
    O, _, k, _ = w.shape
    tap = rng.integers(0, k * k, (O, C))
    tap[rng.random((O, C)) < pruned] = -1
    packed = sal_pack(w, tap)
    wd = sal_dense_weight(w, tap)
    wm = wd.reshape(O, -1)
    mask = (tap[:, :, None, None] == np.arange(k * k).reshape(1, 1, k, k)).reshape(O, -1)
    indptr, indices, values = csr_from_dense(wm, mask=mask)

    def im2col_mm():
        return (wm @ im2col(x, k, k, 1, 1)).reshape(O, N, H, H).transpose(1, 0, 2, 3)

    ref = sal_conv2d_ref(x[:4], w, tap)
    variants = {"sal": lambda: sal_conv2d(x, packed), "conv": lambda: conv2d_forward(x, wd, 1, 1),
                "im2col+mm": im2col_mm,
                "csr conv": lambda: sparse_conv2d(x, indptr, indices, values, wd.shape, 1, 1)}
    for name, fn in variants.items():
        assert np.allclose(fn()[:4], ref, rtol=1e-4, atol=1e-3), (pruned, name)
    t = interleaved(variants, repeats=repeats)
    med = {name: v["median_s"] for name, v in t.items()}
    kept = int(len(packed.values))
    row = {"layer": f"{C}->{O} {H}x{H}", "batch": N, "pruned": pruned, "kept_pairs": kept,
           "sal_gmacs": N * H * H * kept / 1e9, "dense_gmacs": N * H * H * O * C * k * k / 1e9,
           **{f"{n}_ms": v * 1e3 for n, v in med.items()},
           **{f"sal_vs_{n}": med[n] / med["sal"] for n in med if n != "sal"}}
    print(row, flush=True)
    return row


def main():
    args, threads = bench_run(__doc__, repeats=15, quick_help="batch 8, 2 repeats: a smoke run")
    k = 3
    repeats = 2 if args.quick else args.repeats
    rng = np.random.default_rng(0)
    rows = []
    for C, H in LAYERS:
        w = rng.standard_normal((C, C, k, k)).astype(np.float32)
        for N in ((8,) if args.quick else (1, 64)):
            x = rng.standard_normal((N, C, H, H)).astype(np.float32)
            for pruned in (0.0, 0.5):
                rows.append(case(x, w, pruned, repeats, rng))
    columns = [("layer", "layer", None), ("batch", "batch", None), ("pruned", "pairs pruned", "{:.0%}"),
               ("kept_pairs", "kept pairs", None),
               ("sal_ms", "sal ms", "{:.2f}"), ("conv_ms", "dense conv ms", "{:.2f}"),
               ("im2col+mm_ms", "im2col+matmul ms", "{:.2f}"), ("csr conv_ms", "csr conv ms", "{:.2f}"),
               ("sal_vs_conv", "sal vs conv", "{:.2f}x"), ("sal_vs_im2col+mm", "sal vs im2col+mm", "{:.2f}x"),
               ("sal_vs_csr conv", "sal vs csr conv", "{:.2f}x")]
    write_report("sal" + ("_quick" if args.quick else ""), rows, columns,
                 extra={"k": k, "threads": threads, "repeats": repeats,
                        "env": {k_: os.environ.get(k_) for k_ in ("OMP_WAIT_POLICY", "OPENBLAS_THREAD_TIMEOUT")}},
                 title=f"SAL inference vs dense 3x3 conv on ResNet-20's layers, {threads} threads")


if __name__ == "__main__":
    main()
