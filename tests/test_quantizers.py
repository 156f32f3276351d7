"""Every quantizer of tinycomp.compress.quantizers through tinycomp.testing.check_quantizer, against
the formulas of METHODS.md written out here in NumPy; BWN's exact gradient against autograd of its
definition; LSQ's and PACT's scale gradients by finite differences; argument refusals."""
import numpy as np
import pytest

from tinycomp import Tensor, functional as F
from tinycomp.compress import quantizers as Q
from tinycomp.testing import check_quantizer, gradcheck


def _sign(x):
    return np.where(x >= 0, 1.0, -1.0)


def _within(x, clip):
    return (np.abs(x) <= clip).astype(np.float64)


def _sum_to(t, shape):
    """t summed to a parameter's shape: () or one axis per axis of t, each 1 or t's size."""
    if shape == ():
        return t.sum()
    return t.sum(axis=tuple(i for i, n in enumerate(shape) if n == 1), keepdims=True)


def _filter_mean_abs(w):
    return np.abs(w).mean(axis=tuple(range(1, w.ndim)), keepdims=True)


def _last(*points):
    """Kink or level positions stacked along a new last axis (each broadcasting against x)."""
    return np.stack(np.broadcast_arrays(*[np.asarray(p, dtype=np.float64) for p in points]), axis=-1)


# --- the sign STEs --------------------------------------------------------------------------------
@pytest.mark.parametrize("clip", [1.0, 0.5, None])
def test_ste_sign(clip):
    c = np.inf if clip is None else clip
    check_quantizer(lambda x: Q.ste_sign(x, clip=clip), pseudo_grad=lambda x, g: g * _within(x, c),
                    surrogate=lambda x: np.clip(x, -c, c), levels=[-1, 1], kinks=[0, -c, c] if clip else [0],
                    idempotent=True, at_zero=1.0)


def test_approx_sign():
    check_quantizer(Q.approx_sign, pseudo_grad=lambda x, g: g * (2 - 2 * np.abs(x)) * _within(x, 1),
                    surrogate=lambda x: np.where(np.abs(x) <= 1, 2 * x - x * np.abs(x), _sign(x)),
                    levels=[-1, 1], kinks=[0, -1, 1], idempotent=True, at_zero=1.0)


@pytest.mark.parametrize("beta", [5.0, 1.5])
def test_swish_sign(beta):
    def sigma(z):
        return 1 / (1 + np.exp(-z))

    check_quantizer(lambda x: Q.swish_sign(x, beta=beta),
                    pseudo_grad=lambda x, g: g * beta * (2 - beta * x * np.tanh(beta * x / 2)) / (1 + np.cosh(beta * x)),
                    surrogate=lambda x: 2 * sigma(beta * x) * (1 + beta * x * (1 - sigma(beta * x))) - 1,
                    levels=[-1, 1], kinks=[0], idempotent=True, at_zero=1.0)


def test_swish_sign_far_from_zero_is_finite():
    x = Tensor(np.array([-1e4, -60.0, 60.0, 1e4], np.float32), requires_grad=True)
    Q.swish_sign(x, beta=5.0).backward(np.ones(4, np.float32))
    assert np.all(np.isfinite(x.grad)) and np.all(x.grad >= 0) and np.all(x.grad < 1e-30)


@pytest.mark.parametrize("threshold, clip", [(0.05, 1.0), (0.5, 1.5), (0.0, 1.0)])
def test_ste_tern(threshold, clip):
    check_quantizer(lambda x: Q.ste_tern(x, threshold=threshold, clip=clip),
                    pseudo_grad=lambda x, g: g * _within(x, clip), surrogate=lambda x: np.clip(x, -clip, clip),
                    levels=[-1, 0, 1] if threshold else [-1, 1],
                    kinks=[0, -threshold, threshold, -clip, clip], idempotent=True,
                    at_zero=0.0 if threshold else 1.0)


