"""Reductions over axes.

    sum:  y = Σ_axes x                   dx = g broadcast back over the reduced axes
    mean: y = Σ_axes x / n               dx = g / n broadcast back
    max:  y = max_axes x                 dx = g / t on each of the t tied maxima, 0 elsewhere
(``max`` spreads the gradient evenly over ties, like ``torch.amax``; it never picks one arbitrarily.)
"""
import numpy as np

from ..autograd import Function
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


def sum(x, axis=None, keepdims=False):
    check_float("sum", x)
    return Sum.apply(x, normalize_axis("sum", axis, x.ndim), bool(keepdims))


def mean(x, axis=None, keepdims=False):
    check_float("mean", x)
    return Mean.apply(x, normalize_axis("mean", axis, x.ndim), bool(keepdims))


def max(x, axis=None, keepdims=False):
    check_float("max", x)
    if x.data.size == 0:
        raise ValueError(f"max: cannot reduce an empty tensor of shape {x.shape}")
    return Max.apply(x, normalize_axis("max", axis, x.ndim), bool(keepdims))
