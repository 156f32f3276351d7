"""The runtime's pruned convolutions: the kept weights of an exported ``PrunedConv2d``, on the
kept-weight tiles (``tinycomp_kernels.sparse_tiles``) or ``sparse_conv2d``'s direct path.

Stored (``tinycomp.export_sparse``): the weight W' (BatchNorm folded) as CSR over (O, C·KH·KW), the
summary's index format: indptr int32 (O + 1) and indices int32 (nnz) in the int32 entry, and

    sparse                values float32 (nnz)                         y = conv2d(x, W') + b'
    sparse_binary_weight  values as sign bits (nnz), scale float32 (O)  W'[o, k] = scale[o]·sign, then the same

The signs are expanded to float values at load (the kernels multiply float32). A CSR is checked
here before any kernel sees it: indptr from 0, non-decreasing, ending at nnz; indices in
[0, C·KH·KW). ``path`` names the route for the input size of the model's shape walk (``input_hw``).

Path rule (deterministic, from the shapes and the batch size; ``KeptWeights.route``), the same for
pruned and SAL layers:
- a 1×1 kernel (the projection shortcuts) runs the dense conv of the kept weights, expanded at load
  (``Conv2dPlan``, path "conv2d_forward[dense]"): as fast as the sparse paths or faster at 90-95 %;
- a stride-1 "same" layer on planes of at least ``sparse_direct.DIRECT_MIN_PLANE`` pixels with very
  few kept weights per output channel (16 channels at 32x32 from about 96.5 %), with more than
  SMALL_BATCH images, runs ``sparse_conv2d``'s direct path ("sparse_conv2d[direct]";
  ``sparse_direct.direct_beats_tiles``, which the training kernels' "same" convolutions follow too);
- every other layer, any stride, runs ``tinycomp_kernels.sparse_tiles`` ("sparse_tiles": a register
  tile per 8x8 output block, a kept weight per step).
Timed per layer on ResNet-20's shapes at 90 and 95 % (quiet Zen 3, 2 threads, 2026-12-01, side by
side in one script): the tiles took 0.24-0.44x the dense conv's time on the 3x3 stride-1 layers of
32 and 64 channels at batch 64 and 0.5-0.56x on the stride-2 ones (where the im2col sparse path
took 1.7-1.8x the dense conv's), 0.36-0.72x at batch 1; the implicit path 1.8-2.0x the tiles'
time; the direct path 0.46-0.72x the tiles' on 16 channels at 32x32 at batch 64 but 2.5-2.9x at
batch 1, and 1.2x on 32 channels at 16x16 at 95 % (where direct_pays holds too). Re-timed on
2026-12-03 (Zen 3), the tiles had overtaken it below 96 % (``direct_beats_tiles``). On the 1×1
stride-2 shortcuts the tiles took 1.0-1.7x the dense conv's time. The dense weights of the 1×1
layers are expanded at load; the file stays sparse.
"""
import numpy as np
from tinycomp_kernels.checks import non_decreasing
from tinycomp_kernels.epilogue import epilogue
from tinycomp_kernels.sparse_conv import sparse_conv2d
from tinycomp_kernels.sparse_direct import SMALL_BATCH, direct_beats_tiles, direct_fits
from tinycomp_kernels.sparse_tiles import SparseTilesPlan

from .layers import Conv

SPARSE_KINDS = ("sparse", "sparse_binary_weight")


