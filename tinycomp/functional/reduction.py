"""Reductions over axes.

    sum:  y = Σ_axes x                   dx = g broadcast back over the reduced axes
    mean: y = Σ_axes x / n               dx = g / n broadcast back
    max:  y = max_axes x                 dx = g / t on each of the t tied maxima, 0 elsewhere
(``max`` spreads the gradient evenly over ties, like ``torch.amax``; it never picks one arbitrarily.)
Each takes NumPy's ``axis``/``keepdims`` or PyTorch's ``dim``/``keepdim``. ``max(x, dim=d)`` returns
what PyTorch's does, ``(values, indices)``; ``max(x, axis=d)`` returns the values, as NumPy's.
"""
from collections import namedtuple

import numpy as np
from tinycomp_kernels.checks import is_int

from ..autograd import Function
from ._dims import axis_or_dim, keepdims_or_keepdim
from ._util import check_float, normalize_axis


def _expand(dout, shape, axes, keepdims):
    """dout of the reduced shape, broadcast (as a view) to the input's ``shape``."""
    if not keepdims:
        dout = np.expand_dims(dout, axes)
    return np.broadcast_to(dout, shape)


class Sum(Function):
    @staticmethod
    def forward(ctx, x, axes, keepdims):
        ctx.shape, ctx.axes, ctx.keepdims = x.shape, axes, keepdims
        return np.asarray(x.sum(axis=axes, keepdims=keepdims))

    @staticmethod
    def backward(ctx, dout):
        return np.ascontiguousarray(_expand(dout, ctx.shape, ctx.axes, ctx.keepdims)), None, None


class Mean(Function):
    @staticmethod
    def forward(ctx, x, axes, keepdims):
        ctx.shape, ctx.axes, ctx.keepdims = x.shape, axes, keepdims
        ctx.count = int(np.prod([x.shape[a] for a in axes]))
        return np.asarray(x.mean(axis=axes, keepdims=keepdims))

    @staticmethod
    def backward(ctx, dout):
        g = _expand(dout / dout.dtype.type(ctx.count), ctx.shape, ctx.axes, ctx.keepdims)
        return np.ascontiguousarray(g), None, None


class Max(Function):
    @staticmethod
    def forward(ctx, x, axes, keepdims):
        y = x.max(axis=axes, keepdims=True)
        ties = x == y
        ctx.weights = ties / ties.sum(axis=axes, keepdims=True).astype(x.dtype)
        ctx.axes, ctx.keepdims = axes, keepdims
        return np.asarray(y if keepdims else np.squeeze(y, axis=axes))

    @staticmethod
    def backward(ctx, dout):
        g = dout if ctx.keepdims else np.expand_dims(dout, ctx.axes)
        return (g * ctx.weights).astype(dout.dtype, copy=False), None, None


def sum(x, axis=None, keepdims=None, *, dim=None, keepdim=None):
    check_float("sum", x)
    axes = normalize_axis("sum", axis_or_dim("sum", axis, dim), x.ndim)
    return Sum.apply(x, axes, keepdims_or_keepdim("sum", keepdims, keepdim))


def mean(x, axis=None, keepdims=None, *, dim=None, keepdim=None):
    check_float("mean", x)
    axes = normalize_axis("mean", axis_or_dim("mean", axis, dim), x.ndim)
    return Mean.apply(x, axes, keepdims_or_keepdim("mean", keepdims, keepdim))


# PyTorch's max(x, dim) result: values (a Tensor, differentiable) and indices (an int64 ndarray, as argmax's)
ValuesIndices = namedtuple("ValuesIndices", "values indices")


def max(x, axis=None, keepdims=None, *, dim=None, keepdim=None):
    """The largest element over ``axis`` (NumPy's ``max``, PyTorch's ``amax``). With PyTorch's ``dim=``
    (one int) it returns PyTorch's ``max(x, dim)``: ``ValuesIndices(values, indices)``, the first maximum's
    index; the gradient of ``values`` is still shared among tied maxima."""
    check_float("max", x)
    keepdims = keepdims_or_keepdim("max", keepdims, keepdim)
    axes = normalize_axis("max", axis_or_dim("max", axis, dim), x.ndim)
    if dim is not None and not is_int(dim):
        raise TypeError(f"max: dim= must be one int, got {dim!r} (max(dim=) returns values and indices along one "
                        f"dimension, as PyTorch's); for several axes use axis=")
    if x.data.size == 0:
        raise ValueError(f"max: cannot reduce an empty tensor of shape {x.shape}")
    values = Max.apply(x, axes, keepdims)
    if dim is None:
        return values
    return ValuesIndices(values, x.data.argmax(axis=axes[0], keepdims=keepdims))
