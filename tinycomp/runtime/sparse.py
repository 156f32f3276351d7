"""The runtime's pruned convolutions: the kept weights of an exported ``PrunedConv2d`` as CSR, on
``tinycomp_kernels.sparse_conv.sparse_conv2d``.

Stored (``tinycomp.export_sparse``): the weight W' (BatchNorm folded) as CSR over (O, C·KH·KW), the
summary's index format: indptr int32 (O + 1) and indices int32 (nnz) in the int32 entry, and

    sparse                values float32 (nnz)                         y = sparse_conv2d(x, W') + b'
    sparse_binary_weight  values as sign bits (nnz), scale float32 (O)  W'[o, k] = scale[o]·sign, then the same

The signs are expanded to float values at load (``sparse_conv2d`` multiplies float32). A CSR is
checked here before any kernel sees it: indptr from 0, non-decreasing, ending at nnz; indices in
[0, C·KH·KW). ``sparse_conv2d`` picks its own algorithm from the shapes
(``sparse_conv2d_algorithm``: "direct" or "implicit" for stride 1 and "same" padding, "im2col"
otherwise); ``path`` names it for the input size of the model's shape walk (``input_hw``).

Where that algorithm would be "im2col" (strided or not "same"-padded layers: ResNet's stride-2 convs
and 1×1 projection shortcuts) the layer runs the dense conv of the same weight, expanded at load
(``Conv2dPlan``, path "conv2d_forward[dense]"): it was faster at every sparsity timed, 1.4-3.3x at
batch 64 and 3-5x at batch 1 for 90 % and 95 % (Zen 3, 2026-12-01, ``benchmarks/README.md``), since
the im2col path forms the whole patch matrix whatever the sparsity. Every layer also runs the dense
conv for batches of at most SMALL_BATCH images: at 1-4 images the sparse direct and implicit paths
took 1.1-4x the dense conv's time at 90 and 95 %, from 8 images on they win (up to 1.8x at 16-32);
per call, from the input's shape, so the choice stays deterministic. The file stays sparse; the
dense weights are expanded at load (ResNet-20: about 1 MB).
"""
import numpy as np
from tinycomp_kernels.checks import non_decreasing
from tinycomp_kernels.epilogue import epilogue
from tinycomp_kernels.sparse_conv import sparse_conv2d, sparse_conv2d_algorithm
from tinycomp_kernels.sparse_direct import direct_fits

from .layers import Conv

SPARSE_KINDS = ("sparse", "sparse_binary_weight")
SMALL_BATCH = 4  # images; at most this many run the dense conv (module docstring; not SAL's: runtime/sal.py)


class KeptWeights(Conv):
    """Base of the layers that store only kept weights (pruned, SAL): header geometry, the kept values
    (float, or signs times a per-filter scale) and the bias; ``input_hw`` is set by the model's walk."""

    kinds = ()
    input_hw = None
    small_batch = SMALL_BATCH  # batches of at most this many images run the dense conv

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

    def _keep_dense(self, dense):
        """The dense weight (O, C, KH, KW) ``dense`` for the dense conv, which runs where the sparse path
        would be im2col, and for small batches (module docstring)."""
        self._plans = {}
        self.weight = dense
        self.always_dense = not direct_fits(self.shape, self.stride[0], self.padding[0], 1)

    def _output(self, x, sparse, residual, relu):
        """The layer's output: the dense conv (``_keep_dense``) or ``sparse(x)``; then the bias,
        ``residual`` and ReLU in one epilogue pass, as ``Conv``'s."""
        y = self.plan(x)(x) if self.always_dense or x.shape[0] <= self.small_batch else sparse(x)
        return epilogue(np.ascontiguousarray(y), bias=self.bias, residual=residual, relu=relu)

    def _sparse_algorithm(self):
        """``sparse_conv2d``'s algorithm for an input of ``input_hw`` (None before the model's walk)."""
        if self.input_hw is None:
            return None
        x_shape = (1, self.shape[1]) + tuple(self.input_hw)
        return sparse_conv2d_algorithm(x_shape, self.shape, self.nnz, self.stride[0], self.padding[0])


class SparseConv(KeptWeights):
    """A pruned convolution (kinds "sparse", "sparse_binary_weight"); ``x`` (N, C, H, W) float32."""

    kinds = SPARSE_KINDS

    def __init__(self, reader, entry, where):
        self._geometry(reader, entry, where)
        O, C, KH, KW = self.shape
        indptr = reader.int32_tensor(reader.field(entry, "indptr", dict, where), (O + 1,), f"{where}.indptr")
        indices = reader.int32_tensor(reader.field(entry, "indices", dict, where), (self.nnz,), f"{where}.indices")
        check_csr_entry(reader, indptr, indices, self.nnz, C * KH * KW, where)
        self.indptr = indptr.astype(np.int64)  # the kernels' index type
        self.indices = indices
        rows = np.repeat(np.arange(O), np.diff(self.indptr))  # (nnz,) output channel of each kept weight
        self.values = np.ascontiguousarray(self._values(reader, entry, rows, where))
        self._keep_dense(_dense(self.shape, rows, indices, self.values))

    @property
    def path(self):
        if self.always_dense:
            return "conv2d_forward[dense]"
        algorithm = self._sparse_algorithm()
        return "sparse_conv2d" if algorithm is None else f"sparse_conv2d[{algorithm}]"

    def __call__(self, x, residual=None, relu=False):
        return self._output(x, lambda v: sparse_conv2d(v, self.indptr, self.indices, self.values, self.shape,
                                                       self.stride[0], self.padding[0]), residual, relu)


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
