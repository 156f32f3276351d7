"""The runtime's SAL layers: a rounded Shift Attention Layer (each (o, c) pair keeps one tap of the
k×k kernel, or none), stored as the summary counts it and expanded at load to the kernels' forms.

Stored (``tinycomp.export_sparse``), BatchNorm folded, pairs in (o, c) row-major order:
    taps    unsigned b-bit codes, b = ceil(log2 k²) (4 for 3×3), in the bits entry as bit planes
            (``Reader.code_tensor``); code k² marks a pruned pair. One of three index forms:
              "codes"   a code per (o, c) pair                        O·C·b bits
              "mask"    mask: a bit per pair (1 = kept, as signs), then a code per kept pair
                                                                      O·C + nnz·b bits
              "shared"  one code per input channel, the same for every filter (``--sal-shared``)   C·b bits
    sal                 values float32 (nnz), the kept weights
    sal_binary_weight   values as sign bits (nnz) and scale float32 (O): a kept weight is scale[o]·sign
    bias float32 (O); "nnz" the kept pairs.

At load the layer becomes ``sal_pack``'s CSR over [M_0 | ... | M_{k²-1}] for
``tinycomp_kernels.sal.sal_conv2d`` (register tiles of 8x8 output pixels of one channel, a kept pair
per step), which runs every stride-1 layer with padding k // 2 at every batch size. Against the
other paths on ResNet-20's SAL layers (one tap per pair, quiet Zen 3, 2 threads, 2026-12-01,
``benchmarks/bench_sal.py`` layers timed side by side): at batch 64 it took 0.55-0.6x the dense
conv's time on 16 channels at 32x32, 0.4-0.5x on 32 at 16x16 and 0.37-0.38x on 64 at 8x8, and
0.6-0.7x and 0.5-0.6x the sparse conv's (implicit) time on the last two; only the sparse direct
path was faster, by 5-12 %, on the 16-channel layers at batch 64, which one path per geometry gives
up for a simpler rule. At 1-4 images it took 0.45-0.6x the dense conv's time, so SAL layers keep no
small-batch rule. A layer of another geometry (ResNet's stride-2 convs) runs the dense conv of the
one-hot weight (faster than ``sparse_conv2d``'s im2col path, as for pruned layers).
"""
import numpy as np
from tinycomp_kernels.sal import sal_conv2d, sal_pack

from .sparse import KeptWeights

SAL_KINDS = ("sal", "sal_binary_weight")
INDEX_FORMS = ("codes", "mask", "shared")


def tap_bits(k):
    """Bits of a tap code of a k×k kernel: ceil(log2 k²), as the summary counts (k odd: k² is no power
    of 2, so the code k² for a pruned pair fits too)."""
    return (k * k - 1).bit_length()


class SalConv(KeptWeights):
    """A rounded SAL convolution (kinds "sal", "sal_binary_weight"); ``x`` (N, C, H, W) float32."""

    kinds = SAL_KINDS

    def __init__(self, reader, entry, where):
        self._geometry(reader, entry, where)
        O, C, k, kw = self.shape
        if k != kw or k % 2 == 0 or k < 3:
            raise reader.error(f"{where}.shape", f"{list(self.shape)}: a SAL kernel is square and odd, at least 3x3")
        self.tap_index = _taps(reader, entry, self.shape, where)  # (O, C), -1 = pruned
        rows, chans = np.nonzero(self.tap_index >= 0)  # (o, c) row-major, the stored order
        if rows.size != self.nnz:
            raise reader.error(f"{where}.taps", f"keeps {rows.size} pairs, but nnz is {self.nnz}")
        taps = self.tap_index[rows, chans]
        dense = np.zeros(self.shape, np.float32)  # (O, C, k, k), the one-hot weight
        dense[rows, chans, taps // k, taps % k] = self._values(reader, entry, rows, where)
        self.packed = sal_pack(dense, self.tap_index)
        self._keep_dense(dense)  # stride 2: the dense conv of the one-hot weight

    small_batch = 0  # sal_conv2d beats the dense conv at every batch size (module docstring)

    @property
    def path(self):
        return "conv2d_forward[dense]" if self.always_dense else "sal_conv2d"

    def __call__(self, x, residual=None, relu=False):
        return self._output(x, lambda v: sal_conv2d(v, self.packed), residual, relu)


def _taps(reader, entry, shape, where):
    """The (O, C) int64 tap of every pair, -1 for a pruned one, from the entry's index form."""
    O, C, k, _ = shape
    form = reader.field(entry, "index", str, where)
    if form not in INDEX_FORMS:
        raise reader.error(f"{where}.index", f"{form!r} is not one of {', '.join(INDEX_FORMS)}")
    if form == "mask":
        kept = reader.sign_tensor(reader.field(entry, "mask", dict, where), (O, C), f"{where}.mask") > 0
        taps = np.full((O, C), -1, np.int64)
        n = int(kept.sum())
        if n:
            taps[kept] = _codes(reader, entry, n, k, where, pruned_code=False)
        return taps
    n = O * C if form == "codes" else C
    codes = _codes(reader, entry, n, k, where, pruned_code=True)
    taps = np.where(codes == k * k, -1, codes)
    return taps.reshape(O, C) if form == "codes" else np.broadcast_to(taps, (O, C)).copy()


def _codes(reader, entry, n, k, where, pruned_code):
    """``n`` tap codes in [0, k²) (or k², pruned, when ``pruned_code``), refused when out of range."""
    codes, planes, signed = reader.code_tensor(reader.field(entry, "taps", dict, where), (n,), f"{where}.taps")
    if planes != tap_bits(k) or signed:
        raise reader.error(f"{where}.taps", f"{planes}-bit {'signed' if signed else 'unsigned'} codes, expected "
                           f"unsigned {tap_bits(k)}-bit tap codes for a {k}x{k} kernel")
    top = k * k if pruned_code else k * k - 1
    if codes.min() < 0 or codes.max() > top:
        raise reader.error(f"{where}.taps", f"codes out of range [0, {top}]: min {codes.min()}, max {codes.max()}")
    return codes
