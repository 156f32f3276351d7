"""Elementwise arithmetic with NumPy broadcasting. Backward of a broadcast is a sum (``unbroadcast``).

    add: y = a + b      da = g            db = g
    sub: y = a - b      da = g            db = -g
    mul: y = a * b      da = g * b        db = g * a
    div: y = a / b      da = g / b        db = -g * a / b²
    neg: y = -a         da = -g
    pow: y = a ** p     da = g * p * a ** (p - 1)      (p a constant number)
    exp: y = e ** a     da = g * y
    log: y = ln a       da = g / a
(each da, db then summed over the broadcast axes down to the input's shape)
"""
import numpy as np

from ..autograd import Function, unbroadcast
from ._util import check_float, operands


class Add(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.shapes = a.shape, b.shape
        return a + b

    @staticmethod
    def backward(ctx, dout):
        return unbroadcast(dout, ctx.shapes[0]), unbroadcast(dout, ctx.shapes[1])


class Sub(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.shapes = a.shape, b.shape
        return a - b

    @staticmethod
    def backward(ctx, dout):
        return unbroadcast(dout, ctx.shapes[0]), unbroadcast(-dout, ctx.shapes[1])


class Mul(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return a * b

    @staticmethod
    def backward(ctx, dout):
        a, b = ctx.saved
        da = unbroadcast(dout * b, a.shape) if ctx.needs_input_grad[0] else None
        db = unbroadcast(dout * a, b.shape) if ctx.needs_input_grad[1] else None
        return da, db


class Div(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return a / b

    @staticmethod
    def backward(ctx, dout):
        a, b = ctx.saved
        da = unbroadcast(dout / b, a.shape) if ctx.needs_input_grad[0] else None
        db = unbroadcast(-dout * a / (b * b), b.shape) if ctx.needs_input_grad[1] else None
        return da, db


class Neg(Function):
    @staticmethod
    def forward(ctx, a):
        return -a

    @staticmethod
    def backward(ctx, dout):
        return -dout


class Pow(Function):
    @staticmethod
    def forward(ctx, a, exponent):
        ctx.save_for_backward(a)
        ctx.exponent = exponent
        return a ** exponent

    @staticmethod
    def backward(ctx, dout):
        (a,) = ctx.saved
        p = ctx.exponent
        if p == 0:  # d(a**0)/da = 0 everywhere; 0 * a**-1 would be NaN at a = 0
            return np.zeros_like(dout), None
        return dout * p * a ** (p - 1), None


class Exp(Function):
    @staticmethod
    def forward(ctx, a):
        y = np.exp(a)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, dout):
        return dout * ctx.saved[0]


class Log(Function):
    @staticmethod
    def forward(ctx, a):
        ctx.save_for_backward(a)
        return np.log(a)

    @staticmethod
    def backward(ctx, dout):
        return dout / ctx.saved[0]


class Cast(Function):
    """y = a as ``dtype``; da = g cast back to a's dtype."""

    @staticmethod
    def forward(ctx, a, dtype):
        ctx.dtype = a.dtype
        return a.astype(dtype)

    @staticmethod
    def backward(ctx, dout):
        return dout.astype(ctx.dtype), None


def add(a, b):
    return Add.apply(*operands("add", a, b))


def sub(a, b):
    return Sub.apply(*operands("sub", a, b))


def mul(a, b):
    return Mul.apply(*operands("mul", a, b))


def div(a, b):
    return Div.apply(*operands("div", a, b))


def neg(a):
    return Neg.apply(check_float("neg", a))


def pow(a, exponent):
    if not isinstance(exponent, (int, float, np.integer, np.floating)):
        raise TypeError(f"pow: the exponent must be a number, got {type(exponent).__name__}")
    return Pow.apply(check_float("pow", a), float(exponent) if not float(exponent).is_integer() else int(exponent))


def exp(a):
    return Exp.apply(check_float("exp", a))


def log(a):
    return Log.apply(check_float("log", a))


def cast(a, dtype):
    if a.dtype == dtype:
        return a
    return Cast.apply(a, np.dtype(dtype))