def test_ste_tern_dead_zone_is_open():
    x = Tensor(np.array([-0.3, -0.2999, 0.2999, 0.3, 0.0]))
    np.testing.assert_array_equal(Q.ste_tern(x, threshold=0.3).data, [-1, 0, 0, 1, 0])


@pytest.mark.parametrize("clip", [1.0, 2.5])
def test_ste_heaviside(clip):
    check_quantizer(lambda x: Q.ste_heaviside(x, clip=clip), pseudo_grad=lambda x, g: g * _within(x, clip),
                    surrogate=lambda x: np.clip(x, -clip, clip), levels=[0, 1], kinks=[0, -clip, clip],
                    idempotent=True, at_zero=0.0)


def test_stochastic_sign_kit():
    check_quantizer(lambda w: Q.stochastic_sign(w, np.random.default_rng(3)),
                    pseudo_grad=lambda w, g: g * _within(w, 1), surrogate=lambda w: np.clip(w, -1, 1),
                    levels=[-1, 1], kinks=[-1, 1], idempotent=True)


def test_stochastic_sign_probability_and_seed():
    w = np.repeat(np.array([-1.5, -0.6, 0.0, 0.3, 0.9, 2.0], np.float32), 40000).reshape(6, -1)
    q = Q.stochastic_sign(Tensor(w), np.random.default_rng(7)).data
    # E[q] = 2p - 1 = clip(w, -1, 1); 40,000 draws: standard error at most 0.005
    np.testing.assert_allclose(q.mean(axis=1), np.clip(w[:, 0], -1, 1), atol=0.025)
    assert q.dtype == np.float32 and set(np.unique(q)) == {-1.0, 1.0}
    again = Q.stochastic_sign(Tensor(w), np.random.default_rng(7)).data
    np.testing.assert_array_equal(q, again)


# --- weight quantizers ----------------------------------------------------------------------------
def _bwn_alpha(w, scale):
    if scale is None:
        return np.ones((1,) * w.ndim)
    return _filter_mean_abs(w) if scale == "filter" else np.abs(w).mean(keepdims=True)


def _bwn_grad(w, g, scale, scale_grad):
    """METHODS.md's two terms: alpha·g_i·1{|w_i| <= 1} + sign(w_i)/n · Σ_j g_j sign(w_j) (filter or layer)."""
    alpha = _bwn_alpha(w, scale)
    dw = alpha * g * _within(w, 1)
    if scale is not None and scale_grad:
        n = w.size // alpha.size
        sums = (g * _sign(w)).sum(axis=None if scale == "layer" else tuple(range(1, w.ndim)), keepdims=True)
        dw = dw + _sign(w) / n * sums
    return dw


@pytest.mark.parametrize("scale", ["filter", "layer", None])
@pytest.mark.parametrize("scale_grad", [True, False])
@pytest.mark.parametrize("shape", [(4, 3, 2, 2), (5, 6)])
def test_binarize_weight(scale, scale_grad, shape):
    def surrogate(w, at):
        (w0,) = at
        if scale_grad:  # alpha(w)·(sign(w0) + hardtanh(w) - hardtanh(w0)): d alpha/dw_i = sign(w_i)/n
            return _bwn_alpha(w, scale) * (_sign(w0) + np.clip(w, -1, 1) - np.clip(w0, -1, 1))
        return _bwn_alpha(w0, scale) * np.clip(w, -1, 1)

    check_quantizer(lambda w: Q.binarize_weight(w, scale=scale, scale_grad=scale_grad),
                    pseudo_grad=lambda w, g: _bwn_grad(w, g, scale, scale_grad), surrogate=surrogate,
                    levels=lambda w: _last(-_bwn_alpha(w, scale), _bwn_alpha(w, scale)),
                    kinks=[0, -1, 1], idempotent=True, at_zero=lambda w: _bwn_alpha(w, scale), shape=shape)


