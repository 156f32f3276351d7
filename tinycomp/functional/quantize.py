"""Quantizers and their straight-through estimators (STE): one Function per method.

Each forward is a step function (sign, a dead zone, round) and each backward a chosen
pseudo-gradient: the derivative of a smooth surrogate, not of the step. The formulas are those of
docs/methods.md (the section is named in each docstring); ``tinycomp.testing.check_quantizer``
checks every one against its formula and its surrogate (tests/test_quantizers.py).

Conventions:
    sign(x) = +1 if x >= 0 else -1, so sign(0) = sign(-0.0) = +1 (a NaN gives -1 and no gradient).
    round = np.rint, half to even like torch.round: 0.5 -> 0, 1.5 -> 2, 2.5 -> 2.
    Clip masks are closed, 1{abs(x) <= clip}: the gradient passes at the bound (as hardtanh's).
    A "filter" is one output channel of a weight, W[o] (axis 0; the other axes reduced), n = W[o].size.
    g (``dout``) is dL/d(output). Any shape; float32 stays float32 and float64 float64 throughout.
These take NumPy arrays; the public wrappers that check Tensor arguments are
``tinycomp.compress.quantizers`` (``ste_sign``, ``binarize_weight``, ``lsq``, ...).
"""
import numpy as np

from tinycomp_kernels import quantize as K

from ..autograd import Function, unbroadcast


# From this many elements the one-pass kernels of tinycomp_kernels.quantize beat NumPy's several passes
# (their fixed cost, waking the threads, is ~20 us); below it NumPy's lower cost per call wins. Both
# paths give the same values (benchmarks/bench_quantize.py times them side by side).
KERNEL_MIN_SIZE = 1 << 14


def _sign(x):
    """sign(x) in x's dtype with sign(0) = +1."""
    if x.size >= KERNEL_MIN_SIZE:
        return K.sign(x)
    one = x.dtype.type(1)
    return np.where(x >= 0, one, -one)


def _pass_within(dout, x, clip):
    """dout · 1{abs(x) <= clip}, the hardtanh STE, as a new array; clip None: dout itself (identity)."""
    if clip is None:
        return dout
    return _pass_between(dout, x, -clip, clip)


def _pass_between(dout, x, lo, hi):
    """dout · 1{lo <= x <= hi} as a new array (lo, hi scalars)."""
    if x.size >= KERNEL_MIN_SIZE:
        return K.clip_backward(dout, x, lo, hi)[0]
    return np.where((x >= lo) & (x <= hi), dout, dout.dtype.type(0))


def _round_to_grid(x, step, qn, qp):
    """round(clip(x / step, qn, qp))·step: the integer grid qn..qp scaled by step (broadcast to x)."""
    if x.size >= KERNEL_MIN_SIZE and np.size(step) == 1:
        return K.round_to_grid(x, np.asarray(step).item(), qn, qp)
    v = x / step
    np.clip(v, qn, qp, out=v)
    np.rint(v, out=v)
    v *= step
    return v


def _quantize_unit(r, bits):
    """DoReFa's quantize_k(r) = round((2^k - 1)·r) / (2^k - 1), r clipped to [0, 1] first. Multiplied
    by the integer 2^k - 1, not divided by a rounded 1/(2^k - 1): an exact tie (r = 0.5) stays a tie."""
    levels = 2**bits - 1
    if r.size >= KERNEL_MIN_SIZE:
        return K.round_to_levels(r, levels)
    n = r.dtype.type(levels)
    v = r * n
    np.clip(v, 0, n, out=v)
    np.rint(v, out=v)
    v /= n
    return v


def _filter_axes(w):
    """All axes of a weight but the first (output channels): the axes one filter spans."""
    return tuple(range(1, w.ndim))


class _ClippedSTE(Function):
    """The backward shared by the STEs below whose pseudo-gradient is hardtanh's: dx = g·1{abs(x) <= clip}
    (clip from ``ctx.clip``; None: dx = g). Subclasses define forward, saving x and setting ctx.clip."""

    @staticmethod
    def backward(ctx, dout):
        (x,) = ctx.saved
        return _pass_within(dout, x, ctx.clip)


