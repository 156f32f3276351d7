"""The quantizers of every compression method, Tensor in and Tensor out, with their STEs.

    ste_sign(x, clip=1.0)          sign(x), backward 1{abs(x) <= clip} (clip None: identity)
    approx_sign(x)                 sign(x), backward (2 - 2 abs(x))·1{abs(x) <= 1}      (Bi-Real Net)
    swish_sign(x, beta=5.0)        sign(x), backward the SignSwish derivative            (BNN+)
    ste_tern(x, threshold, clip)   -1 / 0 / +1 with a dead zone abs(x) < threshold
    ste_heaviside(x, clip=1.0)     1{x > 0}, backward 1{abs(x) <= clip}
    stochastic_sign(w, rng)        BinaryConnect's stochastic sign
    binarize_weight(w, scale, scale_grad)   BWN: alpha·sign(w), exact gradient through alpha
    ternarize_weight(w)            TWN: per-filter threshold 0.7·mean abs(w) and scale
    dorefa_weight(w, bits)         DoReFa-Net k-bit weights (tanh-normalised)
    dorefa_activation(x, bits)     DoReFa-Net k-bit activations on [0, 1]
    pact(x, alpha, bits)           PACT: clip at a learned alpha, k-bit linear levels on [0, alpha]
    lsq(x, step, bits, signed)     LSQ: learned step, gradient scale 1/sqrt(x.size·Qp)
    lsq_init_step(x, bits, signed) LSQ's initial step 2·mean(abs(x))/sqrt(Qp), a float
    lsq_bounds(bits, signed)       LSQ's integer range (Qn, Qp)

sign(0) = +1 everywhere. Inputs are float32 or float64 Tensors and the output keeps the dtype;
alpha and step are Tensors of the input's dtype. Every formula, surrogate and paper is in the
docstring of the op in tinycomp/functional/quantize.py and in docs/methods.md; this module checks
the arguments (errors name the function and the argument) and calls the op.
"""
import math

import numpy as np
from tinycomp_kernels.checks import is_int, is_real

from ..functional import quantize as Q
from ..functional._util import check_float, check_tensor
from ..tensor import Tensor

__all__ = ["ste_sign", "approx_sign", "swish_sign", "ste_tern", "ste_heaviside", "stochastic_sign",
           "binarize_weight", "ternarize_weight", "dorefa_weight", "dorefa_activation", "pact", "lsq",
           "lsq_init_step", "lsq_bounds"]

MAX_BITS = 8


# --- argument checks ------------------------------------------------------------------------------
def _input(op, x, name="x", nonempty=False):
    check_float(op, x, name)
    if x.dtype not in (np.float32, np.float64):
        raise TypeError(f"{op}: {name} must be float32 or float64, got {x.dtype}")
    if nonempty and x.data.size == 0:
        raise ValueError(f"{op}: {name} must not be empty, got shape {x.shape}")
    return x


def _positive(op, name, value):
    if not is_real(value):
        raise TypeError(f"{op}: {name} must be a number, got {type(value).__name__}")
    if not 0 < value < math.inf:
        raise ValueError(f"{op}: {name} must be a positive finite number, got {value!r}")
    return float(value)


def check_bits(op, bits, lo=1):
    """``bits`` as an int in lo..MAX_BITS; TypeError for a non-int, ValueError out of range."""
    if not is_int(bits):
        raise TypeError(f"{op}: bits must be an int, got {bits!r}")
    if not lo <= bits <= MAX_BITS:
        raise ValueError(f"{op}: bits must be an int in {lo}..{MAX_BITS}, got {bits!r}")
    return int(bits)


def _scale(op, name, s, x):
    """A learned bound or step: a Tensor of x's dtype, shape () or x.ndim axes each 1 or x's size
    (a (C,) vector would broadcast against x's last axis, not its channels, so it is refused), > 0."""
    check_tensor(op, s, name)
    if s.dtype != x.dtype:
        raise TypeError(f"{op}: {name} must have x's dtype {x.dtype}, got {s.dtype}")
    if s.ndim and (s.ndim != x.ndim or any(a not in (1, b) for a, b in zip(s.shape, x.shape))):
        raise ValueError(f"{op}: {name} must have shape () or {x.ndim} axes each 1 or x's size (e.g. "
                         f"{(1, x.shape[1]) + (1,) * (x.ndim - 2) if x.ndim >= 2 else (1,)} per channel), "
                         f"got {s.shape} for x of shape {x.shape}")
    if not np.all((s.data > 0) & np.isfinite(s.data)):
        raise ValueError(f"{op}: {name} must be positive and finite everywhere, got min {s.data.min()!r}")
    return s


