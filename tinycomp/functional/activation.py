"""Activations, elementwise.

    relu:        y = max(x, 0)                       dx = g · 1{x > 0}
    add_relu:    y = max(a + b, 0)                   da = db = g · 1{y > 0}   (relu(a + b) in one pass each way)
    leaky_relu:  y = x if x > 0 else s·x             dx = g · (1 if x > 0 else s)
    sigmoid:     y = 1 / (1 + e^-x)                  dx = g · y · (1 - y)
    tanh:        y = tanh x                          dx = g · (1 - y²)
    hardtanh:    y = clip(x, lo, hi)                 dx = g · 1{lo <= x <= hi}
The derivative at a kink takes the value PyTorch uses (relu'(0) = 0, hardtanh' = 1 at ±1).
"""
import numpy as np

from tinycomp_kernels.elementwise import add_relu as add_relu_kernel, relu_backward

from ..autograd import Function
from ._util import check_float, operands


class ReLU(Function):
    @staticmethod
    def forward(ctx, x):
        y = np.asarray(np.maximum(x, 0))  # a 0-d x gives a NumPy scalar; the backward kernel wants an array
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, dout):
        (y,) = ctx.saved
        if y.dtype not in (np.float32, np.float64):  # the kernel's dtypes; float16 takes NumPy's path
            return dout * (y > 0)
        return relu_backward(dout, y)  # one parallel pass; np.where was ~4x slower here


class AddReLU(Function):
    """A residual block's end, relu(a + b) for a, b of one shape and dtype (float32 / float64): one pass
    forward, and the ReLU mask applied once, its result the gradient of both a and b (as Add's is)."""

    @staticmethod
    def forward(ctx, a, b):
        y = add_relu_kernel(a, b)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, dout):
        dx = ReLU.backward(ctx, dout)
        return dx, dx


class LeakyReLU(Function):
    @staticmethod
    def forward(ctx, x, slope):
        ctx.save_for_backward(x)
        ctx.slope = slope
        return np.where(x > 0, x, x * x.dtype.type(slope))

    @staticmethod
    def backward(ctx, dout):
        (x,) = ctx.saved
        return np.where(x > 0, dout, dout * dout.dtype.type(ctx.slope)), None


class Sigmoid(Function):
    @staticmethod
    def forward(ctx, x):
        # split by sign so that exp never overflows
        e = np.exp(-np.abs(x))
        y = np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, dout):
        (y,) = ctx.saved
        return dout * y * (1 - y)


class Tanh(Function):
    @staticmethod
    def forward(ctx, x):
        y = np.tanh(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, dout):
        (y,) = ctx.saved
        return dout * (1 - y * y)


class Hardtanh(Function):
    @staticmethod
    def forward(ctx, x, lo, hi):
        ctx.save_for_backward(x)
        ctx.bounds = lo, hi
        return np.clip(x, lo, hi)

    @staticmethod
    def backward(ctx, dout):
        (x,) = ctx.saved
        lo, hi = ctx.bounds
        return np.where((x >= lo) & (x <= hi), dout, 0).astype(dout.dtype, copy=False), None, None


def relu(x):
    return ReLU.apply(check_float("relu", x))


def add_relu(a, b):
    """relu(a + b): one op where a and b are Tensors of one shape and float32 / float64 dtype (the
    kernel's case), else the two ops (broadcasting, constants, other dtypes); the same values either way."""
    a, b = operands("add_relu", a, b)
    if a.shape == b.shape and a.dtype in (np.float32, np.float64):
        return AddReLU.apply(a, b)
    return (a + b).relu()


def leaky_relu(x, negative_slope=0.01):
    return LeakyReLU.apply(check_float("leaky_relu", x), float(negative_slope))


def sigmoid(x):
    return Sigmoid.apply(check_float("sigmoid", x))


def tanh(x):
    return Tanh.apply(check_float("tanh", x))


def hardtanh(x, min_val=-1.0, max_val=1.0):
    if not min_val <= max_val:  # NaN bounds fail this too
        raise ValueError(f"hardtanh: need min_val <= max_val, got {min_val} and {max_val}")
    return Hardtanh.apply(check_float("hardtanh", x), float(min_val), float(max_val))
