"""Ops that move elements without changing them: their backward moves the gradient back.

    reshape(x, shape):        dx = g reshaped to x's shape
    permute(x, axes):         dx = g permuted by the inverse permutation
    getitem(x, index):        dx = zeros with g scattered (added, for repeated indices) at index
    concatenate(xs, axis):    dx_i = the slice of g that came from x_i
    pad(x, pad_width, value): dx = g with the padding cut off
"""
import numpy as np
from tinycomp_kernels.checks import is_int

from ..autograd import Function
from ..tensor import Tensor
from ._dims import axis_or_dim
from ._util import check_size, check_tensor, int_tuple, normalize_axis


class Reshape(Function):
    @staticmethod
    def forward(ctx, x, shape):
        ctx.shape = x.shape
        return x.reshape(shape)

    @staticmethod
    def backward(ctx, dout):
        return dout.reshape(ctx.shape), None


class Permute(Function):
    @staticmethod
    def forward(ctx, x, axes):
        ctx.inverse = tuple(np.argsort(axes))
        return x.transpose(axes)

    @staticmethod
    def backward(ctx, dout):
        return dout.transpose(ctx.inverse), None


def _is_advanced(index):
    """Integer-array ("advanced") indexing, which may repeat elements: its backward must add, not assign.
    Inside an index tuple, NumPy reads a tuple as a sequence of indices, like a list."""
    parts = index if isinstance(index, tuple) else (index,)
    return any(isinstance(p, (list, tuple, np.ndarray)) for p in parts)


class GetItem(Function):
    @staticmethod
    def forward(ctx, x, index):
        ctx.shape, ctx.dtype, ctx.index = x.shape, x.dtype, index
        return np.asarray(x[index])

    @staticmethod
    def backward(ctx, dout):
        dx = np.zeros(ctx.shape, ctx.dtype)
        if _is_advanced(ctx.index):
            np.add.at(dx, ctx.index, dout)  # repeated indices must add up, which dx[i] += g does not
        else:
            dx[ctx.index] = dout
        return dx, None


class Concatenate(Function):
    @staticmethod
    def forward(ctx, *xs, axis):
        ctx.axis = axis
        ctx.bounds = np.cumsum([x.shape[axis] for x in xs])[:-1]
        return np.concatenate(xs, axis=axis)

    @staticmethod
    def backward(ctx, dout):
        return tuple(np.split(dout, ctx.bounds, axis=ctx.axis))


class Pad(Function):
    @staticmethod
    def forward(ctx, x, pad_width, value):
        ctx.crop = tuple(slice(lo, lo + n) for (lo, _), n in zip(pad_width, x.shape))
        return np.pad(x, pad_width, constant_values=value)

    @staticmethod
    def backward(ctx, dout):
        return np.ascontiguousarray(dout[ctx.crop]), None, None


def reshape(x, shape):
    check_tensor("reshape", x)
    shape = int_tuple("reshape", "shape", shape)
    known = int(np.prod([s for s in shape if s != -1]))
    free = shape.count(-1)
    ok = free <= 1 and all(s >= -1 for s in shape) and (
        known == x.data.size if free == 0 else known > 0 and x.data.size % known == 0)
    if not ok:
        raise ValueError(f"reshape: cannot reshape a tensor of shape {x.shape} ({x.data.size} elements) "
                         f"into {shape}")
    return Reshape.apply(x, shape)


def permute(x, axes):
    check_tensor("permute", x)
    axes = int_tuple("permute", "axes", axes)
    if any(not -x.ndim <= a < x.ndim for a in axes):
        raise ValueError(f"permute: axes {axes} out of range for a tensor with {x.ndim} dimensions")
    axes = tuple(a % x.ndim for a in axes)
    if sorted(axes) != list(range(x.ndim)):
        raise ValueError(f"permute: {axes} is not a permutation of the {x.ndim} axes of shape {x.shape}")
    return Permute.apply(x, axes)


def transpose(x, dim0, dim1):
    check_tensor("transpose", x)
    dim0, dim1 = int_tuple("transpose", "dims", (dim0, dim1))
    if not (-x.ndim <= dim0 < x.ndim and -x.ndim <= dim1 < x.ndim):
        raise ValueError(f"transpose: dims ({dim0}, {dim1}) out of range for a tensor with {x.ndim} dimensions")
    axes = list(range(x.ndim))
    axes[dim0], axes[dim1] = axes[dim1], axes[dim0]
    return permute(x, axes)


def getitem(x, index):
    check_tensor("getitem", x)
    if isinstance(index, Tensor):
        index = index.data
    return GetItem.apply(x, index)


def concatenate(tensors, axis=None, *, dim=None):
    """Join ``tensors`` along ``axis`` (PyTorch's ``dim``; 0 when neither is given)."""
    tensors = [check_tensor("concatenate", t, f"tensors[{i}]") for i, t in enumerate(tensors)]
    if not tensors:
        raise ValueError("concatenate: needs at least one tensor")
    ref = tensors[0]
    axis = normalize_axis("concatenate", int(axis_or_dim("concatenate", axis, dim, default=0)), ref.ndim)[0]
    for i, t in enumerate(tensors):
        if t.ndim != ref.ndim or any(a != b for d, (a, b) in enumerate(zip(t.shape, ref.shape)) if d != axis):
            raise ValueError(f"concatenate: tensors[{i}] has shape {t.shape}, incompatible with {ref.shape} "
                             f"along every axis but {axis}")
        if t.dtype != ref.dtype:
            raise TypeError(f"concatenate: tensors[{i}] is {t.dtype}, tensors[0] is {ref.dtype}")
    return Concatenate.apply(*tensors, axis=axis)


cat = concatenate


def pad(x, pad_width, value=0.0):
    """Pad with a constant. ``pad_width``: one (before, after) pair per axis, as ``np.pad``."""
    check_tensor("pad", x)
    try:
        pairs = tuple((lo, hi) for lo, hi in pad_width)
    except (TypeError, ValueError):
        pairs = None
    if (pairs is None or len(pairs) != x.ndim
            or not all(is_int(v) and v >= 0 for pair in pairs for v in pair)):
        raise ValueError(f"pad: need one (before, after) pair of integers >= 0 per axis of shape {x.shape}, "
                         f"got {pad_width!r}")
    pad_width = tuple((int(lo), int(hi)) for lo, hi in pairs)
    padded = tuple(n + lo + hi for n, (lo, hi) in zip(x.shape, pad_width))
    check_size("pad", "an output", padded, f"pad_width {pad_width} on shape {x.shape}")
    return Pad.apply(x, pad_width, float(value))