# --- sign STEs ------------------------------------------------------------------------------------
def ste_sign(x, clip=1.0):
    """sign(x) in {-1, +1} (sign(0) = +1); backward g·1{abs(x) <= clip}, or g when ``clip`` is None."""
    _input("ste_sign", x)
    return Q.SignSTE.apply(x, clip=None if clip is None else _positive("ste_sign", "clip", clip))


def approx_sign(x):
    """sign(x) (sign(0) = +1); backward g·(2 - 2·abs(x))·1{abs(x) <= 1} (Bi-Real Net)."""
    return Q.ApproxSign.apply(_input("approx_sign", x))


def swish_sign(x, beta=5.0):
    """sign(x) (sign(0) = +1); backward g·beta·(2 - beta·x·tanh(beta·x/2)) / (1 + cosh(beta·x)) (BNN+)."""
    _input("swish_sign", x)
    return Q.SwishSign.apply(x, beta=_positive("swish_sign", "beta", beta))


def ste_tern(x, threshold=0.05, clip=1.0):
    """0 where abs(x) < ``threshold`` (>= 0), else sign(x); backward g·1{abs(x) <= clip}."""
    _input("ste_tern", x)
    if not is_real(threshold):
        raise TypeError(f"ste_tern: threshold must be a number, got {type(threshold).__name__}")
    if not 0 <= threshold < math.inf:
        raise ValueError(f"ste_tern: threshold must be a finite number >= 0, got {threshold!r}")
    return Q.TernarySTE.apply(x, threshold=float(threshold), clip=_positive("ste_tern", "clip", clip))


def ste_heaviside(x, clip=1.0):
    """1 where x > 0, else 0 (so 0 at x = 0); backward g·1{abs(x) <= clip}."""
    _input("ste_heaviside", x)
    return Q.HeavisideSTE.apply(x, clip=_positive("ste_heaviside", "clip", clip))


def stochastic_sign(w, rng):
    """BinaryConnect's stochastic sign: +1 with probability clip((w + 1)/2, 0, 1), else -1, drawn from
    ``rng`` (a numpy Generator: the same seed gives the same signs); backward g·1{abs(w) <= 1}."""
    _input("stochastic_sign", w, "w")
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"stochastic_sign: rng must be a numpy.random.Generator (np.random.default_rng(seed)), "
                        f"got {type(rng).__name__}")
    return Q.StochasticSign.apply(w, rng=rng)


# --- weight quantizers ----------------------------------------------------------------------------
def binarize_weight(w, scale="filter", scale_grad=True):
    """BWN: alpha·sign(w), alpha = mean(abs(w)) per output filter (axis 0; ``scale="filter"``), over
    the whole tensor (``"layer"``) or none (``None``: sign(w), BinaryConnect). Backward (``scale_grad``):
    dw_i = alpha·g_i·1{abs(w_i) <= 1} + sign(w_i)/n·Σ_j g_j·sign(w_j) over w_i's filter (the tensor
    for "layer"), n its size; ``scale_grad=False`` keeps the first term only (alpha a constant)."""
    _input("binarize_weight", w, "w", nonempty=True)
    if scale not in ("filter", "layer", None):
        raise ValueError(f"binarize_weight: scale must be 'filter', 'layer' or None, got {scale!r}")
    if scale == "filter" and w.ndim < 1:
        raise ValueError("binarize_weight: scale='filter' needs a weight with an output axis, got a 0-d tensor")
    if not isinstance(scale_grad, (bool, np.bool_)):
        raise TypeError(f"binarize_weight: scale_grad must be True or False, got {scale_grad!r}")
    return Q.BinarizeWeight.apply(w, scale=scale, scale_grad=bool(scale_grad))


