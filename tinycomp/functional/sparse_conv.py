"""Pruned 2-D convolution on the sparse (CSR) kernels, for training once a layer's mask is fixed.

    x (N, C, H, W) float32, weight (O, C, KH, KW) float32 (the dense latent weight), mask (O, C, KH, KW)
    uint8 or bool (1 = kept), no bias, groups 1, dilation 1, the same stride and padding on both axes:
    y  = conv2d(x, weight ⊙ mask)                          (N, O, OH, OW)
    dx = conv2d's adjoint of dout with weight ⊙ mask
    dw = mask ⊙ (conv2d's weight gradient), computed at the kept positions only (cost ∝ nnz, never a
         dense gradient masked afterwards); returned dense-shaped, 0 at the pruned positions
    no gradient for the mask.

The forward builds the CSR of weight ⊙ mask over (O, C*KH*KW) on every call (the mask decides which
slots exist, so a kept weight that is exactly 0 keeps its gradient); nothing mutable is cached.
Kernels: ``tinycomp_kernels.sparse_train`` (stride-1 "same" layers and strided ones over their stride
phases without any patch matrix, the patch-matrix path for other geometries).
``sparse_training_pays`` says, from the shapes and nnz alone, when this op is faster than the dense
``conv2d(x, weight * mask)`` (``benchmarks/bench_pruned_step.py``, ``benchmarks/README.md``).
"""
import numpy as np
from tinycomp_kernels.csr import csr_from_dense
from tinycomp_kernels.im2col import as_pair, conv_output_size
from tinycomp_kernels.sparse_conv import sparse_conv2d as sparse_conv2d_kernel
from tinycomp_kernels.sparse_train import (dense_weight_grad, sparse_conv2d_input_grad, sparse_conv2d_train,
                                           sparse_conv2d_weight_grad, sparse_train_algorithm)

from ..autograd import Function, is_grad_enabled
from ..tensor import Tensor
from ._util import check_float, check_size

# sparse_training_pays: the largest kept fraction nnz / (O*C*KH*KW) at which the sparse op is taken.
# Measured per layer (forward + dx + dw, batch 128, 2 threads, benchmarks/README.md): on the "same" and
# "phases" paths every ResNet-20 layer was 1.16-2.1x faster than dense at 30 % sparsity, the 64-channel
# 8x8 one only 1.07x at 20 % and 0.82x at 10 %; the patch-matrix path (ResNet-20's stride-2 layers
# before the phases) paid from 50 % (1.17-1.18x), not at 30 % (0.95-1.03x).
PAYS_MAX_DENSITY_SAME = 0.7    # stride-1 "same" and strided-over-phases layers: no patch matrix
PAYS_MAX_DENSITY_OTHER = 0.5   # other geometries (patch-matrix path)


class SparseConv2d(Function):
    @staticmethod
    def forward(ctx, x, weight, mask, stride=1, padding=0):
        o = weight.shape[0]
        keep = mask.reshape(o, -1).astype(bool, copy=False)  # (O, C*KH*KW)
        indptr, indices, values = csr_from_dense(weight.reshape(o, -1), keep)  # values: weight at the kept slots
        x = np.ascontiguousarray(x)
        ctx.geometry = (weight.shape, stride, padding)
        ctx.csr = (indptr, indices, values)
        if not (is_grad_enabled() and ctx.needs_input_grad[1]) \
                and sparse_train_algorithm(x.shape, weight.shape, stride, padding) == "im2col":
            # no weight gradient to come (evaluation, or a frozen weight): the inference path, whose
            # patch matrix is formed in L3-sized chunks and not kept
            ctx.save_for_backward(x, None)
            return sparse_conv2d_kernel(x, indptr, indices, values, weight.shape, stride, padding)
        y, saved = sparse_conv2d_train(x, indptr, indices, values, weight.shape, stride, padding)
        ctx.save_for_backward(x, saved)  # saved: x, its stride phases or its patch matrix (for dw)
        return y

    @staticmethod
    def backward(ctx, dout):
        x, saved = ctx.saved
        w_shape, stride, padding = ctx.geometry
        indptr, indices, values = ctx.csr
        need_x, need_w, _ = ctx.needs_input_grad
        dout = np.ascontiguousarray(dout, dtype=np.float32)
        dx = dw = None
        if need_x:
            dx = sparse_conv2d_input_grad(dout, indptr, indices, values, x.shape, w_shape, stride, padding)
        if need_w:
            dvalues = sparse_conv2d_weight_grad(dout, x, indptr, indices, w_shape, stride, padding, saved=saved)
            dw = dense_weight_grad(dvalues, indptr, indices, w_shape)  # (O, C, KH, KW), 0 where pruned
        return dx, dw, None


