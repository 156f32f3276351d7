"""One-pass kernels for the quantizers' straight-through estimators (tinycomp/functional/quantize.py).

    sign(x)                          out = +1 if x >= 0 else -1          (sign(0) = sign(-0.0) = +1, NaN -> -1)
    round_to_grid(x, step, qn, qp)   out = rint(clip(x / step, qn, qp)) · step
                                     (LSQ; PACT with qn, qp = 0, 2^k - 1 and step = alpha / (2^k - 1))
    round_to_levels(x, levels)       out = rint(clip(x · levels, 0, levels)) / levels
                                     (DoReFa's quantize_k, levels = 2^k - 1: multiplying by the integer
                                     keeps the ties exact, where dividing by a rounded 1/levels moves
                                     an exact r = 0.5 a whole level down in float32)
    clip_backward(dout, x, lo, hi)   dx = dout where lo <= x <= hi else 0;  above = Σ dout where x >= hi
                                     (the hardtanh STE with lo, hi = -clip, clip; DoReFa activations 0, 1;
                                     PACT 0, alpha, where ``above`` is dalpha)
    lsq_backward(dout, x, step, qn, qp)
                                     u = x / step;  dx = dout where qn <= u <= qp else 0;
                                     dstep = Σ dout · (rint(u) - u inside, qn below, qp above)
                                     (before LSQ's gradient scale, which the caller applies)

Why kernels: NumPy spends three to six full passes and one to three temporaries on each of these
(a compare, a select, an abs, a clip, a rint...), once per activation per training step; each kernel
here reads its inputs once, writes its outputs once, on every core.

Conventions: any shape, float32 or float64 (outputs in the input's dtype, arithmetic in it too, so
the elementwise results equal NumPy's bit for bit); arrays are processed as flat C-order vectors
(non-contiguous inputs are copied first); step, lo, hi, qn, qp are scalars (per-channel steps stay in
NumPy). rint rounds half to even, as np.rint. The sums accumulate in float64, one partial sum per
block of _BLOCK elements, in an order of LLVM's choosing within a block (fastmath "reassoc" on the two
summing kernels only). NaN and Inf behave as in the NumPy expressions: a NaN x gives a NaN output,
no dx, no ``above`` term and a NaN dstep (the step's gradient shows the divergence).
References: ``<name>_ref``, NumPy expressions of the same formulas.
"""
import numpy as np
from numba import njit, prange

from .checks import is_real
from .fastmath import SUM_REASSOC_NO_FMA

__all__ = ["sign", "sign_ref", "round_to_grid", "round_to_grid_ref", "round_to_levels", "round_to_levels_ref",
           "clip_backward", "clip_backward_ref",
           "lsq_backward", "lsq_backward_ref"]

_BLOCK = 1 << 14  # elements per parallel chunk: large enough to amortise scheduling, small for balance


# --- references -----------------------------------------------------------------------------------
def sign_ref(x):
    return np.where(x >= 0, 1, -1).astype(x.dtype)


def round_to_grid_ref(x, step, qn, qp):
    return (np.rint(np.clip(x / step, qn, qp)) * step).astype(x.dtype)


def round_to_levels_ref(x, levels):
    n = x.dtype.type(levels)
    return (np.rint(np.clip(x * n, 0, n)) / n).astype(x.dtype)


def clip_backward_ref(dout, x, lo, hi):
    return np.where((x >= lo) & (x <= hi), dout, 0).astype(dout.dtype), float(dout[x >= hi].sum(dtype=np.float64))


def lsq_backward_ref(dout, x, step, qn, qp):
    u = x / step
    inside = (u >= qn) & (u <= qp)
    term = np.where(u < qn, qn, np.where(u > qp, qp, np.rint(u) - u))
    return np.where(inside, dout, 0).astype(dout.dtype), float((term * dout).sum(dtype=np.float64))