@pytest.mark.parametrize("scale", ["filter", "layer"])
def test_binarize_weight_is_autograd_of_its_definition(scale):
    """dw equals tinycomp's autograd of alpha(w)·ste_sign(w) with alpha = mean(sqrt(w²)) built from
    ordinary ops; gradcheck confirms that composition on the smooth stand-in
    alpha(w)·(hardtanh(w) + c), c = sign(w0) - hardtanh(w0) a constant (same gradient at w0)."""
    rng = np.random.default_rng(5)
    w0 = rng.uniform(-2, 2, (4, 3, 3, 3))
    w0[np.abs(w0) < 0.01] = 0.5          # off the kink of |w| at 0 and of the clip at ±1
    w0[np.abs(np.abs(w0) - 1) < 0.01] = 0.5
    axis = (1, 2, 3) if scale == "filter" else (0, 1, 2, 3)

    def alpha(w):
        return F.mean(F.pow(w * w, 0.5), axis=axis, keepdims=True)

    g = rng.standard_normal(w0.shape)
    w = Tensor(w0.copy(), requires_grad=True)
    Q.binarize_weight(w, scale=scale).backward(g)
    ref = Tensor(w0.copy(), requires_grad=True)
    (alpha(ref) * Q.ste_sign(ref, clip=1.0)).backward(g)
    np.testing.assert_allclose(w.grad, ref.grad, rtol=1e-12, atol=1e-12)
    c = _sign(w0) - np.clip(w0, -1, 1)
    stand_in = Tensor(w0.copy(), requires_grad=True)
    (alpha(stand_in) * (F.hardtanh(stand_in) + c)).backward(g)
    np.testing.assert_allclose(w.grad, stand_in.grad, rtol=1e-12, atol=1e-12)
    assert gradcheck(lambda t: alpha(t) * (F.hardtanh(t) + c), [w0])
    # the alpha term matters: without it the gradient differs
    w.grad = None
    Q.binarize_weight(w, scale=scale, scale_grad=False).backward(g)
    assert np.abs(w.grad - ref.grad).max() > 1e-3


def _twn(w):
    """delta, kept and alpha of TWN per filter, written out."""
    a = np.abs(w)
    delta = 0.7 * _filter_mean_abs(w)
    kept = a >= delta
    alpha = (a * kept).sum(axis=tuple(range(1, w.ndim)), keepdims=True) / kept.sum(
        axis=tuple(range(1, w.ndim)), keepdims=True)
    return delta, kept, alpha


@pytest.mark.parametrize("shape", [(4, 3, 2, 2), (3, 8)])
def test_ternarize_weight(shape):
    def levels(w):
        alpha = _twn(w)[2]
        return _last(-alpha, 0 * alpha, alpha)

    def kinks(w):
        delta = _twn(w)[0]
        return _last(0, -delta, delta, -1, 1)

    check_quantizer(Q.ternarize_weight, pseudo_grad=lambda w, g: _twn(w)[2] * g * _within(w, 1),
                    surrogate=lambda w, at: _twn(at[0])[2] * np.clip(w, -1, 1), levels=levels, kinks=kinks,
                    idempotent=True, at_zero=0.0, shape=shape)


def test_ternarize_weight_values_and_zero_filter():
    w = np.array([[0.1, -0.5, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0], [0.2, 0.2, -0.2, 0.2]])
    # filter 0: mean |w| = 0.4, delta = 0.28: keeps -0.5 and 1.0, alpha = 0.75; filter 1 all zero: 0
    np.testing.assert_allclose(Q.ternarize_weight(Tensor(w)).data,
                               [[0, -0.75, 0.75, 0], [0, 0, 0, 0], [0.2, 0.2, -0.2, 0.2]])


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_dorefa_weight(bits):
    n = 2**bits - 1

    def m(w):
        return np.abs(np.tanh(w)).max()

    check_quantizer(lambda w: Q.dorefa_weight(w, bits),
                    pseudo_grad=lambda w, g: g * (1 - np.tanh(w) ** 2) / m(w),
                    surrogate=lambda w, at: np.tanh(w) / m(at[0]),   # 2·(tanh/(2m) + 1/2) - 1, m frozen
                    levels=2 * np.arange(n + 1) / n - 1, at_zero=1.0 / n)  # 0 -> round(n/2) = (n+1)/2, even


