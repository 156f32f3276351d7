"""Public helpers for users' own tests: gradient checks, STE checks and hypothesis strategies.

    from tinycomp.testing import gradcheck
    gradcheck(lambda x, w: F.conv2d(x, w, padding=1), [x64, w64])

``gradcheck`` compares the autograd backward with float64 central differences over *every*
element, contracting the output with a random cotangent v (so a wrong sign or a transposed
gradient cannot hide behind a sum). ``check_quantizer`` property-checks a quantizer and its
straight-through estimator (grid, idempotence, sign(0), backward against the stated pseudo-gradient
and against the smooth surrogate's finite differences). It and the strategies need ``hypothesis``
(extra ``testing``).
"""
import inspect

import numpy as np

from .tensor import Tensor


def _as_float64_tensors(inputs):
    tensors = []
    for x in inputs:
        data = x.data if isinstance(x, Tensor) else np.asarray(x)
        if data.dtype != np.float64:
            raise TypeError(f"gradcheck: inputs must be float64 for finite differences, got {data.dtype}")
        tensors.append(Tensor(data.copy(), requires_grad=True))
    return tensors


def numerical_grads(fn, inputs, cotangent, eps=1e-6):
    """Central differences of ``sum(fn(*inputs) * cotangent)`` w.r.t. every element of every input."""
    arrays = [x.data.copy() for x in inputs]
    return _central_differences(lambda: float(np.sum(fn(*[Tensor(a) for a in arrays]).data * cotangent)),
                                arrays, eps)


def _central_differences(value, arrays, eps):
    """(value(a + eps·e_i) - value(a - eps·e_i)) / (2 eps) for every element i of every array a in
    ``arrays``; ``value()`` reads the arrays, which are perturbed in place and restored."""
    grads = []
    for a in arrays:
        g = np.zeros_like(a)
        for idx in np.ndindex(a.shape):
            saved = a[idx]
            a[idx] = saved + eps
            plus = value()
            a[idx] = saved - eps
            minus = value()
            a[idx] = saved
            g[idx] = (plus - minus) / (2 * eps)
        grads.append(g)
    return grads


def gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-4, seed=0, check=None):
    """Assert that autograd's gradients of ``fn`` match central differences.

    ``fn`` takes Tensors and returns a Tensor; ``inputs`` are float64 arrays or Tensors;
    ``check`` optionally lists which inputs to differentiate (default: all). Returns True or
    raises AssertionError naming the input and the worst element.
    """
    tensors = _as_float64_tensors(inputs)
    out = fn(*tensors)
    cotangent = np.random.default_rng(seed).standard_normal(out.shape)
    out.backward(cotangent)
    numeric = numerical_grads(fn, tensors, cotangent, eps)
    for i, (t, num) in enumerate(zip(tensors, numeric)):
        if check is not None and i not in check:
            continue
        analytic = np.zeros_like(t.data) if t.grad is None else t.grad
        if not np.allclose(analytic, num, atol=atol, rtol=rtol):
            err = np.abs(analytic - num)
            worst = np.unravel_index(np.argmax(err), err.shape)
            raise AssertionError(f"gradcheck: input {i} (shape {t.shape}): at {worst} autograd gives "
                                 f"{analytic[worst]:.6g}, finite differences {num[worst]:.6g} "
                                 f"(max abs error {err.max():.3g})")
    return True


def check_ste(quantizer, surrogate, pseudo_grad, x, eps=1e-6, atol=1e-5):
    """Check an STE on float64 ``x`` (kept away from kinks by the caller): its backward equals the
    pseudo-gradient formula ``pseudo_grad(x)`` and the central difference of the smooth surrogate."""
    t = Tensor(np.asarray(x, dtype=np.float64), requires_grad=True)
    g = np.random.default_rng(0).standard_normal(t.shape)
    quantizer(t).backward(g)
    expected = pseudo_grad(t.data) * g
    numeric = (surrogate(t.data + eps) - surrogate(t.data - eps)) / (2 * eps) * g
    np.testing.assert_allclose(t.grad, expected, atol=atol, err_msg="STE backward != pseudo-gradient formula")
    np.testing.assert_allclose(t.grad, numeric, atol=max(atol, 1e-4),
                               err_msg="STE backward != finite difference of the surrogate")
    return True


