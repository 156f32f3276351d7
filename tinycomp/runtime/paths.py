"""Per-layer path choice: the kernel a runtime layer runs, decided once at load from the layer's shape
and bit widths (never by timing), so a file runs the same way on every load and every machine.

Binary-weight layers (bc, bwn): ``binary_weight_conv2d`` on the packed signs, or ``conv2d_forward`` on
the ±1·scale weights unpacked at load (the same products, summed in float). Rule: the binary kernel
when the reduction C·KH·KW is at least ``BINARY_WEIGHT_MIN_REDUCTION`` (1152: C >= 128 for a 3x3
conv), the float conv below. Evidence, benchmarks/results/binary_weight_conv.md (float time /
binary-weight time, 3x3 convs, AMD EPYC, 2 threads):

    C·KH·KW     layers                          batch 64      batch 1
    144..576    ResNet-20, all three stages     0.22-0.74x    0.68-1.00x    -> float conv
    1152..4608  ResNet-18 conv3..conv5          1.11-1.43x    0.87-1.20x    -> binary-weight kernel

Every measured layer takes its faster path at batch 64; at batch 1 two ResNet-18 layers (C = 256 at
14x14, C = 128 at stride 2) measured 0.87-0.89x on the binary path. 1x1 projections (C·KH·KW = C)
were not measured and follow the reduction length.

k-bit layers (w<k>a<m>): ``bitserial_conv2d`` on weight and activation bit planes, or
``conv2d_forward`` on the activation codes in float32 with the weights dequantized and scaled at load.
Provisional rule, to be tuned on a quiet machine (benchmarks/bench_bitserial.py): bit-serial wherever
it is exact, i.e. its int32 accumulator bound C·KH·KW · max|weight code| · max activation code < 2^31
holds, within the limits of the ``BITSERIAL`` table (set so that today they never bind).
"""
from tinycomp_kernels.bitserial import code_range

BINARY_WEIGHT_MIN_REDUCTION = 1152

# Retune here: bit-serial only up to max_plane_pairs (weight bits x activation bits; w2a2 = 4,
# w4a4 = 16) and from min_reduction (C·KH·KW) up; the float conv elsewhere.
BITSERIAL = {"max_plane_pairs": 64, "min_reduction": 1}


def binary_weight_path(shape):
    """"binary_weight_conv2d" or "conv2d_forward" for a binary-weight conv of OIHW ``shape``."""
    _, C, KH, KW = shape
    return "binary_weight_conv2d" if C * KH * KW >= BINARY_WEIGHT_MIN_REDUCTION else "conv2d_forward"


def bitserial_exact(shape, weight_bits, weight_signed, input_bits):
    """Whether ``bitserial_conv2d``'s int32 accumulators hold every sum of this layer exactly."""
    _, C, KH, KW = shape
    lo, hi = code_range(weight_bits, weight_signed)
    return C * KH * KW * max(-lo, hi) * (2 ** input_bits - 1) < 2 ** 31


def kbit_path(shape, weight_bits, weight_signed, input_bits):
    """"bitserial_conv2d" or "conv2d_forward" for a k-bit conv of OIHW ``shape`` whose weight codes
    take ``weight_bits`` planes (two's complement if ``weight_signed``) and inputs ``input_bits``."""
    _, C, KH, KW = shape
    fits = (weight_bits * input_bits <= BITSERIAL["max_plane_pairs"] and C * KH * KW >= BITSERIAL["min_reduction"])
    if fits and bitserial_exact(shape, weight_bits, weight_signed, input_bits):
        return "bitserial_conv2d"
    return "conv2d_forward"
