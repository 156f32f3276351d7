"""XNOR/popcount GEMM (``tinycomp_kernels.xnor_gemm.xnor_gemm``) vs float32 ``np.matmul`` of the same shape.

For each (M, N, K): A (M, K) and B (N, K) float32; the float side times ``A @ B.T`` (B.T made
contiguous beforehand, so BLAS gets its preferred layout), the binary side times
``xnor_gemm(pack(A), pack(B), K)`` on operands packed beforehand (packing is part of the binary
*conv* benchmark, not of this one). K runs over {576, 1152, 2304, 4608} = C*3*3 for C = 64..512, N is
the matching ResNet out-channel count and M = batch*OH*OW (1024 = 64*4*4 or 16*8*8, 4096 = 64*8*8).
The binary result is validated against the float32 product of the ±1 matrices (exact: integers
below 2^24) before anything is timed. Numba threads and BLAS threads are set to the same count and
recorded. Ratios come from one interleaved run (harness.interleaved). The JSON also records how many
512-bit (zmm), 256-bit (ymm) and 128-bit (xmm) VPOPCNT instructions the compiled kernel contains.

    flock /tmp/tinycomp-bench.lock python benchmarks/bench_xnor_gemm.py [--quick] [--threads 2]
"""
import os
import sys

# Let idle OpenMP / OpenBLAS workers sleep instead of spinning (see bench_conv.py): on 2 cores the
# spinning workers of one library slow the other down. Must be set before the libraries start.
import tinycomp_kernels  # noqa: E402,F401  first: it sets every thread-pool variable before numpy starts
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
from harness import bench_run, interleaved, write_report  # noqa: E402

SHAPES = [  # (M, N, K)
    (4096, 64, 576), (1024, 64, 576),
    (4096, 128, 1152), (1024, 128, 1152),
    (4096, 256, 2304), (1024, 256, 2304),
    (4096, 512, 4608), (1024, 512, 4608),
]
QUICK_SHAPES = [(1024, 64, 576), (1024, 128, 1152), (1024, 256, 2304), (1024, 512, 4608)]


def main():
    args, threads = bench_run(__doc__, repeats=15, quick_help="M = 1024 only, 3 repeats: a smoke run", threads=os.cpu_count())
    from threadpoolctl import threadpool_info

    blas_threads = [p["num_threads"] for p in threadpool_info() if p.get("user_api") == "blas"]

    from tinycomp_kernels.bits import pack_signs
    from tinycomp_kernels.xnor_gemm import popcount_instruction_counts, xnor_gemm

    shapes = QUICK_SHAPES if args.quick else SHAPES
    repeats = 3 if args.quick else args.repeats
    rng = np.random.default_rng(0)
    rows = []
    for M, N, K in shapes:
        a = np.where(rng.random((M, K)) < 0.5, -1.0, 1.0).astype(np.float32)  # (M, K) ±1
        b = np.where(rng.random((N, K)) < 0.5, -1.0, 1.0).astype(np.float32)  # (N, K) ±1
        b_t = np.ascontiguousarray(b.T)  # (K, N)
        a_bits, b_bits = pack_signs(a), pack_signs(b)  # (M, K/64), (N, K/64)
        expect = a @ b_t
        got = xnor_gemm(a_bits, b_bits, K)
        if not np.array_equal(got, expect.astype(np.int32)):
            raise SystemExit(f"xnor_gemm disagrees with float32 matmul at M={M} N={N} K={K}")
        t = interleaved({"float32": lambda: a @ b_t, "xnor": lambda: xnor_gemm(a_bits, b_bits, K)},
                        repeats=repeats)
        f, x = t["float32"], t["xnor"]
        rows.append({
            "M": M, "N": N, "K": K,
            "float32_ms": 1e3 * f["median_s"], "xnor_ms": 1e3 * x["median_s"],
            "ratio": f["median_s"] / x["median_s"], "ratio_min": f["min_s"] / x["min_s"],
            "float_gmacs": M * N * K / f["median_s"] / 1e9,
            "xnor_gbops": M * N * K / x["median_s"] / 1e9,
            "xnor_first_ms": 1e3 * x["first_s"],
        })
        print(f"M={M} N={N} K={K}: float32 {rows[-1]['float32_ms']:.2f} ms, xnor {rows[-1]['xnor_ms']:.3f} ms, "
              f"ratio {rows[-1]['ratio']:.1f}x", flush=True)

    asm = popcount_instruction_counts()
    extra = {"threads": {"numba": threads, "blas": blas_threads}, "popcount_instructions": asm,
             "repeats": repeats, "quick": args.quick,
             "note": "ratio = median float32 time / median xnor time from one interleaved run; "
                     "xnor_gbops = binary MACs (M*N*K) per ns; operands packed beforehand"}
    write_report("xnor_gemm" + ("_quick" if args.quick else ""), rows, [
        ("M", "M", None), ("N", "N", None), ("K", "K", None),
        ("float32_ms", "float32 matmul ms", "{:.3f}"), ("xnor_ms", "xnor_gemm ms", "{:.3f}"),
        ("ratio", "speedup (median)", "{:.1f}x"), ("ratio_min", "speedup (min)", "{:.1f}x"),
        ("float_gmacs", "float GMAC/s", "{:.1f}"), ("xnor_gbops", "xnor G binary-MAC/s", "{:.0f}"),
        ("xnor_first_ms", "xnor first call ms", "{:.1f}"),
    ], extra=extra, title=f"XNOR GEMM vs float32 np.matmul ({threads} numba threads, BLAS threads {blas_threads}; "
                          f"vpopcnt in kernel: {asm['zmm']} zmm, {asm['ymm']} ymm, {asm['xmm']} xmm)")


if __name__ == "__main__":
    main()
