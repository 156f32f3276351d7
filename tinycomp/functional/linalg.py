"""Matrix products.

    matmul: y = a @ b (NumPy semantics: 1-D operands promoted, batch axes broadcast)
            da = g @ bᵀ,  db = aᵀ @ g   (then summed over broadcast batch axes)
    linear: y = x @ Wᵀ + b,  x (..., in), W (out, in), b (out,)
            dx = g @ W,  dW = gᵀ @ x (batch axes flattened),  db = Σ g over all but the last axis
            in, out or the batch may be 0, as in PyTorch: in = 0 gives y = b broadcast and dW (out, 0)
"""
import math

import numpy as np

from ..autograd import Function, unbroadcast
from ._util import check_float


class MatMul(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return np.matmul(a, b)

    @staticmethod
    def backward(ctx, dout):
        a, b = ctx.saved
        # promote 1-D operands the way matmul does, so one formula covers every case
        a2 = a[None, :] if a.ndim == 1 else a
        b2 = b[:, None] if b.ndim == 1 else b
        # restore the axes matmul dropped, b's trailing one first: for vector @ vector dout is 0-d
        g = dout
        if b.ndim == 1:
            g = np.expand_dims(g, -1)
        if a.ndim == 1:
            g = np.expand_dims(g, -2)
        da = db = None
        if ctx.needs_input_grad[0]:
            da = unbroadcast(np.matmul(g, np.swapaxes(b2, -1, -2)), a2.shape).reshape(a.shape)
        if ctx.needs_input_grad[1]:
            db = unbroadcast(np.matmul(np.swapaxes(a2, -1, -2), g), b2.shape).reshape(b.shape)
        return da, db


class Linear(Function):
    @staticmethod
    def forward(ctx, x, w, b):
        ctx.save_for_backward(x, w)
        y = x @ w.T  # (..., in) @ (in, out) -> (..., out)
        if b is not None:
            y += b
        return y

    @staticmethod
    def backward(ctx, dout):
        x, w = ctx.saved
        rows = math.prod(x.shape[:-1])  # stated, not -1: reshape cannot infer it when in or out is 0
        g2 = dout.reshape(rows, w.shape[0])  # (rows, out)
        dx = dout @ w if ctx.needs_input_grad[0] else None
        dw = g2.T @ x.reshape(rows, w.shape[1]) if ctx.needs_input_grad[1] else None  # (out, rows) @ (rows, in)
        db = g2.sum(axis=0) if ctx.needs_input_grad[2] else None
        return dx, dw, db


def matmul(a, b):
    from ._util import operands

    a, b = operands("matmul", a, b, core=2)
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError(f"matmul: operands must have at least one dimension, got {a.shape} and {b.shape}")
    ka = a.shape[-1]
    kb = b.shape[0] if b.ndim == 1 else b.shape[-2]
    if ka != kb:
        raise ValueError(f"matmul: inner dimensions differ, {a.shape} @ {b.shape} ({ka} != {kb})")
    return MatMul.apply(a, b)


def linear(x, weight, bias=None):
    check_float("linear", x)
    check_float("linear", weight, "weight")
    if weight.ndim != 2 or x.ndim < 1 or x.shape[-1] != weight.shape[1]:
        raise ValueError(f"linear: input {x.shape} does not match weight {weight.shape} (need input[..., in] "
                         "and weight[out, in])")
    if x.dtype != weight.dtype:
        raise TypeError(f"linear: input is {x.dtype} but weight is {weight.dtype}")
    if bias is not None:
        check_float("linear", bias, "bias")
        if bias.shape != (weight.shape[0],):
            raise ValueError(f"linear: bias has shape {bias.shape}, expected ({weight.shape[0]},)")
        if bias.dtype != x.dtype:  # y += b in the forward would silently cast it
            raise TypeError(f"linear: bias is {bias.dtype} but input is {x.dtype}")
    return Linear.apply(x, weight, bias)