def _square(name, value):
    pair = as_pair(value, name, "sparse_conv2d", 1 if name == "stride" else 0)
    if pair[0] != pair[1]:
        raise ValueError(f"sparse_conv2d: {name} must be the same on both axes, got {value!r}")
    return pair[0]


def sparse_conv2d(x, weight, mask, stride=1, padding=0):
    """conv2d(x, weight * mask) on the sparse kernels (module docstring): x and weight float32 Tensors,
    mask a uint8 or bool array (or Tensor) of the weight's shape; stride and padding ints or equal pairs."""
    check_float("sparse_conv2d", x)
    check_float("sparse_conv2d", weight, "weight")
    mask = mask.data if isinstance(mask, Tensor) else mask
    shapes = f"input {x.shape}, weight {weight.shape}"
    if x.dtype != np.float32 or weight.dtype != np.float32:
        raise TypeError(f"sparse_conv2d: input and weight must be float32 (the sparse kernels' dtype), got "
                        f"{x.dtype} and {weight.dtype}")
    if x.ndim != 4 or weight.ndim != 4:
        raise ValueError(f"sparse_conv2d: input must be 4-D (N, C, H, W) and weight 4-D (O, C, KH, KW); {shapes}")
    if x.shape[1] != weight.shape[1]:
        raise ValueError(f"sparse_conv2d: input has {x.shape[1]} channels but weight expects {weight.shape[1]}; "
                         f"{shapes}")
    if not isinstance(mask, np.ndarray) or mask.shape != weight.shape or mask.dtype not in (np.uint8, np.bool_):
        raise ValueError(f"sparse_conv2d: mask must be a uint8 or bool array of the weight's shape {weight.shape}, "
                         f"got {getattr(mask, 'dtype', type(mask).__name__)} {getattr(mask, 'shape', '')}")
    s, p = _square("stride", stride), _square("padding", padding)
    oh, ow = conv_output_size(x.shape[2], x.shape[3], weight.shape[2], weight.shape[3], s, p)
    if oh < 1 or ow < 1:
        raise ValueError(f"sparse_conv2d: kernel {weight.shape[2]}x{weight.shape[3]} (padding {p}) is larger "
                         f"than the padded input; {shapes}")
    check_size("sparse_conv2d", "an output", (x.shape[0], weight.shape[0], oh, ow),
               f"padding {p} (stride {s}) on {shapes}")
    return SparseConv2d.apply(x, weight, mask, stride=s, padding=p)


def sparse_training_pays(x_shape, weight_shape, nnz, stride=1, padding=0, *, dilation=1, groups=1, dtype=np.float32):
    """True when ``sparse_conv2d`` is expected to train faster (forward + both gradients) than the dense
    ``conv2d(x, weight * mask)``: from the shapes and the number of kept weights only, never by timing,
    so a run is reproducible. The rule (fitted on ``benchmarks/bench_pruned_step.py --layers``, see
    benchmarks/README.md): a kept fraction nnz / (O*C*KH*KW) of at most PAYS_MAX_DENSITY_SAME for the
    layers the kernels compute without a patch matrix (stride-1 "same" and strided ones over their
    stride phases), PAYS_MAX_DENSITY_OTHER otherwise; never for what ``sparse_conv2d`` does not compute
    (groups, dilation, unequal stride or padding pairs, a dtype other than float32), nor for a 1x1
    kernel (a dense 1x1 conv is one matmul). ``stride`` and ``padding``: ints or pairs."""
    try:
        stride, padding = _square("stride", stride), _square("padding", padding)
    except (TypeError, ValueError):
        return False
    if len(x_shape) != 4 or len(weight_shape) != 4 or dilation not in (1, (1, 1)) or groups != 1 \
            or np.dtype(dtype) != np.float32:
        return False
    o, c, kh, kw = (int(v) for v in weight_shape)
    if x_shape[1] != c or kh * kw == 1 or o * c == 0:
        return False
    oh, ow = conv_output_size(x_shape[2], x_shape[3], kh, kw, stride, padding)
    if oh < 1 or ow < 1:
        return False
    fast = sparse_train_algorithm(x_shape, weight_shape, stride, padding) != "im2col"
    return nnz <= (PAYS_MAX_DENSITY_SAME if fast else PAYS_MAX_DENSITY_OTHER) * o * c * kh * kw