def test_dorefa_weight_one_bit():
    check_quantizer(lambda w: Q.dorefa_weight(w, 1), pseudo_grad=lambda w, g: g, surrogate=lambda w: w,
                    levels=lambda w: [-np.abs(w).mean(), np.abs(w).mean()], idempotent=True,
                    at_zero=lambda w: np.abs(w).mean())


def test_dorefa_weight_all_zero():
    q = Q.dorefa_weight(Tensor(np.zeros((2, 3), np.float32)), 2).data
    np.testing.assert_allclose(q, np.full((2, 3), 1 / 3), rtol=1e-6)


# --- activation quantizers ------------------------------------------------------------------------
@pytest.mark.parametrize("bits", [1, 2, 4, 8])
def test_dorefa_activation(bits):
    n = 2**bits - 1
    check_quantizer(lambda x: Q.dorefa_activation(x, bits),
                    pseudo_grad=lambda x, g: g * ((x >= 0) & (x <= 1)), surrogate=lambda x: np.clip(x, 0, 1),
                    levels=np.arange(n + 1) / n, kinks=[0, 1], idempotent=True, at_zero=0.0, lo=-0.5, hi=1.5)


@pytest.mark.parametrize("bits", [1, 2, 3, 8])
@pytest.mark.parametrize("alpha_shape", [(), (1, 3, 1, 1)])
def test_pact(bits, alpha_shape):
    n = 2**bits - 1
    check_quantizer(lambda x, a: Q.pact(x, a, bits),
                    pseudo_grad=lambda x, g, a: (g * ((x >= 0) & (x <= a)), _sum_to(g * (x >= a), a.shape)),
                    surrogate=lambda x, a: np.clip(x, 0, a),
                    levels=lambda x, a: a[..., None] * np.arange(n + 1) / n,
                    kinks=lambda x, a: _last(0, a), idempotent=True, at_zero=0.0,
                    params={"alpha": lambda rng: rng.uniform(0.4, 1.5, alpha_shape)}, lo=-0.5, hi=2.0)


@pytest.mark.parametrize("bits, signed", [(2, True), (3, True), (8, True), (1, False), (2, False), (4, False)])
@pytest.mark.parametrize("step_shape", [(), (1, 3, 1, 1)])
def test_lsq(bits, signed, step_shape):
    qn, qp = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    edges = np.concatenate([[qn, qp], np.arange(qn, qp) + 0.5])   # clip bounds and rounding edges in x/s
    shape = (4, 3, 2, 2)
    gscale = 1 / np.sqrt(np.prod(shape) * qp)

    def pseudo_grad(x, g, s):
        u = x / s
        inside = (u >= qn) & (u <= qp)
        ds = np.where(u < qn, qn, np.where(u > qp, qp, np.rint(u) - u))
        return g * inside, _sum_to(g * ds, s.shape) * gscale

    def surrogate(x, s, at):
        """About (x0, s0), rounding residual r0 = round(u0) - u0 frozen, the step seen as
        s0 + G·(s - s0) so that its derivative carries the gradient scale G."""
        x0, s0 = at
        u0 = x0 / s0
        s_eff = s0 + gscale * (s - s0)
        return np.where(u0 < qn, qn * s_eff, np.where(u0 > qp, qp * s_eff, x + (np.rint(u0) - u0) * s_eff))

    lo = (qn - 1.5) * 0.5 if signed else -0.5
    check_quantizer(lambda x, s: Q.lsq(x, s, bits, signed=signed), pseudo_grad=pseudo_grad, surrogate=surrogate,
                    levels=lambda x, s: s[..., None] * np.arange(qn, qp + 1), kinks=lambda x, s: s[..., None] * edges,
                    idempotent=True, at_zero=0.0, shape=shape, lo=lo, hi=(qp + 1.5) * 0.5,
                    params={"step": lambda rng: rng.uniform(0.2, 0.5, step_shape)})


