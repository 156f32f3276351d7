"""Batch normalisation over the channel axis: training forward, eval forward, backward.

Shapes: x (N, C, L) — a (N, C, H, W) input is viewed as L = H*W, a (N, C) input as L = 1.
M = N*L values per channel. gamma, beta (C,) (ones / zeros when the layer has no affine part).

training:  mean_c = sum x / M,  var_c = sum (x - mean_c)^2 / M  (biased),  inv_std_c = 1/sqrt(var_c + eps)
           x_hat = (x - mean_c) * inv_std_c,   y = gamma_c * x_hat + beta_c
eval:      y = x * scale_c + shift_c,  scale_c = gamma_c / sqrt(running_var_c + eps),
           shift_c = beta_c - running_mean_c * scale_c
backward (training; the standard fused formula, x_hat recomputed from x, mean, inv_std):
           dbeta_c = sum dout,  dgamma_c = sum dout * x_hat
           dx = gamma_c * inv_std_c / M * (M * dout - dbeta_c - x_hat * dgamma_c)

Fused ReLU (``relu=True``): z = max(y, 0) in the same write pass; the backward recomputes y's sign
from x (y = a*x + b per channel, the forward's rounding) and uses dy = dout * [y > 0] in both of its
passes, so BN + ReLU costs what BN alone costs and stores nothing extra. The clamp is NumPy's (NaN
stays NaN and passes no gradient, max(-0, 0) = +0): fused equals BN then np.maximum bit for bit in the
forward; in the backward up to the rounding of the lane-split sums (LLVM may vectorise the masked sum
in another order: seen in float64 on AMD Zen 3, AVX2).

Memory traffic: the training forward reads x twice (sums; then writes y) and the backward reads
(x, dout) twice (sums; then writes dx). x_hat is never stored: recomputing it costs one FMA, storing it
an extra array the size of the activation. Sums are accumulated in float64 around a per-channel shift
(the channel's first value), so sum-of-squares does not cancel when |mean| >> std; they are split
over vector lanes (``SUM_REASSOC_NO_FMA``), so their last bits depend on the vector width, not on
the thread count. Parallel over channels (each thread owns whole channels: no atomics,
deterministic sums).
Reference: Ioffe & Szegedy, 2015; ``*_ref`` below are NumPy formulations of the same formulas.
"""
import math

import numpy as np
from numba import njit, prange

from .fastmath import SUM_REASSOC_NO_FMA

__all__ = ["batch_norm_train_forward", "batch_norm_eval_forward", "batch_norm_eval_affine", "channel_affine",
           "batch_norm_backward", "batch_norm_train_forward_ref", "batch_norm_backward_ref"]


# --- references ---------------------------------------------------------------------------------
def batch_norm_train_forward_ref(x, gamma, beta, eps, relu=False):
    """x (N, C, L) -> (y, mean, var_biased, inv_std) in NumPy; y = max(y, 0) if ``relu``."""
    mean = x.mean(axis=(0, 2), dtype=np.float64)
    var = x.var(axis=(0, 2), dtype=np.float64)
    inv_std = 1.0 / np.sqrt(var + eps)
    y = (x - mean[:, None]) * (inv_std * gamma)[:, None] + beta[:, None]
    return (np.maximum(y, 0) if relu else y).astype(x.dtype), mean, var, inv_std


def batch_norm_backward_ref(dout, x, gamma, mean, inv_std, beta=None, relu=False):
    """(dx, dgamma, dbeta) by the chain rule through mean and variance, written out step by step.
    ``relu``: of relu(BN(x)), whose gradient reaches BN only where its output y was > 0."""
    M = x.shape[0] * x.shape[2]
    if relu:
        y = (x - mean[:, None]) * inv_std[:, None] * gamma[:, None] + (0 if beta is None else beta[:, None])
        dout = np.where(y > 0, dout, 0)
    xc = x - mean[:, None]
    x_hat = xc * inv_std[:, None]
    dxhat = dout * gamma[:, None]
    dvar = np.sum(dxhat * xc, axis=(0, 2)) * -0.5 * inv_std ** 3
    dmean = -np.sum(dxhat, axis=(0, 2)) * inv_std - 2.0 * dvar * xc.sum(axis=(0, 2)) / M
    dx = dxhat * inv_std[:, None] + dvar[:, None] * 2.0 * xc / M + dmean[:, None] / M
    return dx, np.sum(dout * x_hat, axis=(0, 2)), dout.sum(axis=(0, 2))