class SignSTE(_ClippedSTE):
    """Binarisation with the clipped straight-through estimator (BinaryConnect, BNN).

    Shapes: x any -> q of x's shape and dtype, values in {-1, +1}.
    Forward:  q = sign(x), sign(0) = +1.
    Backward: dx = g · 1{abs(x) <= clip}; clip None: dx = g (the plain identity STE).
    Surrogate: hardtanh clipped at ±clip (the identity when clip is None).
    Paper: Courbariaux, Bengio, David, BinaryConnect, NeurIPS 2015; Hubara et al., BNN, NeurIPS 2016.
    docs/methods.md: "Sign and straight-through estimators", "BinaryConnect (BC)".
    """

    @staticmethod
    def forward(ctx, x, clip=1.0):
        ctx.save_for_backward(x)
        ctx.clip = clip
        return _sign(x)


class StochasticSign(_ClippedSTE):
    """BinaryConnect's stochastic binarisation.

    Shapes: w any -> q of w's shape and dtype, values in {-1, +1}.
    Forward:  q = +1 with probability p = clip((w + 1) / 2, 0, 1), else -1: q = +1 where u < p for
              u ~ U[0, 1) drawn from ``rng`` (a numpy Generator, so a run is reproducible).
    Backward: dw = g · 1{abs(w) <= 1}, as the deterministic sign.
    Surrogate: hardtanh (E[q] = clip(w, -1, 1), whose derivative this is).
    Paper: Courbariaux, Bengio, David, BinaryConnect, NeurIPS 2015.
    docs/methods.md: "BinaryConnect (BC)".
    """

    @staticmethod
    def forward(ctx, w, rng=None):
        ctx.save_for_backward(w)
        ctx.clip = 1.0
        p = w + 1                       # (w + 1) / 2 < u  <=>  w + 1 < 2u: one temporary, no clip
        u = rng.random(w.shape, dtype=w.dtype)
        u *= 2                          # clipping p is not needed: u in [0, 1) decides the same
        one = w.dtype.type(1)
        return np.where(u < p, one, -one)


class ApproxSign(Function):
    """Bi-Real Net's piecewise-polynomial approximation of sign's derivative.

    Shapes: x any -> q of x's shape and dtype, values in {-1, +1}.
    Forward:  q = sign(x), sign(0) = +1.
    Backward: dx = g · (2 - 2·abs(x)) · 1{abs(x) <= 1} = g · max(2 - 2·abs(x), 0).
    Surrogate: F(x) = 2x - x·abs(x) on [-1, 1], ±1 outside.
    Paper: Liu et al., Bi-Real Net, ECCV 2018.
    docs/methods.md: "Sign and straight-through estimators".
    """

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return _sign(x)

    @staticmethod
    def backward(ctx, dout):
        (x,) = ctx.saved
        d = np.abs(x)
        d *= -2
        d += 2
        np.maximum(d, 0, out=d)         # 2 - 2|x| <= 0 exactly where |x| >= 1: the indicator
        d *= dout
        return d


class SwishSign(Function):
    """The SignSwish estimator of BNN+ (sign forward, derivative of a scaled swish backward).

    Shapes: x any -> q of x's shape and dtype, values in {-1, +1}.
    Forward:  q = sign(x), sign(0) = +1.
    Backward: dx = g · beta·(2 - beta·x·tanh(beta·x/2)) / (1 + cosh(beta·x)).
              Computed from e = exp(-beta·abs(x)) (the formula is even in x), with
              tanh(u/2) = (1 - e)/(1 + e) and 1/(1 + cosh u) = 2e/(1 + e)^2, so nothing overflows.
    Surrogate: F(x) = 2·σ(beta·x)·(1 + beta·x·(1 - σ(beta·x))) - 1.
    Paper: Darabi et al., BNN+: Improved Binary Network Training, 2018.
    docs/methods.md: "Sign and straight-through estimators".
    """

    @staticmethod
    def forward(ctx, x, beta=5.0):
        ctx.save_for_backward(x)
        ctx.beta = beta
        return _sign(x)

    @staticmethod
    def backward(ctx, dout):
        (x,) = ctx.saved
        beta = ctx.beta
        u = np.abs(x)
        u *= beta                       # u = beta·|x|
        e = np.exp(-u)                  # e in (0, 1]
        d = e + 1
        t = 1 - e
        t /= d                          # tanh(u / 2)
        t *= u
        np.subtract(2, t, out=t)        # 2 - u·tanh(u / 2)
        e *= 2 * beta
        e /= d
        e /= d                          # beta / (1 + cosh u)
        t *= e
        t *= dout
        return t