class KeptWeights(Conv):
    """Base of the layers that store only kept weights (pruned, SAL): header geometry, the kept values
    (float, or signs times a per-filter scale) and the bias; ``input_hw`` is set by the model's walk."""

    kinds = ()
    input_hw = None

    def _geometry(self, reader, entry, where):
        self.name = reader.field(entry, "name", str, where)
        self.kind = reader.field(entry, "kind", str, where)
        if self.kind not in self.kinds:
            raise reader.error(f"{where}.kind", f"{self.kind!r} is not one of {', '.join(self.kinds)}")
        self.shape = reader.ints(entry, "shape", 4, 1, where)  # (O, C, KH, KW)
        self.stride = reader.ints(entry, "stride", 2, 1, where)
        self.padding = reader.ints(entry, "padding", 2, 0, where)
        if self.stride[0] != self.stride[1] or self.padding[0] != self.padding[1]:
            raise reader.error(where, f"stride {list(self.stride)} and padding {list(self.padding)}: the sparse "
                               "kernels take one value for both axes")
        self.where = where
        self.nnz = reader.field(entry, "nnz", int, where)
        if self.nnz < 0:
            raise reader.error(f"{where}.nnz", f"{self.nnz} is negative")
        self.bias = reader.float_tensor(reader.field(entry, "bias", dict, where), (self.shape[0],), f"{where}.bias")

    def _values(self, reader, entry, rows, where):
        """float32 (nnz,) kept values, ``rows`` (nnz,) the output channel of each: a binary kind's are its
        signs times ``scale[rows]``. Sets ``scale`` (None for the float kinds)."""
        self.scale = None
        if not self.kind.endswith("binary_weight"):
            return reader.float_tensor(reader.field(entry, "values", dict, where), (self.nnz,), f"{where}.values")
        self.scale = reader.float_tensor(reader.field(entry, "scale", dict, where), (self.shape[0],), f"{where}.scale")
        if not self.nnz:
            return np.zeros(0, np.float32)
        signs = reader.sign_tensor(reader.field(entry, "values", dict, where), (self.nnz,), f"{where}.values")
        return signs * self.scale[rows]  # ±1 · scale[o], float32

    def _keep(self, dense, rows, columns, values):
        """The layer's kernel forms: the kept entries (output channel ``rows``, CSR column ``columns`` =
        c·KH·KW + kh·KW + kw, ``values``; in CSR order) for the tiles and the direct path, and the dense
        weight (O, C, KH, KW) ``dense`` where the rule runs the dense conv."""
        O, C, KH, KW = self.shape
        self.indptr = np.zeros(O + 1, np.int64)
        np.cumsum(np.bincount(rows, minlength=O), out=self.indptr[1:])
        self.values = np.ascontiguousarray(values, dtype=np.float32)
        self.csr_indices = np.asarray(columns).astype(np.int32)
        self.pointwise = KH * KW == 1
        self.same = direct_fits(self.shape, self.stride[0], self.padding[0], 1)
        self.weight = dense if self.pointwise else None
        self._plans = {}  # input (H, W) -> Conv2dPlan (1x1 layers) or SparseTilesPlan

    def route(self, hw, batch):
        """"dense", "direct" or "tiles" for ``batch`` images of ``hw`` (the module docstring's rule)."""
        if self.pointwise:
            return "dense"
        if self.same and direct_beats_tiles(self.nnz, self.shape[0], batch, hw[0] * hw[1]):
            return "direct"
        return "tiles"

    @property
    def path(self):
        if self.pointwise:
            return "conv2d_forward[dense]"
        if self.input_hw is not None and self.route(self.input_hw, SMALL_BATCH + 1) == "direct":
            return f"sparse_conv2d[direct] (sparse_tiles up to {SMALL_BATCH} images)"
        return "sparse_tiles"

    def __call__(self, x, residual=None, relu=False):
        """The layer's output on its route; then the bias, ``residual`` and ReLU in one epilogue pass,
        as ``Conv``'s."""
        route = self.route(x.shape[2:], x.shape[0])
        if route == "direct":
            y = sparse_conv2d(x, self.indptr, self.csr_indices, self.values, self.shape, self.stride[0],
                              self.padding[0])
        else:
            y = self.plan(x)(x)
        return epilogue(np.ascontiguousarray(y), bias=self.bias, residual=residual, relu=relu)

    def _make_plan(self, hw):
        if self.pointwise:
            return super()._make_plan(hw)
        return SparseTilesPlan.from_csr(self.indptr, self.csr_indices, self.values, self.shape, hw, self.stride,
                                        self.padding)


class SparseConv(KeptWeights):
    """A pruned convolution (kinds "sparse", "sparse_binary_weight"); ``x`` (N, C, H, W) float32."""

    kinds = SPARSE_KINDS

    def __init__(self, reader, entry, where):
        self._geometry(reader, entry, where)
        O, C, KH, KW = self.shape
        indptr = reader.int32_tensor(reader.field(entry, "indptr", dict, where), (O + 1,), f"{where}.indptr")
        indices = reader.int32_tensor(reader.field(entry, "indices", dict, where), (self.nnz,), f"{where}.indices")
        check_csr_entry(reader, indptr, indices, self.nnz, C * KH * KW, where)
        rows = np.repeat(np.arange(O), np.diff(indptr.astype(np.int64)))  # (nnz,) output channel of each
        values = self._values(reader, entry, rows, where)
        dense = _dense(self.shape, rows, indices, values) if KH * KW == 1 else None  # the 1x1 route's weight
        self._keep(dense, rows, indices, values)


def _dense(shape, rows, cols, values):
    """The dense (O, C, KH, KW) float32 weight of a CSR over (O, C·KH·KW) (repeated entries add up, as
    in the CSR product)."""
    w = np.zeros((shape[0], int(np.prod(shape[1:]))), np.float32)
    np.add.at(w, (rows, cols), values)
    return w.reshape(shape)


def check_csr_entry(reader, indptr, indices, nnz, n_cols, where):
    """Refuse, naming the entry, a CSR that the kernels would read out of bounds."""
    if indptr[0] != 0 or indptr[-1] != nnz:
        raise reader.error(f"{where}.indptr", f"runs from {indptr[0]} to {indptr[-1]}, expected 0 to nnz = {nnz}")
    if not non_decreasing(indptr):
        raise reader.error(f"{where}.indptr", "is not non-decreasing (not a CSR row pointer)")
    if nnz and (indices.min() < 0 or indices.max() >= n_cols):
        raise reader.error(f"{where}.indices", f"out of range [0, {n_cols}): min {indices.min()}, max {indices.max()}")
