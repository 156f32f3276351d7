"""Per-layer path choice: the kernel a runtime layer runs, decided once at load from the layer's shape,
bit widths and the CPU Numba compiles for (its LLVM name and vector features; never by timing), so a
file runs the same way on every load and on every machine of the same CPU.

Binary-weight layers (bc, bwn): ``binary_weight_conv2d`` on the packed signs, or ``conv2d_forward`` on
the ±1·scale weights unpacked at load (the same products, summed in float). Rule: the binary kernel
when the reduction C·KH·KW is at least ``BINARY_WEIGHT_MIN_REDUCTION`` (1152: C >= 128 for a 3x3
conv), the float conv below, on the CPUs where the kernel measured faster (AMD Zen 4); the float conv
everywhere on others. Evidence on Zen 4 (benchmarks/bench_binary_weight_conv.py, 2026-11-26: float time
/ binary-weight time, 3x3 convs, AMD EPYC, AVX-512, 2 threads; results/binary_weight_conv.md now holds
the Intel run of 2026-12-02):

    C·KH·KW     layers                          batch 64      batch 1
    144..576    ResNet-20, all three stages     0.22-0.74x    0.68-1.00x    -> float conv
    1152..4608  ResNet-18 conv3..conv5          1.11-1.43x    0.87-1.20x    -> binary-weight kernel

Every measured layer takes its faster path at batch 64; at batch 1 two ResNet-18 layers (C = 256 at
14x14, C = 128 at stride 2) measured 0.87-0.89x on the binary path. 1x1 projections (C·KH·KW = C)
were not measured and follow the reduction length.

k-bit layers (w<k>a<m>): ``bitserial_conv2d`` on weight and activation bit planes, or
``conv2d_forward`` on the activation codes in float32 with the weights dequantized and scaled at load.
Rule: bit-serial wherever it is exact, i.e. its int32 accumulator bound C·KH·KW · max|weight code| ·
max activation code < 2^31 holds, within the limits of the ``BITSERIAL`` table.

The tables depend on the CPU (the same on every load on one machine); ``RULES["kernels"]`` holds the
rules above, ``RULES["float"]`` the float conv for both kinds, and ``ACTIVE`` the host's:
- AVX2-only (AMD EPYC Zen 3, 2026-12-01, benchmarks/bench_runtime.py): the binary-weight kernel lost
  on every shape (BWN ResNet-18 at 0.74x the float runtime at batch 64 with it on conv3..conv5) and
  bit-serial without VPOPCNTDQ (a VPSHUFB nibble-table popcount) ran ResNet-20 w2a2 at 0.47x and w4a4
  at 0.29x: the float table;
- Intel AVX-512 with VPOPCNTDQ (LLVM "rocketlake", 2026-12-02, bench_binary_weight_conv.py and
  bench_runtime.py, quiet): the binary-weight kernel took 1.2-3.8x the float conv's time on every
  ResNet-18 and ResNet-20 shape (BWN ResNet-18 at 0.68x the float runtime), and bit-serial ResNet-20
  w2a2 / w4a4 ran at 0.31x / 0.20x the float runtime at batch 64 (per layer w2a2 0.77-1.73x, w4a4
  0.32-0.62x the float conv): the float table;
- AMD Zen 4/5 (AVX-512): the binary-weight rule above; bit-serial was not timed there and no CPU has
  yet run a k-bit network faster bit-serially, so it stays off.
To run the kernels anyway (to time them, as the tests do): ``paths.ACTIVE.update(paths.RULES["kernels"])``
before ``runtime.load``.
"""
from tinycomp_kernels.bitserial import code_range
from tinycomp_kernels.conv_tiles import COMPILE_CPU, COMPILE_FEATURES

RULES = {
    # binary_weight_min_reduction: the binary-weight kernel from this C·KH·KW up (None: never);
    # bitserial: up to max_plane_pairs (weight bits x activation bits; w2a2 = 4, w4a4 = 16) and from
    # bitserial_min_reduction up (None: never)
    "kernels": {"binary_weight_min_reduction": 1152, "max_plane_pairs": 64, "bitserial_min_reduction": 1},
    "float": {"binary_weight_min_reduction": None, "max_plane_pairs": 64, "bitserial_min_reduction": None},
}
BINARY_WEIGHT_CPUS = ("znver4", "znver5")  # LLVM names: measured on Zen 4; Zen 5 (same AVX-512 units) assumed


def host_table(cpu_name, features):
    """The rules for the CPU Numba compiles for: its LLVM name and feature set (module docstring)."""
    table = dict(RULES["float"])
    if cpu_name in BINARY_WEIGHT_CPUS and "+avx512f" in features:
        table["binary_weight_min_reduction"] = RULES["kernels"]["binary_weight_min_reduction"]
    return table


ACTIVE = host_table(COMPILE_CPU, COMPILE_FEATURES)


def binary_weight_path(shape):
    """"binary_weight_conv2d" or "conv2d_forward" for a binary-weight conv of OIHW ``shape``."""
    _, C, KH, KW = shape
    least = ACTIVE["binary_weight_min_reduction"]
    return "binary_weight_conv2d" if least is not None and C * KH * KW >= least else "conv2d_forward"


def bitserial_exact(shape, weight_bits, weight_signed, input_bits):
    """Whether ``bitserial_conv2d``'s int32 accumulators hold every sum of this layer exactly."""
    _, C, KH, KW = shape
    lo, hi = code_range(weight_bits, weight_signed)
    return C * KH * KW * max(-lo, hi) * (2 ** input_bits - 1) < 2 ** 31


def kbit_path(shape, weight_bits, weight_signed, input_bits):
    """"bitserial_conv2d" or "conv2d_forward" for a k-bit conv of OIHW ``shape`` whose weight codes
    take ``weight_bits`` planes (two's complement if ``weight_signed``) and inputs ``input_bits``."""
    _, C, KH, KW = shape
    least = ACTIVE["bitserial_min_reduction"]
    fits = (least is not None and weight_bits * input_bits <= ACTIVE["max_plane_pairs"] and C * KH * KW >= least)
    if fits and bitserial_exact(shape, weight_bits, weight_signed, input_bits):
        return "bitserial_conv2d"
    return "conv2d_forward"