# --- loops --------------------------------------------------------------------------------------
def _batch_norm_train_loops(y, mean, var, inv_std, coef, x, gamma, beta, eps, relu):
    N, C, L = x.shape
    M = N * L
    for c in prange(C):
        shift = np.float64(x[0, c, 0])
        s = 0.0
        ss = 0.0
        for n in range(N):
            for i in range(L):
                d = x[n, c, i] - shift
                s += d
                ss += d * d
        m = s / M
        v = max(ss / M - m * m, 0.0)
        mean[c] = shift + m
        var[c] = v
        r = 1.0 / math.sqrt(v + eps)
        inv_std[c] = r
        coef[c, 0] = gamma[c] * r                 # y = a*x + b: one FMA per element, in x's dtype
        coef[c, 1] = beta[c] - (shift + m) * gamma[c] * r
        coef[c, 2] = 0                            # a zero of x's dtype: keeps the clamp in that dtype
        a = coef[c, 0]
        b = coef[c, 1]
        zero = coef[c, 2]
        for n in range(N):
            if relu:
                for i in range(L):
                    v = x[n, c, i] * a + b
                    y[n, c, i] = zero if v <= zero else v  # np.maximum's clamp: NaN stays, -0 becomes +0
            else:
                for i in range(L):
                    y[n, c, i] = x[n, c, i] * a + b


def _batch_norm_eval_loops(y, x, scale, shift, relu):
    N, C, L = x.shape
    for t in prange(N * C):
        n = t // C
        c = t % C
        a = scale[c]
        b = shift[c]
        zero = scale[c] - scale[c]  # 0 in x's dtype (scale is finite)
        if relu:
            for i in range(L):
                v = x[n, c, i] * a + b
                y[n, c, i] = zero if v <= zero else v
        else:
            for i in range(L):
                y[n, c, i] = x[n, c, i] * a + b


def _batch_norm_backward_loops(dx, dgamma, dbeta, coef, dout, x, gamma, beta, mean, inv_std, relu):
    N, C, L = x.shape
    M = N * L
    for c in prange(C):
        mu = mean[c]
        r = inv_std[c]
        coef[c, 0] = gamma[c] * r                 # the forward's y = a*x + b, for the ReLU mask y > 0
        coef[c, 1] = beta[c] - mu * gamma[c] * r
        coef[c, 2] = 0
        ya = coef[c, 0]
        yb = coef[c, 1]
        zero = coef[c, 2]
        sd = 0.0
        sdx = 0.0
        for n in range(N):
            for i in range(L):
                d = dout[n, c, i]  # loaded before the select: a blend; a load inside it became a branch
                xi = x[n, c, i]
                g = np.float64(d if not relu or xi * ya + yb > 0 else zero)  # a NaN y passes no gradient
                sd += g
                sdx += g * (xi - mu)
        dbeta[c] = sd
        dgamma[c] = sdx * r
        k = gamma[c] * r / M                      # dx = k * (M*dy - sd - x_hat*dgamma) = a*dy + b*x + e
        b = -k * sdx * r * r
        coef[c, 3] = k * M
        coef[c, 4] = b
        coef[c, 5] = -k * sd - b * mu
        a32 = coef[c, 3]
        b32 = coef[c, 4]
        e32 = coef[c, 5]
        for n in range(N):
            if relu:
                for i in range(L):
                    d = dout[n, c, i]
                    xi = x[n, c, i]
                    dy = d if xi * ya + yb > 0 else zero
                    dx[n, c, i] = dy * a32 + xi * b32 + e32
            else:
                for i in range(L):
                    dx[n, c, i] = dout[n, c, i] * a32 + x[n, c, i] * b32 + e32


# SUM_REASSOC_NO_FMA where a channel's float64 sums are: split over vector lanes they ran 1.6-2.3x
# faster (the serial chain waits on each add); the elementwise passes have no sum to re-associate.
batch_norm_train_jit = njit(parallel=True, cache=True, fastmath=SUM_REASSOC_NO_FMA)(_batch_norm_train_loops)
batch_norm_eval_jit = njit(parallel=True, cache=True)(_batch_norm_eval_loops)
batch_norm_backward_jit = njit(parallel=True, cache=True, fastmath=SUM_REASSOC_NO_FMA)(_batch_norm_backward_loops)


# --- wrappers -----------------------------------------------------------------------------------
def _as3d(op, x):
    if not isinstance(x, np.ndarray) or x.dtype not in (np.float32, np.float64):
        raise TypeError(f"{op}: input must be a float32 or float64 array, got "
                        f"{getattr(x, 'dtype', type(x).__name__)}")
    if x.ndim not in (2, 3, 4):
        raise ValueError(f"{op}: input must be (N, C), (N, C, L) or (N, C, H, W), got shape {x.shape}")
    return np.ascontiguousarray(x).reshape(x.shape[0], x.shape[1], -1)  # (N, C, L), L = H*W or 1


def _per_channel(op, name, v, C, default=None):
    """A (C,) float64 vector: ``v`` checked and converted, or ``default`` everywhere when v is None."""
    if v is None and default is not None:
        return np.full(C, default, dtype=np.float64)
    v = np.asarray(v)
    if v.shape != (C,):
        raise ValueError(f"{op}: {name} must have shape ({C},) for {C} channels, got {v.shape}")
    if v.dtype.kind not in "fiu":
        raise TypeError(f"{op}: {name} must be real numbers, got {v.dtype}")
    return v.astype(np.float64)


