"""Elementwise float kernels for the training hot path: the ReLU backward.

    relu_backward:  dx = dout where y > 0 else 0      (y: the forward's output max(x, 0); y > 0 iff x > 0)

Why a kernel: ``np.where(y > 0, dout, 0)`` builds a boolean temporary and runs on one core; on a
(128, 16, 32, 32) float32 activation it took ~8 ms on this 2-core machine, this parallel loop ~2 ms.
(The forward ``np.maximum(x, 0)`` and a residual ``np.maximum(a + b, 0)`` were measured too: NumPy is
as fast there, so they have no kernel.) Any shape, float32 or float64; arrays are processed as flat
C-order vectors. Where y is NaN no gradient passes (NaN > 0 is false), as with np.where.
Reference: ``relu_backward_ref``.
"""
import numpy as np
from numba import njit, prange

__all__ = ["relu_backward", "relu_backward_ref"]

_BLOCK = 1 << 14  # elements per parallel chunk: large enough to amortise scheduling, small for balance


def relu_backward_ref(dout, y):
    return np.where(y > 0, dout, 0).astype(dout.dtype)


def _relu_backward_loops(dx, dout, y, zero):
    n = y.size
    for blk in prange((n + _BLOCK - 1) // _BLOCK):
        for i in range(blk * _BLOCK, min(n, (blk + 1) * _BLOCK)):
            dx[i] = dout[i] if y[i] > 0 else zero


relu_backward_jit = njit(parallel=True, cache=True)(_relu_backward_loops)


def relu_backward(dout, y):
    """dx (shape and dtype of y) = dout where y > 0, else 0."""
    for name, arr in (("dout", dout), ("y", y)):
        if not isinstance(arr, np.ndarray) or arr.dtype not in (np.float32, np.float64):
            raise TypeError(f"relu_backward: {name} must be a float32 or float64 array, got "
                            f"{getattr(arr, 'dtype', type(arr).__name__)}")
    if dout.shape != y.shape or dout.dtype != y.dtype:
        raise ValueError(f"relu_backward: dout {dout.dtype}{dout.shape} and y {y.dtype}{y.shape} must have the same "
                         "shape and dtype")
    dx = np.empty(y.shape, dtype=y.dtype)
    # zero: a scalar of the array's dtype, so the select stays in float32 (no float64 detour)
    relu_backward_jit(dx.reshape(-1), np.ascontiguousarray(dout).reshape(-1), np.ascontiguousarray(y).reshape(-1),
                      y.dtype.type(0))
    return dx
