"""Bit-serial k-bit convolution (w1a1, w2a2, w4a4) vs float conv and XNOR conv on ResNet-20 layers.

Each layer is a 3x3, stride 1, padding 1 conv with O = C on ResNet-20's shapes (16 ch 32x32, 32 ch
16x16, 64 ch 8x8), batch 64. Sides, timed round-robin in one run (``harness.interleaved``):
- float32: ``tinycomp_kernels.conv.conv2d_forward(x, w, padding=1)``;
- xnor: ``pack_activations(x)`` then ``binary_conv2d(x_bits, w_bits, C, padding=1)`` (float32 out);
- wKaK: ``pack_activation_planes(q_x, K)`` then ``bitserial_conv2d(x_planes, w_planes, C, padding=1)``
  on uint8 activation codes q_x (int32 accumulators out; the float-to-code rounding of the
  activations and the epilogue belong to the neighbouring layers' work and are not timed).
Weights are packed once beforehand, as in an exported model. Every side is validated first: the
bit-serial accumulators against the int64 im2col reference exactly, XNOR against the float conv of
the signs, float against the int64 product of the codes. The JSON also records which popcount
instructions LLVM emitted for the bit-serial GEMM on this CPU (vpopcntq on AVX-512 VPOPCNTDQ, a
vpshufb/vpsadbw sequence on AVX2).

    flock /tmp/tinycomp-bench.lock python benchmarks/bench_bitserial.py [--quick] [--threads 2]
"""
import os
import sys

import tinycomp_kernels  # noqa: E402,F401  first: it sets every thread-pool variable before numpy starts
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
from harness import bench_run, interleaved, write_report  # noqa: E402

LAYERS = [(16, 32), (32, 16), (64, 8)]  # (C = O, H = W)
BITS = (1, 2, 4)


def popcount_instructions():
    """Counts of popcount-related instructions in a fresh (uncached) compile of the bit-serial GEMM."""
    from numba import njit, types

    from tinycomp_kernels import bitserial

    sig = (types.int32[:, :, ::1], types.uint64[:, :, ::1], types.uint64[:, :, ::1], types.int64[:, ::1], types.int64)
    fresh = njit(parallel=True)(bitserial._bitserial_gemm_loops)  # a cache-loaded function has no asm text
    fresh.compile(sig)
    ops = [ln.split("#")[0].split() for ln in fresh.inspect_asm(sig).splitlines()]
    ops = [o for o in ops if o]
    return {name: sum(o[0] == name for o in ops) for name in ("vpopcntq", "popcntq", "vpshufb", "vpsadbw")} | {
        "ymm_vpopcntq": sum(o[0] == "vpopcntq" and "%ymm" in " ".join(o) for o in ops),
        "zmm_vpopcntq": sum(o[0] == "vpopcntq" and "%zmm" in " ".join(o) for o in ops)}


def main():
    args, threads = bench_run(__doc__, repeats=10, quick_help="batch 4, 2 repeats: a smoke run", threads=os.cpu_count())
    from tinycomp_kernels.bitserial_conv import (bitserial_conv2d, bitserial_conv2d_ref, pack_activation_planes,
                                                 pack_weight_planes)
    from tinycomp_kernels.conv import conv2d_forward
    from tinycomp_kernels.xnor_conv import binary_conv2d, pack_activations, pack_weights_per_tap

    batch = 4 if args.quick else 64
    repeats = 2 if args.quick else args.repeats
    rng = np.random.default_rng(0)
    rows = []
    for C, H in LAYERS:
        x = rng.standard_normal((batch, C, H, H)).astype(np.float32)
        w = rng.standard_normal((C, C, 3, 3)).astype(np.float32)
        w_bits = pack_weights_per_tap(w)
        fns = {"float32": lambda: conv2d_forward(x, w, padding=1),
               "xnor": lambda: binary_conv2d(pack_activations(x), w_bits, C, padding=1)}
        signs_x = np.where(x >= 0, 1, -1).astype(np.int64)
        signs_w = np.where(w >= 0, 1, -1).astype(np.int64)
        np.testing.assert_array_equal(fns["xnor"](), bitserial_conv2d_ref(signs_x, signs_w, 1, 1))
        for k in BITS:
            q_x = rng.integers(0, 2**k, x.shape).astype(np.uint8)  # activation codes
            q_w = rng.integers(0, 2**k, w.shape).astype(np.uint8)
            w_planes = pack_weight_planes(q_w, k)

            def run(q_x=q_x, w_planes=w_planes, k=k):
                return bitserial_conv2d(pack_activation_planes(q_x, k), w_planes, C, padding=1)

            ref = bitserial_conv2d_ref(q_x, q_w, 1, 1)
            np.testing.assert_array_equal(run(), ref)
            if k == BITS[-1]:  # codes below 2^24 in every sum: float32 is exact on them
                np.testing.assert_array_equal(conv2d_forward(q_x.astype(np.float32), q_w.astype(np.float32),
                                                             padding=1), ref)
            fns[f"w{k}a{k}"] = run
        t = interleaved(fns, repeats=repeats, rotate=True)
        med = {name: v["median_s"] for name, v in t.items()}
        row = {"C": C, "H": H, "batch": batch, "float32_ms": 1e3 * med["float32"], "xnor_ms": 1e3 * med["xnor"]}
        for k in BITS:
            name = f"w{k}a{k}"
            row[f"{name}_ms"] = 1e3 * med[name]
            row[f"{name}_vs_float"] = med["float32"] / med[name]
            row[f"{name}_vs_xnor"] = med["xnor"] / med[name]
            row[f"{name}_first_ms"] = 1e3 * t[name]["first_s"]
        rows.append(row)
        print(f"C={C} {H}x{H}: float {row['float32_ms']:.2f} ms, xnor {row['xnor_ms']:.2f} ms, "
              + ", ".join(f"w{k}a{k} {row[f'w{k}a{k}_ms']:.2f} ms" for k in BITS), flush=True)

    asm = popcount_instructions()
    cols = [("C", "C = O", None), ("H", "H = W", None), ("batch", "batch", None),
            ("float32_ms", "float32 ms", "{:.2f}"), ("xnor_ms", "xnor ms", "{:.2f}")]
    for k in BITS:
        cols += [(f"w{k}a{k}_ms", f"w{k}a{k} ms", "{:.2f}"), (f"w{k}a{k}_vs_float", f"w{k}a{k} vs float", "{:.2f}x"),
                 (f"w{k}a{k}_vs_xnor", f"w{k}a{k} vs xnor", "{:.2f}x")]
    extra = {"threads": threads, "repeats": repeats, "quick": args.quick, "popcount_instructions": asm,
             "note": "ratios = median float32 (or xnor) time / median bit-serial time from one interleaved run; "
                     "bit-serial includes packing the uint8 activation codes, xnor packing the float activations"}
    write_report("bitserial" + ("_quick" if args.quick else ""), rows, cols, extra=extra,
                 title=f"Bit-serial conv vs float and XNOR, ResNet-20 layers ({threads} threads; GEMM asm: "
                       f"{asm['vpopcntq']} vpopcntq, {asm['vpshufb']} vpshufb, {asm['vpsadbw']} vpsadbw)")


if __name__ == "__main__":
    main()