# --- loops ----------------------------------------------------------------------------------------
def _sign_loops(out, x, one):
    n = x.size
    for blk in prange((n + _BLOCK - 1) // _BLOCK):
        for i in range(blk * _BLOCK, min(n, (blk + 1) * _BLOCK)):
            out[i] = one if x[i] >= 0 else -one


def _round_to_grid_loops(out, x, step, qn, qp, codes):
    n = x.size
    for blk in prange((n + _BLOCK - 1) // _BLOCK):
        for i in range(blk * _BLOCK, min(n, (blk + 1) * _BLOCK)):
            v = x[i] / step
            if v < qn:        # compare-and-assign, not min/max, so that a NaN passes through
                v = qn
            elif v > qp:
                v = qp
            out[i] = np.rint(v) if codes else np.rint(v) * step


def _round_to_levels_loops(out, x, levels, codes):
    n = x.size
    zero = levels - levels
    for blk in prange((n + _BLOCK - 1) // _BLOCK):
        for i in range(blk * _BLOCK, min(n, (blk + 1) * _BLOCK)):
            v = x[i] * levels
            if v < zero:      # compare-and-assign, not min/max, so that a NaN passes through
                v = zero
            elif v > levels:
                v = levels
            out[i] = np.rint(v) if codes else np.rint(v) / levels


# The backward loops load dout[i] before selecting, and combine conditions with & (not `and`, which
# branches): a select between loaded values vectorises, a load under a branch does not (~10x slower).
def _clip_backward_loops(dx, partial, dout, x, lo, hi, zero):
    """dx[i] = dout[i] where lo <= x[i] <= hi else zero; partial[blk] = Σ dout over the block where x >= hi."""
    n = x.size
    for blk in prange((n + _BLOCK - 1) // _BLOCK):
        acc = 0.0
        for i in range(blk * _BLOCK, min(n, (blk + 1) * _BLOCK)):
            v = x[i]
            g = dout[i]
            dx[i] = g if (v >= lo) & (v <= hi) else zero
            acc += np.float64(g if v >= hi else zero)
        partial[blk] = acc


def _lsq_backward_loops(dx, partial, dout, x, step, qn, qp, zero):
    """dx[i] = dout[i] where qn <= x[i]/step <= qp else zero; partial[blk] = Σ dout · dv/ds over the block."""
    n = x.size
    for blk in prange((n + _BLOCK - 1) // _BLOCK):
        acc = 0.0
        for i in range(blk * _BLOCK, min(n, (blk + 1) * _BLOCK)):
            u = x[i] / step
            g = dout[i]
            dx[i] = g if (u >= qn) & (u <= qp) else zero   # false for a NaN u: no gradient to x
            t = np.rint(u) - u                              # NaN for a NaN u, which the sum carries
            t = qn if u < qn else (qp if u > qp else t)
            acc += np.float64(t * g)
        partial[blk] = acc


sign_jit = njit(parallel=True, cache=True)(_sign_loops)
round_to_grid_jit = njit(parallel=True, cache=True)(_round_to_grid_loops)
round_to_levels_jit = njit(parallel=True, cache=True)(_round_to_levels_loops)
# SUM_REASSOC_NO_FMA only where a sum is: it lets LLVM vectorise the float64 accumulation (a serial
# chain otherwise, ~4x slower); the dx outputs are selects, which it cannot change
clip_backward_jit = njit(parallel=True, cache=True, fastmath=SUM_REASSOC_NO_FMA)(_clip_backward_loops)
lsq_backward_jit = njit(parallel=True, cache=True, fastmath=SUM_REASSOC_NO_FMA)(_lsq_backward_loops)


# --- wrappers -------------------------------------------------------------------------------------
def _float_array(op, name, a):
    if not isinstance(a, np.ndarray) or a.dtype not in (np.float32, np.float64):
        raise TypeError(f"{op}: {name} must be a float32 or float64 array, got {getattr(a, 'dtype', type(a).__name__)}")
    return np.ascontiguousarray(a).reshape(-1)


def _pair(op, dout, x):
    if dout.shape != x.shape or dout.dtype != x.dtype:
        raise ValueError(f"{op}: dout {dout.dtype}{dout.shape} and x {x.dtype}{x.shape} must have the same shape "
                         "and dtype")
    return _float_array(op, "dout", dout), _float_array(op, "x", x)


def _scalar(op, name, v, dtype):
    if not is_real(v) or v != v:
        raise ValueError(f"{op}: {name} must be a real number, got {v!r}")
    return dtype.type(v)


def _grid(op, step, qn, qp, dtype):
    step = _scalar(op, "step", step, dtype)
    if not 0 < step < np.inf:
        raise ValueError(f"{op}: step must be positive and finite, got {step!r}")
    qn, qp = _scalar(op, "qn", qn, dtype), _scalar(op, "qp", qp, dtype)
    if not qn <= qp:
        raise ValueError(f"{op}: need qn <= qp, got {qn} and {qp}")
    return step, qn, qp


def _partials(n):
    return np.zeros((n + _BLOCK - 1) // _BLOCK, np.float64)


def sign(x):
    """sign(x) in x's shape and dtype, sign(0) = +1."""
    flat = _float_array("sign", "x", x)
    out = np.empty(x.shape, x.dtype)
    sign_jit(out.reshape(-1), flat, x.dtype.type(1))
    return out


def round_to_grid(x, step, qn, qp, codes=False):
    """rint(clip(x / step, qn, qp)) · step in x's shape and dtype; step > 0 and qn <= qp scalars.
    ``codes``: the integers rint(clip(x / step, qn, qp)) alone (an inference runtime's input codes)."""
    flat = _float_array("round_to_grid", "x", x)
    step, qn, qp = _grid("round_to_grid", step, qn, qp, x.dtype)
    out = np.empty(x.shape, x.dtype)
    round_to_grid_jit(out.reshape(-1), flat, step, qn, qp, bool(codes))
    return out


def round_to_levels(x, levels, codes=False):
    """rint(clip(x · levels, 0, levels)) / levels in x's shape and dtype; levels a positive integer.
    ``codes``: the integers rint(clip(x · levels, 0, levels)) alone."""
    flat = _float_array("round_to_levels", "x", x)
    if isinstance(levels, bool) or not isinstance(levels, (int, np.integer)) or levels < 1:
        raise ValueError(f"round_to_levels: levels must be a positive int, got {levels!r}")
    out = np.empty(x.shape, x.dtype)
    round_to_levels_jit(out.reshape(-1), flat, x.dtype.type(levels), bool(codes))
    return out


def clip_backward(dout, x, lo, hi):
    """(dx, above): dx = dout where lo <= x <= hi else 0 (x's shape and dtype), above = Σ dout where
    x >= hi (a Python float); lo <= hi scalars (infinite bounds allowed)."""
    d, flat = _pair("clip_backward", dout, x)
    lo, hi = _scalar("clip_backward", "lo", lo, x.dtype), _scalar("clip_backward", "hi", hi, x.dtype)
    if not lo <= hi:
        raise ValueError(f"clip_backward: need lo <= hi, got {lo} and {hi}")
    dx, partial = np.empty(x.shape, x.dtype), _partials(x.size)
    clip_backward_jit(dx.reshape(-1), partial, d, flat, lo, hi, x.dtype.type(0))
    return dx, float(partial.sum())


def lsq_backward(dout, x, step, qn, qp):
    """(dx, dstep): LSQ's backward for a scalar step before the gradient scale; dx in x's shape and
    dtype, dstep = Σ dout · (rint(u) - u inside, qn below, qp above) a Python float, u = x / step."""
    d, flat = _pair("lsq_backward", dout, x)
    step, qn, qp = _grid("lsq_backward", step, qn, qp, x.dtype)
    dx, partial = np.empty(x.shape, x.dtype), _partials(x.size)
    lsq_backward_jit(dx.reshape(-1), partial, d, flat, step, qn, qp, x.dtype.type(0))
    return dx, float(partial.sum())
