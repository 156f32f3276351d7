"""A layer's output epilogue in one pass: per-channel scale and bias, an unfolded BatchNorm, a residual
and ReLU, for y (N, C, ...) float32 or float64, in place.

    v = y[n, c, i]
    v = v * scale[c]                       (scale given)
    v = v + bias[c]                        (bias given)
    v = v * bn_scale[c] + bn_shift[c]      (bn given: the eval-mode BatchNorm, two roundings)
    v = v + residual[n, c, i]              (residual given)
    y[n, c, i] = (+0 if v <= 0 else v) if relu else v

Each step rounds once in y's dtype, in this order, without FMA (the default fastmath policy,
``fastmath.py``), so the result equals the NumPy passes of the reference (``y *= scale[:, None]``, ...)
bit for bit, with one read and one write of y instead of one each per step. NaN stays NaN through
ReLU, as with ``np.maximum``. This is what an inference runtime spends between two convolutions.
Reference: ``epilogue_ref``.
"""
import numpy as np
from numba import njit, prange

__all__ = ["epilogue", "epilogue_ref"]


# --- reference ---------------------------------------------------------------------------------
def epilogue_ref(y, scale=None, bias=None, bn=None, residual=None, relu=False):
    """The NumPy passes, on a copy of y."""
    y = np.array(y)
    shape = (1, -1) + (1,) * (y.ndim - 2)  # a (C,) vector over (N, C, ...)
    if scale is not None:
        y *= scale.reshape(shape)
    if bias is not None:
        y += bias.reshape(shape)
    if bn is not None:
        y *= bn[0].reshape(shape)
        y += bn[1].reshape(shape)
    if residual is not None:
        y += residual
    if relu:
        y = np.where(y <= 0, y.dtype.type(0), y)
    return y


# --- loops -------------------------------------------------------------------------------------
def _epilogue_loops(y, scale, bias, bn_scale, bn_shift, residual, flags, zeros):
    """y (N, C, L) in place; flags = (scale, bias, bn, residual, relu) as 0/1; absent vectors are dummies;
    zeros (1,) holds 0 in y's dtype."""
    N, C, L = y.shape
    has_scale, has_bias, has_bn, has_res, relu = flags[0], flags[1], flags[2], flags[3], flags[4]
    zero = zeros[0]
    for t in prange(N * C):
        n = t // C
        c = t % C
        s = scale[c] if has_scale else scale[0]
        b = bias[c] if has_bias else bias[0]
        g = bn_scale[c] if has_bn else bn_scale[0]
        h = bn_shift[c] if has_bn else bn_shift[0]
        row = y[n, c]
        for i in range(L):
            v = row[i]
            if has_scale:
                v = v * s
            if has_bias:
                v = v + b
            if has_bn:
                v = v * g
                v = v + h
            if has_res:
                v = v + residual[n, c, i]
            if relu and v <= zero:
                v = zero
            row[i] = v


epilogue_jit = njit(parallel=True, cache=True)(_epilogue_loops)


# --- wrapper -----------------------------------------------------------------------------------
def _vector(name, v, C, dtype):
    if v is None:
        return np.zeros(1, dtype)
    if not isinstance(v, np.ndarray) or v.shape != (C,) or v.dtype != dtype:
        raise ValueError(f"epilogue: {name} must be a ({C},) {dtype} array, got "
                         f"{getattr(v, 'dtype', type(v).__name__)} {getattr(v, 'shape', '')}")
    return v


def epilogue(y, scale=None, bias=None, bn=None, residual=None, relu=False):
    """y (N, C, ...) C-contiguous float32 / float64, updated in place and returned (module docstring).
    ``scale``, ``bias``: (C,) in y's dtype or None; ``bn``: (bn_scale, bn_shift) or None; ``residual``:
    y's shape and dtype, or None."""
    if not isinstance(y, np.ndarray) or y.dtype not in (np.float32, np.float64) or y.ndim < 2 \
            or not y.flags.c_contiguous:
        raise ValueError(f"epilogue: y must be a C-contiguous float32 or float64 array (N, C, ...), got "
                         f"{getattr(y, 'dtype', type(y).__name__)} {getattr(y, 'shape', '')}")
    C = y.shape[1]
    vectors = [_vector(name, v, C, y.dtype) for name, v in
               (("scale", scale), ("bias", bias), ("bn_scale", None if bn is None else bn[0]),
                ("bn_shift", None if bn is None else bn[1]))]
    y3 = y.reshape(y.shape[0], C, -1)
    if residual is None:
        res = np.zeros((1, 1, 1), y.dtype)
    else:
        if not isinstance(residual, np.ndarray) or residual.shape != y.shape or residual.dtype != y.dtype:
            raise ValueError(f"epilogue: residual must be {y.dtype} {y.shape} like y, got "
                             f"{getattr(residual, 'dtype', type(residual).__name__)} {getattr(residual, 'shape', '')}")
        res = np.ascontiguousarray(residual).reshape(y3.shape)
    flags = np.array([scale is not None, bias is not None, bn is not None, residual is not None, bool(relu)], np.int8)
    epilogue_jit(y3, *vectors, res, flags, np.zeros(1, y.dtype))
    return y