# --- the quantizer kit ------------------------------------------------------------------------
def check_quantizer(fn, *, pseudo_grad, surrogate=None, levels=None, on_grid=None, kinks=(),
                    idempotent=False, at_zero=None, params=None, learned=None, shape=(4, 3, 2, 2),
                    lo=-2.0, hi=2.0, margin=1e-3, eps=1e-6, atol=1e-5, rtol=1e-4, max_examples=25):
    """Property-check a quantizer with a straight-through estimator on hypothesis-drawn inputs.

    ``fn(x, *params)`` takes Tensors and returns a Tensor of x's shape: the quantizer under test
    (bind other arguments with a lambda). Each example draws a float64 ``x`` of ``shape`` in
    [lo, hi] (sometimes a non-contiguous view), draws the ``params`` and checks, as asked:

    * values: every output is on the grid, one of ``levels`` (a sequence, or ``levels(x, *params)``
      giving an array that broadcasts against ``y[..., None]``, the last axis listing the levels) or
      passes ``on_grid(y, x, *params) -> bool array``;
    * ``idempotent``: fn(fn(x)) == fn(x);
    * ``at_zero``: where x is 0 or -0.0 the output is ``at_zero`` (a number, or ``at_zero(x, *params)``
      broadcasting to the output), e.g. +1 for a sign (sign(0) = +1);
    * the backward, for a random cotangent g, equals the stated formula ``pseudo_grad(x, g, *params)``:
      dx, or a tuple (dx, dp, ...) with one gradient per ``learned`` parameter;
    * parameters not in ``learned`` get no gradient (None or zeros): bounds the method keeps fixed;
    * if ``surrogate`` is given, the backward (to x and to the learned parameters: a learned clip
      bound or step) equals central differences of ``surrogate(x, *params)``, a smooth function whose
      derivative is the pseudo-gradient. A surrogate that linearises about the drawn point (a frozen
      rounding residual, as LSQ's step gradient needs) takes a keyword ``at``: it is called as
      ``surrogate(x, *params, at=(x0, *params0))``;
    * with float32 inputs the output is float32.

    Inputs are kept ``margin`` away from ``kinks``: the surrogate's kinks and where the pseudo-gradient
    jumps (the clip bounds, 0, and any rounding edge where the stated formula jumps). ``kinks`` is a
    sequence of points or ``kinks(x, *params)`` returning an array that broadcasts against
    ``x[..., None]`` (kinks that move with a parameter or with x). ``params`` maps names to arrays, or
    to ``callable(rng)`` drawing one from a numpy Generator; they are passed to ``fn`` in order, as
    float64 Tensors requiring gradients. ``learned``: the names of the learned ones (default: all).
    Returns True; a failing check raises AssertionError (hypothesis prints the falsifying example).

    A user checking a home-made STE, a rounding to the integers in [-2, 2] passed straight through
    inside the range:

    >>> import numpy as np
    >>> from tinycomp import Function
    >>> from tinycomp.testing import check_quantizer
    >>> class ClippedRound(Function):
    ...     @staticmethod
    ...     def forward(ctx, x):
    ...         ctx.save_for_backward(x)
    ...         return np.rint(np.clip(x, -2, 2))
    ...     @staticmethod
    ...     def backward(ctx, dout):
    ...         (x,) = ctx.saved
    ...         return dout * (np.abs(x) <= 2)
    >>> check_quantizer(ClippedRound.apply, pseudo_grad=lambda x, g: g * (np.abs(x) <= 2),
    ...                 surrogate=lambda x: np.clip(x, -2, 2), levels=[-2, -1, 0, 1, 2],
    ...                 kinks=[-2, 2], idempotent=True, lo=-3, hi=3)
    True
    """
    from hypothesis import HealthCheck, Phase, given, settings, strategies as st

    params = dict(params or {})
    learned = tuple(params) if learned is None else tuple(learned)
    unknown = [name for name in learned if name not in params]
    if unknown:
        raise ValueError(f"check_quantizer: learned names {unknown} are not in params {list(params)}")
    if levels is not None and on_grid is not None:
        raise ValueError("check_quantizer: give levels or on_grid, not both")
    case = _QuantizerCase(fn, pseudo_grad, surrogate, levels, on_grid, kinks, idempotent, at_zero,
                          params, learned, lo, hi, margin, eps, atol, rtol)

    # no shrinking: x is drawn from a seed, so shrinking would only hunt for another seed
    @settings(max_examples=max_examples, deadline=None, database=None, report_multiple_bugs=False,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=[HealthCheck.too_slow])
    @given(x=arrays(shape=tuple(shape), lo=lo, hi=hi), seed=st.integers(0, 2**32 - 1))
    def run(x, seed):
        case.check(x, np.random.default_rng(seed))

    run()
    return True