class TernarySTE(_ClippedSTE):
    """Ternarisation with a dead zone and the clipped straight-through estimator.

    Shapes: x any -> q of x's shape and dtype, values in {-1, 0, +1}.
    Forward:  q = 0 where abs(x) < threshold, else sign(x) (so threshold 0 is sign).
    Backward: dx = g · 1{abs(x) <= clip}.
    Surrogate: hardtanh clipped at ±clip (only its derivative is the reference).
    Paper: Li, Zhang, Liu, Ternary Weight Networks, 2016 (the threshold rule is TernarizeWeight's).
    docs/methods.md: "Sign and straight-through estimators".
    """

    @staticmethod
    def forward(ctx, x, threshold=0.05, clip=1.0):
        ctx.save_for_backward(x)
        ctx.clip = clip
        q = _sign(x)
        q[np.abs(x) < threshold] = 0
        return q


class HeavisideSTE(_ClippedSTE):
    """The unit step with the clipped straight-through estimator (binary {0, 1} activations).

    Shapes: x any -> q of x's shape and dtype, values in {0, 1}.
    Forward:  q = 1 if x > 0 else 0 (so q(0) = 0).
    Backward: dx = g · 1{abs(x) <= clip}.
    Surrogate: hardtanh clipped at ±clip (only its derivative is the reference).
    docs/methods.md: "Sign and straight-through estimators".
    """

    @staticmethod
    def forward(ctx, x, clip=1.0):
        ctx.save_for_backward(x)
        ctx.clip = clip
        return (x > 0).astype(x.dtype)