def batch_norm_train_forward(x, gamma=None, beta=None, eps=1e-5, relu=False):
    """(y like x, mean (C,), biased var (C,), inv_std (C,)); the statistics are float64.
    ``relu``: return max(y, 0) instead (fused BN + ReLU, no extra pass over memory)."""
    x3 = _as3d("batch_norm", x)
    N, C, L = x3.shape
    if N * L < 1:
        raise ValueError(f"batch_norm: needs at least one value per channel, got input {x.shape}")
    g = _per_channel("batch_norm", "weight", gamma, C, 1.0)
    b = _per_channel("batch_norm", "bias", beta, C, 0.0)
    y = np.empty_like(x3)
    mean, var, inv_std = np.empty(C), np.empty(C), np.empty(C)
    coef = np.empty((C, 3), dtype=x.dtype)  # per-channel a, b (and 0) in x's dtype: full-width vector FMAs
    batch_norm_train_jit(y, mean, var, inv_std, coef, x3, g, b, float(eps), bool(relu))
    return y.reshape(x.shape), mean, var, inv_std


def batch_norm_eval_affine(C, running_mean, running_var, gamma=None, beta=None, eps=1e-5, dtype=np.float32):
    """(scale, shift) (C,) in ``dtype``: the per-channel map y = x * scale + shift (two roundings) that
    ``batch_norm_eval_forward`` applies; scale = gamma / sqrt(running_var + eps), shift = beta -
    running_mean * scale, computed in float64. The exporter stores these very numbers, so that a
    runtime applying them equals the training graph bit for bit."""
    rm = _per_channel("batch_norm", "running_mean", running_mean, C, 0.0)
    rv = _per_channel("batch_norm", "running_var", running_var, C, 1.0)
    scale = _per_channel("batch_norm", "weight", gamma, C, 1.0) / np.sqrt(rv + eps)
    shift = _per_channel("batch_norm", "bias", beta, C, 0.0) - rm * scale
    return scale.astype(dtype), shift.astype(dtype)


def batch_norm_eval_forward(x, running_mean, running_var, gamma=None, beta=None, eps=1e-5, relu=False):
    """y = (x - running_mean) / sqrt(running_var + eps) * gamma + beta, per channel (max(y, 0) if relu),
    as x * scale + shift with ``batch_norm_eval_affine``'s scale and shift."""
    C = _as3d("batch_norm", x).shape[1]
    return channel_affine(x, *batch_norm_eval_affine(C, running_mean, running_var, gamma, beta, eps, x.dtype), relu)


def channel_affine(x, scale, shift, relu=False):
    """y = x * scale[c] + shift[c] per channel c of x (N, C, ...) (max(y, 0) if relu), on the loop of
    the eval-mode BatchNorm: two roundings, no FMA, whatever the CPU. ``scale``, ``shift``: (C,) in x's dtype."""
    x3 = _as3d("channel_affine", x)
    C = x3.shape[1]
    for name, v in (("scale", scale), ("shift", shift)):
        if not isinstance(v, np.ndarray) or v.shape != (C,) or v.dtype != x.dtype:
            raise ValueError(f"channel_affine: {name} must be a ({C},) {x.dtype} array for input {x.shape}, got "
                             f"{getattr(v, 'dtype', type(v).__name__)} {getattr(v, 'shape', '')}")
    y = np.empty_like(x3)
    batch_norm_eval_jit(y, x3, scale, shift, bool(relu))
    return y.reshape(x.shape)


def batch_norm_backward(dout, x, gamma, mean, inv_std, beta=None, relu=False):
    """(dx like x, dgamma (C,), dbeta (C,)) of the training forward; gamma None means ones, beta None
    zeros. With ``relu``, of the fused BN + ReLU: dout counts only where the forward's y was > 0."""
    x3 = _as3d("batch_norm_backward", x)
    if not isinstance(dout, np.ndarray) or dout.shape != x.shape:
        raise ValueError(f"batch_norm_backward: dout {getattr(dout, 'shape', type(dout).__name__)} and input "
                         f"{x.shape} differ")
    C = x3.shape[1]
    g = _per_channel("batch_norm_backward", "weight", gamma, C, 1.0)
    b = _per_channel("batch_norm_backward", "bias", beta, C, 0.0)
    mu = _per_channel("batch_norm_backward", "mean", mean, C)           # the kernel reads them per channel,
    r = _per_channel("batch_norm_backward", "inv_std", inv_std, C)      # unchecked: shapes must be (C,)
    dx = np.empty_like(x3)
    dgamma, dbeta = np.empty(C), np.empty(C)
    coef = np.empty((C, 6), dtype=x.dtype)
    batch_norm_backward_jit(dx, dgamma, dbeta, coef, np.ascontiguousarray(dout, dtype=x.dtype).reshape(x3.shape), x3,
                            g, b, mu, r, bool(relu))
    return dx.reshape(x.shape), dgamma, dbeta