def ternarize_weight(w):
    """TWN, per output filter (axis 0): delta = 0.7·mean(abs(w)); alpha·sign(w) where abs(w) >= delta,
    else 0, alpha = mean(abs(w)) over those kept weights. Backward: alpha and delta are constants and
    the gradient is ste_tern's clipped STE, clip 1: dw = alpha·g·1{abs(w) <= 1}."""
    _input("ternarize_weight", w, "w", nonempty=True)
    if w.ndim < 1:
        raise ValueError("ternarize_weight: w needs an output axis (per-filter threshold), got a 0-d tensor")
    return Q.TernarizeWeight.apply(w)


def dorefa_weight(w, bits):
    """DoReFa-Net weights: bits >= 2: 2·quantize_k(tanh(w)/(2·max abs(tanh(w))) + 1/2) - 1, backward
    g·(1 - tanh(w)^2)/max abs(tanh(w)) (the max a constant); bits = 1: mean(abs(w))·sign(w), backward g."""
    _input("dorefa_weight", w, "w", nonempty=True)
    return Q.DorefaWeight.apply(w, bits=check_bits("dorefa_weight", bits))


# --- activation quantizers ------------------------------------------------------------------------
def dorefa_activation(x, bits):
    """DoReFa-Net activations: round((2^k - 1)·clip(x, 0, 1))/(2^k - 1); backward g·1{0 <= x <= 1}."""
    _input("dorefa_activation", x)
    return Q.DorefaActivation.apply(x, bits=check_bits("dorefa_activation", bits))


def pact(x, alpha, bits):
    """PACT: clip(x, 0, alpha) on the k-bit grid of step alpha/(2^k - 1). ``alpha``: a positive Tensor
    of x's dtype, shape () or per channel like (1, C, 1, 1). Backward: dx = g·1{0 <= x <= alpha},
    dalpha = Σ g·1{x >= alpha} summed to alpha's shape (round passed straight through)."""
    _input("pact", x)
    bits = check_bits("pact", bits)
    return Q.PACT.apply(x, _scale("pact", "alpha", alpha, x), bits=bits)


def lsq_bounds(bits, signed=True):
    """LSQ's integer range (Qn, Qp): (-2^(b-1), 2^(b-1) - 1) signed (bits >= 2), (0, 2^b - 1) unsigned."""
    if signed:
        return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1


def _lsq_bits(op, bits, signed):
    if not isinstance(signed, (bool, np.bool_)):
        raise TypeError(f"{op}: signed must be True or False, got {signed!r}")
    return check_bits(op, bits, 2 if signed else 1)


def lsq(x, step, bits, signed=True):
    """LSQ: round(clip(x/s, Qn, Qp))·s with Qn, Qp from ``lsq_bounds(bits, signed)``; ``step`` s a
    positive Tensor of x's dtype, shape () or per channel like (1, C, 1, 1). Backward: dx =
    g·1{Qn <= x/s <= Qp}; ds = Σ g·(round(x/s) - x/s inside, Qn below, Qp above) summed to step's
    shape, times 1/sqrt(x.size·Qp)."""
    _input("lsq", x, nonempty=True)
    qn, qp = lsq_bounds(_lsq_bits("lsq", bits, signed), bool(signed))
    return Q.LSQ.apply(x, _scale("lsq", "step", step, x), qn=qn, qp=qp)


def lsq_init_step(x, bits, signed=True):
    """LSQ's initial step for the tensor ``x`` (a Tensor or an array): 2·mean(abs(x))/sqrt(Qp), a float."""
    data = x.data if isinstance(x, Tensor) else np.asarray(x)
    if data.dtype.kind != "f" or data.size == 0:
        raise ValueError(f"lsq_init_step: x must be a non-empty float tensor, got {data.dtype} {data.shape}")
    _, qp = lsq_bounds(_lsq_bits("lsq_init_step", bits, signed), bool(signed))
    step = 2 * float(np.abs(data).mean(dtype=np.float64)) / math.sqrt(qp)
    if not 0 < step < math.inf:
        raise ValueError(f"lsq_init_step: 2·mean(abs(x))/sqrt(Qp) = {step!r} is not a usable step "
                         "(x all zero or not finite)")
    return step