def test_lsq_step_gradient_scale_uses_the_tensor_size():
    x = Tensor(np.array([[0.26, -3.0, 0.9, 0.5]]), requires_grad=False)
    s = Tensor(np.array(0.5), requires_grad=True)
    Q.lsq(x, s, 3).backward(np.ones((1, 4)))     # Qn, Qp = -4, 3: u = 0.52, -6, 1.8, 1.0
    expected = ((1 - 0.52) + -4 + (2 - 1.8) + 0) / np.sqrt(4 * 3)
    np.testing.assert_allclose(s.grad, expected, rtol=1e-12)


def test_lsq_init_step():
    x = np.array([[1.0, -3.0], [0.5, -0.5]], np.float32)
    assert Q.lsq_init_step(Tensor(x), 3) == pytest.approx(2 * 1.25 / np.sqrt(3))
    assert Q.lsq_init_step(x, 2, signed=False) == pytest.approx(2 * 1.25 / np.sqrt(3))
    assert isinstance(Q.lsq_init_step(x, 4), float)
    with pytest.raises(ValueError, match=r"lsq_init_step: .*x all zero"):
        Q.lsq_init_step(np.zeros(3), 4)
    with pytest.raises(ValueError, match=r"lsq_init_step: bits must be an int in 2..8, got 1"):
        Q.lsq_init_step(x, 1)


def test_dtypes_and_non_contiguous_float32():
    rng = np.random.default_rng(0)
    big = rng.standard_normal((8, 6, 4, 4)).astype(np.float32)
    x = Tensor(big[::2, :, ::2], requires_grad=True)
    a = Tensor(np.full((1, 6, 1, 1), 0.7, np.float32), requires_grad=True)
    s = Tensor(np.float32(0.3), requires_grad=True)
    for q in (Q.ste_sign(x), Q.approx_sign(x), Q.swish_sign(x), Q.ste_tern(x), Q.ste_heaviside(x),
              Q.binarize_weight(x), Q.ternarize_weight(x), Q.dorefa_weight(x, 3), Q.dorefa_activation(x, 3),
              Q.pact(x, a, 3), Q.lsq(x, s, 3), Q.stochastic_sign(x, rng)):
        assert q.dtype == np.float32 and q.shape == x.shape
        q.backward(np.ones(q.shape, np.float32))
    assert x.grad.dtype == a.grad.dtype == s.grad.dtype == np.float32
    assert a.grad.shape == (1, 6, 1, 1) and s.grad.shape == ()


# --- refusals -------------------------------------------------------------------------------------
_X = Tensor(np.zeros((2, 3, 4, 4), np.float32))
_A = Tensor(np.ones((), np.float32))

