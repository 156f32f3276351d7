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

At load the kept pairs become the layer's kept entries ((o, c) row-major, each at its tap), run by
the pruned layers' rule (``runtime/sparse.py``): ``tinycomp_kernels.sparse_tiles`` (the kernel of
``sal_conv2d``: a register tile per 8x8 output block, a kept pair per step) at any stride, or
``sparse_conv2d``'s direct path on the stride-1 32x32 layers where ``sparse_direct.direct_pays``
holds and the batch has more than ``sparse.SMALL_BATCH`` images (ResNet-20's 16-channel layers).
``benchmarks/results/sal.md`` (quiet Zen 3, 2 threads, 2026-12-01, one tap per pair, and half the
pairs pruned): ``sal_conv2d`` took 0.3-0.65x the dense conv's time on every layer and batch; the
direct path took 0.6-0.77x of ``sal_conv2d``'s on 16 channels at 32x32 at batch 64 (the only layer
where direct_pays holds), 1.5-1.6x at batch 1, and the implicit path 1.03-2.4x everywhere else.
"""
import numpy as np

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
        tap_index = _taps(reader, entry, self.shape, where)  # (O, C), -1 = pruned
        rows, chans = np.nonzero(tap_index >= 0)  # (o, c) row-major, the stored order
        if rows.size != self.nnz:
            raise reader.error(f"{where}.taps", f"keeps {rows.size} pairs, but nnz is {self.nnz}")
        taps = tap_index[rows, chans]
        values = self._values(reader, entry, rows, where)
        self._keep(None, rows, chans * (k * k) + taps, values)  # never pointwise: k >= 3


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