class _QuantizerCase:
    """The checks of ``check_quantizer`` on one drawn example (the arguments as its parameters)."""

    def __init__(self, fn, pseudo_grad, surrogate, levels, on_grid, kinks, idempotent, at_zero, params,
                 learned, lo, hi, margin, eps, atol, rtol):
        self.fn, self.pseudo_grad, self.surrogate = fn, pseudo_grad, surrogate
        self.levels, self.on_grid, self.kinks = levels, on_grid, kinks
        self.idempotent, self.at_zero, self.params, self.learned = idempotent, at_zero, params, learned
        self.lo, self.hi, self.margin, self.eps, self.atol, self.rtol = lo, hi, margin, eps, atol, rtol
        self.local = surrogate is not None and "at" in inspect.signature(surrogate).parameters

    def check(self, x, rng):
        ps = [np.asarray(v(rng) if callable(v) else v, dtype=np.float64) for v in self.params.values()]
        self._off_kinks(x, ps, rng)
        y = self._forward(x, ps)
        self._check_values(x, y, ps)
        if self.idempotent:
            _close("idempotence: fn(fn(x)) != fn(x)", self._forward(y, ps), y, 1e-7, 1e-6)
        if self.at_zero is not None:
            self._check_zero(x, ps, rng)
        grads, g = self._backward(x, ps, rng)
        self._check_formula(x, ps, grads, g)
        if self.surrogate is not None:
            self._check_surrogate(x, ps, grads, g)
        y32 = self.fn(Tensor(x.astype(np.float32)), *[Tensor(p.astype(np.float32)) for p in ps])
        assert y32.dtype == np.float32, f"check_quantizer: float32 inputs gave a {y32.dtype} output"

    def _kink_points(self, x, ps):
        return np.asarray(self.kinks(x, *ps) if callable(self.kinks) else self.kinks, dtype=np.float64)

    def _off_kinks(self, x, ps, rng):
        """Redraw, in place, the elements of x within ``margin`` of a kink (kinks may move with x)."""
        for _ in range(100):
            points = self._kink_points(x, ps)
            if points.size == 0:
                return
            near = np.min(np.abs(x[..., None] - points), axis=-1) < self.margin
            if not near.any():
                return
            x[near] = rng.uniform(self.lo, self.hi, int(near.sum()))
        raise ValueError("check_quantizer: could not draw inputs off the kinks; widen [lo, hi] or lower margin")

    def _forward(self, x, ps):
        y = self.fn(Tensor(x), *[Tensor(p) for p in ps])
        assert isinstance(y, Tensor) and y.shape == x.shape, \
            f"check_quantizer: fn must return a Tensor of x's shape {x.shape}, got {getattr(y, 'shape', y)}"
        assert y.dtype == np.float64, f"check_quantizer: float64 inputs gave a {y.dtype} output"
        return y.data

    def _check_values(self, x, y, ps):
        if self.levels is not None:
            lv = np.asarray(self.levels(x, *ps) if callable(self.levels) else self.levels, dtype=np.float64)
            off = ~np.any(np.isclose(y[..., None], lv, rtol=1e-6, atol=1e-7), axis=-1)
            assert not off.any(), (f"check_quantizer: output {y[off][0]!r} (input {x[off][0]!r}) is not "
                                   f"one of the levels; {int(off.sum())} outputs off the grid")
        if self.on_grid is not None:
            ok = np.broadcast_to(np.asarray(self.on_grid(y, x, *ps), dtype=bool), y.shape)
            assert ok.all(), (f"check_quantizer: output {y[~ok][0]!r} (input {x[~ok][0]!r}) fails on_grid; "
                              f"{int((~ok).sum())} outputs off the grid")

    def _check_zero(self, x, ps, rng):
        xz = np.array(x)
        zero = rng.random(x.shape) < 0.3
        zero.flat[rng.integers(x.size)] = True
        xz[zero] = np.where(rng.random(int(zero.sum())) < 0.5, 0.0, -0.0)
        yz = self._forward(xz, ps)
        want = self.at_zero(xz, *ps) if callable(self.at_zero) else self.at_zero
        want = np.broadcast_to(np.asarray(want, dtype=np.float64), yz.shape)
        _close("at zero: the output where x is 0 or -0.0", yz[zero], want[zero], 1e-7, 1e-6)

    def _backward(self, x, ps, rng):
        tx = Tensor(x, requires_grad=True)  # x itself, so that a non-contiguous view reaches fn
        tps = [Tensor(p.copy(), requires_grad=True) for p in ps]
        y = self.fn(tx, *tps)
        g = rng.standard_normal(y.shape)
        y.backward(g)
        grads = {name: t.grad for name, t in zip(self.params, tps)}
        for name, grad in grads.items():
            if name not in self.learned and grad is not None:
                assert not np.any(grad), f"check_quantizer: parameter {name!r} is not learned but got a gradient"
        return [_zeros_if_none(tx.grad, x)] + [_zeros_if_none(grads[n], p) for n, p in zip(self.params, ps)
                                               if n in self.learned], g

    def _check_formula(self, x, ps, grads, g):
        expected = self.pseudo_grad(x, g, *ps)
        expected = expected if isinstance(expected, tuple) else (expected,)
        names = ("x",) + self.learned
        assert len(expected) == len(names), (f"check_quantizer: pseudo_grad returned {len(expected)} gradients "
                                             f"for {names}")
        for name, got, want in zip(names, grads, expected):
            want = np.broadcast_to(np.asarray(want, dtype=np.float64), got.shape)
            _close(f"backward != pseudo_grad formula (gradient to {name})", got, want, self.atol, self.rtol)

    def _check_surrogate(self, x, ps, grads, g):
        arrays = [x.copy()] + [p.copy() for n, p in zip(self.params, ps) if n in self.learned]
        at = (x.copy(), *[p.copy() for p in ps])
        slots = [list(self.params).index(n) for n in self.learned]

        def value():
            qs = list(ps)
            for slot, a in zip(slots, arrays[1:]):
                qs[slot] = a
            f = self.surrogate(arrays[0], *qs, at=at) if self.local else self.surrogate(arrays[0], *qs)
            return float(np.sum(np.asarray(f) * g))

        numeric = _central_differences(value, arrays, self.eps)
        for name, got, num in zip(("x",) + self.learned, grads, numeric):
            _close(f"backward != central difference of the surrogate (gradient to {name})", got, num,
                   max(self.atol, 1e-4), self.rtol)


