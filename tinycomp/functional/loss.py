"""Log-softmax and the fused, numerically stable cross-entropy.

    log_softmax: y = x - logsumexp(x)                       dx = g - softmax(x) · Σ g
    cross_entropy (logits x (N, C), integer targets t (N,), smoothing ε, mean over N):
        p = softmax(x);  q = (1 - ε)·onehot(t) + ε/C
        L = -(1/N) Σ_n Σ_c q[n, c] · log p[n, c]
        dx = g · (p - q) / N
logsumexp subtracts the row maximum first so exp never overflows.
"""
import numpy as np

from ..autograd import Function
from ._dims import axis_or_dim
from ._util import check_float, normalize_axis


def _log_softmax(x, axis):
    shifted = x - x.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


class LogSoftmax(Function):
    @staticmethod
    def forward(ctx, x, axis):
        y = _log_softmax(x, axis)
        ctx.save_for_backward(y)
        ctx.axis = axis
        return y

    @staticmethod
    def backward(ctx, dout):
        (y,) = ctx.saved
        return dout - np.exp(y) * dout.sum(axis=ctx.axis, keepdims=True), None


class CrossEntropy(Function):
    @staticmethod
    def forward(ctx, x, target, smoothing):
        n, c = x.shape
        logp = _log_softmax(x, 1)
        q = np.full((n, c), smoothing / c, dtype=x.dtype)
        q[np.arange(n), target] += 1 - smoothing
        ctx.save_for_backward(logp, q)
        return np.asarray(-(q * logp).sum() / n, dtype=x.dtype)

    @staticmethod
    def backward(ctx, dout):
        logp, q = ctx.saved
        return dout * (np.exp(logp) - q) / logp.shape[0], None, None


def log_softmax(x, axis=None, *, dim=None):
    """Log-softmax over ``axis`` (PyTorch's ``dim``; the last axis when neither is given)."""
    check_float("log_softmax", x)
    axis = int(axis_or_dim("log_softmax", axis, dim, default=-1))
    return LogSoftmax.apply(x, normalize_axis("log_softmax", axis, x.ndim)[0])


def cross_entropy(logits, target, label_smoothing=0.0):
    """Mean cross-entropy of ``logits`` (N, C) against integer class indices ``target`` (N,)."""
    check_float("cross_entropy", logits, "logits")
    t = np.asarray(target.data if hasattr(target, "data") else target)
    if logits.ndim != 2:
        raise ValueError(f"cross_entropy: logits must be (N, C), got shape {logits.shape}")
    if t.shape != (logits.shape[0],) or not np.issubdtype(t.dtype, np.integer):
        raise ValueError(f"cross_entropy: target must be integers of shape ({logits.shape[0]},), "
                         f"got {t.dtype} {t.shape}")
    if t.size and (t.min() < 0 or t.max() >= logits.shape[1]):
        raise ValueError(f"cross_entropy: target values must lie in [0, {logits.shape[1]}), got "
                         f"[{t.min()}, {t.max()}]")
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"cross_entropy: label_smoothing must be in [0, 1), got {label_smoothing}")
    return CrossEntropy.apply(logits, t, float(label_smoothing))