REFUSALS = [
    (lambda: Q.ste_sign(np.zeros(3)), TypeError, r"ste_sign: x must be a Tensor, got ndarray"),
    (lambda: Q.ste_sign(Tensor(np.zeros(3, np.int64))), TypeError, r"ste_sign: x must be floating point"),
    (lambda: Q.ste_sign(Tensor(np.zeros(3, np.float16))), TypeError, r"ste_sign: x must be float32 or float64"),
    (lambda: Q.ste_sign(_X, clip=0), ValueError, r"ste_sign: clip must be a positive finite number, got 0"),
    (lambda: Q.ste_sign(_X, clip=-1.0), ValueError, r"ste_sign: clip must be a positive"),
    (lambda: Q.ste_sign(_X, clip="1"), TypeError, r"ste_sign: clip must be a number"),
    (lambda: Q.ste_heaviside(_X, clip=float("nan")), ValueError, r"ste_heaviside: clip must be a positive"),
    (lambda: Q.ste_tern(_X, threshold=-0.1), ValueError, r"ste_tern: threshold must be a finite number >= 0"),
    (lambda: Q.ste_tern(_X, clip=0.0), ValueError, r"ste_tern: clip must be a positive"),
    (lambda: Q.swish_sign(_X, beta=0), ValueError, r"swish_sign: beta must be a positive"),
    (lambda: Q.approx_sign([1.0]), TypeError, r"approx_sign: x must be a Tensor"),
    (lambda: Q.stochastic_sign(_X, 0), TypeError, r"stochastic_sign: rng must be a numpy.random.Generator"),
    (lambda: Q.binarize_weight(_X, scale="channel"), ValueError, r"binarize_weight: scale must be 'filter', 'layer' or None"),
    (lambda: Q.binarize_weight(_X, scale_grad=1), TypeError, r"binarize_weight: scale_grad must be True or False"),
    (lambda: Q.binarize_weight(Tensor(np.zeros((0, 3), np.float32))), ValueError, r"binarize_weight: w must not be empty"),
    (lambda: Q.ternarize_weight(Tensor(np.float32(1))), ValueError, r"ternarize_weight: w needs an output axis"),
    (lambda: Q.dorefa_weight(_X, 0), ValueError, r"dorefa_weight: bits must be an int in 1..8, got 0"),
    (lambda: Q.dorefa_weight(_X, 9), ValueError, r"dorefa_weight: bits must be an int in 1..8, got 9"),
    (lambda: Q.dorefa_activation(_X, 2.0), TypeError, r"dorefa_activation: bits must be an int, got 2.0"),
    (lambda: Q.dorefa_activation(_X, True), TypeError, r"dorefa_activation: bits must be an int"),
    (lambda: Q.pact(_X, 1.0, 2), TypeError, r"pact: alpha must be a Tensor, got float"),
    (lambda: Q.pact(_X, Tensor(np.float32(0)), 2), ValueError, r"pact: alpha must be positive and finite"),
    (lambda: Q.pact(_X, Tensor(np.float32(-1)), 2), ValueError, r"pact: alpha must be positive"),
    (lambda: Q.pact(_X, Tensor(np.ones(3, np.float32)), 2), ValueError,
     r"pact: alpha must have shape \(\) or 4 axes each 1 or x's size \(e.g. \(1, 3, 1, 1\) per channel\), got \(3,\)"),
    (lambda: Q.pact(_X, Tensor(np.ones((1, 2, 1, 1), np.float32)), 2), ValueError, r"pact: alpha must have shape"),
    (lambda: Q.pact(_X, Tensor(np.ones((), np.float64)), 2), TypeError, r"pact: alpha must have x's dtype float32"),
    (lambda: Q.pact(_X, _A, 9), ValueError, r"pact: bits must be an int in 1..8"),
    (lambda: Q.lsq(_X, _A, 1), ValueError, r"lsq: bits must be an int in 2..8, got 1"),
    (lambda: Q.lsq(_X, _A, 9, signed=False), ValueError, r"lsq: bits must be an int in 1..8, got 9"),
    (lambda: Q.lsq(_X, _A, 4, signed="yes"), TypeError, r"lsq: signed must be True or False"),
    (lambda: Q.lsq(_X, Tensor(np.float32(np.inf)), 4), ValueError, r"lsq: step must be positive and finite"),
    (lambda: Q.lsq(_X, Tensor(np.ones((1, 3, 4, 4, 1), np.float32)), 4), ValueError, r"lsq: step must have shape"),
    (lambda: Q.lsq(_X, np.float32(0.1), 4), TypeError, r"lsq: step must be a Tensor"),
    (lambda: Q.lsq(Tensor(np.zeros(0, np.float32)), _A, 4), ValueError, r"lsq: x must not be empty"),
]