def _zeros_if_none(grad, like):
    return np.zeros_like(like) if grad is None else grad


def _close(what, got, want, atol, rtol):
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    bad = ~np.isclose(got, want, atol=atol, rtol=rtol)
    if bad.any():
        i = np.unravel_index(np.argmax(np.where(bad, np.abs(got - want), -1)), bad.shape)
        raise AssertionError(f"check_quantizer: {what}: at {tuple(int(k) for k in i)} got {got[i]:.6g}, "
                             f"expected {want[i]:.6g} ({int(bad.sum())} of {bad.size} elements differ)")


# --- hypothesis strategies ----------------------------------------------------------------------
def _st():
    try:
        from hypothesis import strategies as st
    except ImportError as exc:  # pragma: no cover
        raise ImportError("tinycomp.testing strategies need hypothesis: pip install 'tinycomp-engine[testing]'") from exc
    return st


def arrays(shape=None, dtype=np.float64, min_dims=1, max_dims=4, max_side=5, lo=-2.0, hi=2.0,
           noncontiguous=True):
    """Float arrays (drawn shape unless ``shape`` is given), sometimes as non-contiguous views."""
    st = _st()

    @st.composite
    def build(draw):
        shp = shape if shape is not None else tuple(
            draw(st.lists(st.integers(1, max_side), min_size=min_dims, max_size=max_dims)))
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        view = noncontiguous and len(shp) > 0 and draw(st.booleans())
        if view:  # a strided view: every other row of a twice-as-large array
            big = rng.uniform(lo, hi, (shp[0] * 2,) + tuple(shp[1:])).astype(dtype)
            return big[::2]
        return rng.uniform(lo, hi, shp).astype(dtype)

    return build()


def conv_configs(max_batch=3, max_channels=8, max_size=9, max_kernel=3, groups=True, dilation=True):
    """Valid conv2d configurations: dict(N, C, H, W, O, KH, KW, stride, padding, dilation, groups)."""
    st = _st()

    @st.composite
    def build(draw):
        g = draw(st.sampled_from([1, 1, 2, 3])) if groups else 1
        c = g * draw(st.integers(1, max(1, max_channels // g)))
        o = g * draw(st.integers(1, max(1, max_channels // g)))
        if groups and draw(st.integers(0, 4)) == 0:  # depthwise
            g, c = c, c
            o = c * draw(st.sampled_from([1, 2]))
        kh, kw = draw(st.integers(1, max_kernel)), draw(st.integers(1, max_kernel))
        d = draw(st.sampled_from([1, 1, 2])) if dilation else 1
        p = draw(st.integers(0, 2))
        s = draw(st.sampled_from([1, 1, 2]))
        min_h = max(1, d * (kh - 1) + 1 - 2 * p)
        min_w = max(1, d * (kw - 1) + 1 - 2 * p)
        h = draw(st.integers(min_h, max(min_h, max_size)))
        w = draw(st.integers(min_w, max(min_w, max_size)))
        return dict(N=draw(st.integers(1, max_batch)), C=c, H=h, W=w, O=o, KH=kh, KW=kw,
                    stride=s, padding=p, dilation=d, groups=g)

    return build()
