"""Inverted dropout: y = x · m / (1 - p) with m ~ Bernoulli(1 - p) drawn from tinycomp's generator;
dx = g · m / (1 - p). Identity in eval mode or with p = 0."""

from ..autograd import Function
from ..random import generator
from ._util import check_float


class Dropout(Function):
    @staticmethod
    def forward(ctx, x, p):
        keep = generator().random(x.shape) >= p
        ctx.scale = (keep / (1 - p)).astype(x.dtype)
        return x * ctx.scale

    @staticmethod
    def backward(ctx, dout):
        return dout * ctx.scale, None


def dropout(x, p=0.5, training=True):
    check_float("dropout", x)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout: p must be in [0, 1], got {p}")
    if not training or p == 0.0:
        return x
    if p == 1.0:
        return x * 0.0
    return Dropout.apply(x, float(p))