@pytest.mark.parametrize("call, exc, match", REFUSALS)
def test_refusals(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_numpy_ints_and_bools_accepted():
    y = Q.lsq(_X, _A, np.int64(4), signed=np.bool_(False))
    assert y.dtype == np.float32


def test_masks_are_closed_at_the_bounds():
    """The stated indicators include their bounds: 1{abs(x) <= clip}, 1{0 <= x <= alpha} and
    1{x >= alpha} (both at x = alpha), 1{Qn <= x/s <= Qp}."""
    x = Tensor(np.array([-1.0, 1.0, 1.0000001]), requires_grad=True)
    Q.ste_sign(x).backward(np.ones(3))
    np.testing.assert_array_equal(x.grad, [1, 1, 0])
    x = Tensor(np.array([0.0, 0.75, 0.7499]), requires_grad=True)
    a = Tensor(np.array(0.75), requires_grad=True)
    Q.pact(x, a, 2).backward(np.array([1.0, 2.0, 4.0]))
    np.testing.assert_array_equal(x.grad, [1, 2, 4])
    assert a.grad == 2.0
    x = Tensor(np.array([-1.0, 0.75, 0.7501]), requires_grad=True)    # s = 0.25, Qn, Qp = -4, 3
    s = Tensor(np.array(0.25), requires_grad=True)
    Q.lsq(x, s, 3).backward(np.ones(3))
    np.testing.assert_array_equal(x.grad, [1, 1, 0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kernel_path_equals_numpy_path(monkeypatch, dtype):
    """Above functional.quantize.KERNEL_MIN_SIZE the ops call tinycomp_kernels.quantize; below, NumPy.
    Both give the same outputs and dx exactly, and the same scale gradients up to summation order."""
    from tinycomp.functional import quantize as FQ

    rng = np.random.default_rng(2)
    x0 = (rng.standard_normal((4, 3, 64, 64)) * 1.5).astype(dtype)
    x0.flat[:7] = [0.0, -0.0, 0.5, 1.0, -1.0, 0.3, 0.6]
    g = rng.standard_normal(x0.shape).astype(dtype)
    ops = {"ste_sign": lambda x: Q.ste_sign(x), "ste_tern": lambda x: Q.ste_tern(x),
           "approx_sign": Q.approx_sign, "dorefa_activation": lambda x: Q.dorefa_activation(x, 2),
           "pact": lambda x, a: Q.pact(x, a, 3), "lsq": lambda x, s: Q.lsq(x, s, 4, signed=False)}
    scales = {"pact": np.array(0.9, dtype), "lsq": np.array(0.3, dtype)}

    def run(op):
        x = Tensor(x0, requires_grad=True)
        p = [Tensor(scales[op].copy(), requires_grad=True)] if op in scales else []
        y = ops[op](x, *p)
        y.backward(g)
        return y.data, x.grad, [t.grad for t in p]

    assert x0.size >= FQ.KERNEL_MIN_SIZE
    fast = {op: run(op) for op in ops}
    monkeypatch.setattr(FQ, "KERNEL_MIN_SIZE", 10**12)
    for op in ops:
        y, dx, dp = run(op)
        np.testing.assert_array_equal(fast[op][0], y, err_msg=op)
        np.testing.assert_array_equal(fast[op][1], dx, err_msg=op)
        for a, b in zip(fast[op][2], dp):
            np.testing.assert_allclose(a, b, rtol=1e-4 if dtype == np.float32 else 1e-10, err_msg=op)


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("n", [100, 1 << 15])  # the NumPy path and the kernel path
def test_dorefa_float32_equals_the_formula_at_ties(bits, n):
    """quantize_k(r) = round((2^k - 1)·r)/(2^k - 1) in float32 too: r = 0.5 (a zero weight, an input of 0.5)
    is an exact tie, rounded half to even, never a level lower."""
    levels = np.float32(2**bits - 1)
    rng = np.random.default_rng(bits)
    x = rng.uniform(-0.2, 1.2, n).astype(np.float32)
    x[:10] = 0.5
    want = np.rint(np.clip(x, 0, 1) * levels) / levels
    np.testing.assert_array_equal(Q.dorefa_activation(Tensor(x), bits).data, want)
    w = np.zeros(n, np.float32)
    np.testing.assert_array_equal(Q.dorefa_weight(Tensor(w), bits).data, 2 * np.rint(levels * np.float32(0.5)) / levels - 1)
