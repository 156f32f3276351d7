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
``tinycomp_kernels.sal.sal_conv2d`` (through a ``SalPlan`` per input size: register tiles of 8x8
output pixels of one channel, a kept pair per step) and the CSR of the one-hot weight over
(O, C·k·k) for ``sparse_conv2d``. Path rule (deterministic, from the shapes): a stride-1 layer with
padding k // 2 runs ``sparse_conv2d``'s direct path where ``sparse_direct.direct_pays`` says so and
the batch has more than ``sparse.SMALL_BATCH`` images, else ``sal_conv2d``; a layer of another
geometry (ResNet's stride-2 convs) runs the dense conv of the one-hot weight (faster than
``sparse_conv2d``'s im2col path, as for pruned layers). ``benchmarks/results/sal.md`` (quiet Zen 3, 2
threads, 2026-12-01, one tap per pair, and half the pairs pruned): ``sal_conv2d`` took 0.3-0.65x the
dense conv's time on every layer and batch; the direct path took 0.6-0.77x of ``sal_conv2d``'s on
16 channels at 32x32 at batch 64 (the only layer where direct_pays holds), 1.5-1.6x at batch 1, and
the implicit path 1.03-2.4x everywhere else.
"""
import numpy as np
from tinycomp_kernels.csr import csr_from_dense
from tinycomp_kernels.sal import SalPlan, sal_pack
from tinycomp_kernels.sparse_conv import sparse_conv2d
from tinycomp_kernels.sparse_direct import direct_fits, direct_pays

from .sparse import SMALL_BATCH, KeptWeights

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
        self._sal_plans = {}  # input (H, W) -> SalPlan
        onehot = np.arange(k * k) == self.tap_index[:, :, None]  # (O, C, k²): tap s at (s // k, s % k)
        self.csr = csr_from_dense(dense.reshape(O, C * k * k), mask=onehot.reshape(O, C * k * k))
        self.same = direct_fits(self.shape, self.stride[0], self.padding[0], 1)
        self._keep_dense(dense)  # stride 2: the dense conv of the one-hot weight

    small_batch = 0  # no dense conv for small batches: sal_conv2d is faster there (module docstring)

    def direct(self, hw, batch):
        """True where ``sparse_conv2d``'s direct path runs a batch of ``batch`` images of ``hw``."""
        return self.same and batch > SMALL_BATCH and direct_pays(self.nnz, self.shape[0], hw[0] * hw[1])

    @property
    def path(self):
        if self.always_dense:
            return "conv2d_forward[dense]"
        if self.input_hw is not None and self.direct(self.input_hw, SMALL_BATCH + 1):
            return f"sparse_conv2d[direct] (sal_conv2d up to {SMALL_BATCH} images)"
        return "sal_conv2d"

    def __call__(self, x, residual=None, relu=False):
        return self._output(x, self._sparse, residual, relu)

    def _sparse(self, x):
        if self.direct(x.shape[2:], x.shape[0]):
            return sparse_conv2d(x, *self.csr, self.shape, self.stride[0], self.padding[0])
        hw = x.shape[2:]
        if hw not in self._sal_plans:  # checked and offset once per input size, as Conv's plans
            self._sal_plans[hw] = SalPlan(self.packed, hw)
        return self._sal_plans[hw](x)


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