class BinarizeWeight(Function):
    """Binary Weight Network: w ≈ alpha·sign(w), with the exact gradient through alpha.

    Shapes: w (O, ...) -> q of w's shape and dtype; alpha (O, 1, ..., 1) for scale "filter" (one
    per output filter, the mean over its n = w[o].size weights), (1, ..., 1) for "layer" (n = w.size),
    none for scale None (then q = sign(w): BinaryConnect).
    Forward:  q = alpha·sign(w), alpha = mean(abs(w)) over the filter (or the layer).
    Backward (exact autograd of alpha(w)·ste_sign(w), ste_sign with clip 1):
              dw_i = alpha·g_i·1{abs(w_i) <= 1} + sign(w_i)/n · Σ_j g_j·sign(w_j)   (j over the filter of i).
              scale_grad False: alpha is a constant, first term only.
    Surrogate: alpha(w)·(sign(w0) + hardtanh(w) - hardtanh(w0)) about the point w0 (d alpha / dw_i =
               sign(w_i)/n away from w_i = 0).
    Paper: Rastegari et al., XNOR-Net, ECCV 2016.
    docs/methods.md: "Binary Weight Networks (BWN)".
    """

    @staticmethod
    def forward(ctx, w, scale="filter", scale_grad=True):
        s = _sign(w)
        alpha = None
        if scale is not None:
            axes = _filter_axes(w) if scale == "filter" else None
            alpha = np.abs(w).mean(axis=axes, keepdims=True)   # (O, 1, ..) or (1, .., 1)
        ctx.save_for_backward(w, s, alpha)
        ctx.scale, ctx.scale_grad = scale, scale_grad
        return s if alpha is None else s * alpha

    @staticmethod
    def backward(ctx, dout):
        w, s, alpha = ctx.saved
        dw = _pass_within(dout, w, 1.0)
        if alpha is None:
            return dw
        dw *= alpha
        if ctx.scale_grad:
            axes = _filter_axes(w) if ctx.scale == "filter" else None
            n = w.dtype.type(w.size // alpha.size)
            t = np.multiply(dout, s)
            t = t.sum(axis=axes, keepdims=True)                 # Σ_j g_j·sign(w_j) per filter
            t /= n
            dw += s * t
        return dw


class TernarizeWeight(Function):
    """Ternary Weight Network: w ≈ alpha·t(w) with t in {-1, 0, +1} and a per-filter threshold.

    Shapes: w (O, ...) -> q of w's shape and dtype; delta and alpha (O, 1, ..., 1), per output filter.
    Forward:  delta = 0.7·mean(abs(w)) over the filter; kept = abs(w) >= delta (TernarySTE's rule,
              zero where abs < threshold); alpha = mean(abs(w)) over the kept weights of the filter;
              q = alpha·sign(w) where kept, else 0. alpha is taken over the same kept set (docs'
              abs(W) > delta differs only on exact ties): at least one weight is kept (max >= mean >=
              delta), so an all-zero filter, whose weights are all kept, gets alpha = 0, not 0/0.
    Backward: alpha (and delta) are constants: dw = alpha·g·1{abs(w) <= 1} (ste_tern's clipped STE
              with clip 1, times the constant scale).
    Surrogate: alpha(w0)·hardtanh(w) about the point w0.
    Paper: Li, Zhang, Liu, Ternary Weight Networks, 2016.
    docs/methods.md: "Sign and straight-through estimators" (ste_tern), "Ternary weights (TWN)".
    """

    @staticmethod
    def forward(ctx, w):
        axes = _filter_axes(w)
        a = np.abs(w)
        delta = a.mean(axis=axes, keepdims=True)
        delta *= 0.7                                            # (O, 1, ..): the threshold
        kept = a >= delta
        count = kept.sum(axis=axes, keepdims=True).astype(w.dtype)
        a *= kept
        alpha = a.sum(axis=axes, keepdims=True)
        alpha /= count                                          # (O, 1, ..): mean |w| over the kept
        q = _sign(w)
        q *= kept
        q *= alpha
        ctx.save_for_backward(w, alpha)
        return q

    @staticmethod
    def backward(ctx, dout):
        w, alpha = ctx.saved
        dw = _pass_within(dout, w, 1.0)
        dw *= alpha
        return dw


class DorefaWeight(Function):
    """DoReFa-Net's k-bit weights.

    Shapes: w any (non-empty) -> q of w's shape and dtype.
    Forward:  k >= 2: q = 2·quantize_k(tanh(w) / (2·m) + 1/2) - 1, m = max(abs(tanh(w))) over the whole
              tensor, quantize_k(r) = round((2^k - 1)·r) / (2^k - 1): levels 2i/(2^k - 1) - 1.
              k = 1: q = mean(abs(w))·sign(w) (one scale for the tensor).
    Backward: straight through round, m (and the k = 1 mean) constants:
              k >= 2: dw = g·(1 - tanh(w)^2) / m;  k = 1: dw = g (the paper's eq. 7, no clip).
    Surrogate: k >= 2: tanh(w)/m about the point w0 (m frozen there); k = 1: the identity.
    Paper: Zhou et al., DoReFa-Net, 2016.
    docs/methods.md: "DoReFa".
    """

    @staticmethod
    def forward(ctx, w, bits=2):
        ctx.bits = bits
        if bits == 1:
            return _sign(w) * np.abs(w).mean()
        t = np.tanh(w)
        m = np.abs(t).max()
        m = m if m > 0 else w.dtype.type(1)   # w all zero: tanh(w) = 0 whatever m divides it
        ctx.save_for_backward(t, m)
        r = t / (2 * m)
        r += 0.5
        q = _quantize_unit(r, bits)
        q *= 2
        q -= 1
        return q

    @staticmethod
    def backward(ctx, dout):
        if ctx.bits == 1:
            return dout
        t, m = ctx.saved
        d = t * t
        np.subtract(1, d, out=d)
        d /= m
        d *= dout
        return d


class DorefaActivation(Function):
    """DoReFa-Net's k-bit activations: quantize_k of the input clipped to [0, 1].

    Shapes: x any -> q of x's shape and dtype, values i/(2^k - 1), i = 0 .. 2^k - 1.
    Forward:  q = round((2^k - 1)·clip(x, 0, 1)) / (2^k - 1) (round half to even).
    Backward: dx = g · 1{0 <= x <= 1} (straight through round).
    Surrogate: clip(x, 0, 1).
    Paper: Zhou et al., DoReFa-Net, 2016.
    docs/methods.md: "DoReFa".
    """

    @staticmethod
    def forward(ctx, x, bits=2):
        ctx.save_for_backward(x)
        return _quantize_unit(x, bits)

    @staticmethod
    def backward(ctx, dout):
        (x,) = ctx.saved
        return _pass_between(dout, x, 0, 1)


class PACT(Function):
    """PACT: a clip at a learned bound alpha, then k-bit linear quantization of [0, alpha].

    Shapes: x any; alpha () or broadcastable to x without growing it (e.g. (1, C, 1, 1) per channel),
    alpha > 0 -> q of x's shape and dtype; dalpha of alpha's shape.
    Forward:  y = clip(x, 0, alpha); q = round(y / step)·step, step = alpha / (2^k - 1).
    Backward: straight through round:
              dx = g · 1{0 <= x <= alpha};  dalpha = Σ g · 1{x >= alpha}, summed to alpha's shape.
    Surrogate: clip(x, 0, alpha) in both x and alpha.
    Paper: Choi et al., PACT: Parameterized Clipping Activation, 2018.
    docs/methods.md: "PACT".
    """

    @staticmethod
    def forward(ctx, x, alpha, bits=2):
        ctx.save_for_backward(x, alpha)
        levels = 2**bits - 1           # clip(x, 0, alpha) / step = clip(x / step, 0, 2^k - 1)
        return _round_to_grid(x, alpha / x.dtype.type(levels), 0, levels)

    @staticmethod
    def backward(ctx, dout):
        x, alpha = ctx.saved
        if x.size >= KERNEL_MIN_SIZE and alpha.size == 1:
            dx, above = K.clip_backward(dout, x, 0, alpha.item())
            return dx, np.full(alpha.shape, above, alpha.dtype)
        zero = dout.dtype.type(0)
        dx = np.where((x >= 0) & (x <= alpha), dout, zero)
        dalpha = unbroadcast(np.where(x >= alpha, dout, zero), alpha.shape)
        return dx, dalpha


class LSQ(Function):
    """Learned Step Size Quantization.

    Shapes: x any (non-empty); step () or broadcastable to x without growing it (e.g. (1, C, 1, 1)),
    step > 0 -> v of x's shape and dtype; dstep of step's shape.
    Forward:  v = round(clip(x / s, Qn, Qp))·s; signed: Qn, Qp = -2^(b-1), 2^(b-1) - 1;
              unsigned: Qn, Qp = 0, 2^b - 1.
    Backward: straight through round, with u = x / s:
              dx = g · 1{Qn <= u <= Qp};
              ds = Σ g · (round(u) - u inside, Qn below, Qp above) · G, summed to step's shape,
              G = 1 / sqrt(x.size · Qp) the gradient scale (x.size: elements of the quantized tensor).
    Surrogate: about the point (x0, s0), with the rounding residual r0 = round(x0/s0) - x0/s0 frozen:
              x + r0·s inside, Qn·s below, Qp·s above, with s read as s0 + G·(s - s0). No one
              function serves everywhere: d/dx of ds's factor round(u) - u is -1/s, while dx does
              not depend on s.
    Paper: Esser et al., Learned Step Size Quantization, ICLR 2020.
    docs/methods.md: "LSQ".
    """

    @staticmethod
    def forward(ctx, x, step, qn=-2, qp=1):
        ctx.save_for_backward(x, step)
        ctx.qn, ctx.qp = qn, qp
        return _round_to_grid(x, step, qn, qp)

    @staticmethod
    def backward(ctx, dout):
        x, step = ctx.saved
        qn, qp = ctx.qn, ctx.qp
        gscale = step.dtype.type(1 / np.sqrt(x.size * qp))
        if x.size >= KERNEL_MIN_SIZE and step.size == 1:
            dx, dstep = K.lsq_backward(dout, x, step.item(), qn, qp)
            return dx, np.full(step.shape, dstep * gscale, step.dtype)
        u = x / step
        inside = (u >= qn) & (u <= qp)
        zero = dout.dtype.type(0)
        dx = np.where(inside, dout, zero)
        r = np.clip(u, qn, qp)
        np.rint(r, out=r)               # Qn / Qp outside, round(u) inside ...
        u *= inside
        r -= u                          # ... minus u inside
        r *= dout
        dstep = unbroadcast(r, step.shape)
        dstep = dstep * gscale
        return dx, dstep
