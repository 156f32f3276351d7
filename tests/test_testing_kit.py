"""tinycomp.testing.check_quantizer catches wrong STEs: every check is shown to fail on a quantizer
broken in the way it guards against, and its docstring example runs."""
import doctest

import numpy as np
import pytest

from tinycomp import Function, Tensor
from tinycomp.compress import quantizers as Q
from tinycomp.testing import check_quantizer, check_ste


def _within(x, clip):
    return (np.abs(x) <= clip).astype(np.float64)


SIGN = dict(pseudo_grad=lambda x, g: g * _within(x, 1), surrogate=lambda x: np.clip(x, -1, 1),
            levels=[-1, 1], kinks=[0, -1, 1], idempotent=True, at_zero=1.0, max_examples=10)


def _step_op(forward, backward):
    """A Function from a forward(x) and a backward(x, dout) on arrays."""

    class Op(Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return forward(x)

        @staticmethod
        def backward(ctx, dout):
            return backward(ctx.saved[0], dout)

    return Op.apply


def _sign(x):
    return np.where(x >= 0, 1.0, -1.0).astype(x.dtype)


def test_docstring_example_runs():
    runner = doctest.DocTestRunner()
    for test in doctest.DocTestFinder().find(check_quantizer, "check_quantizer"):
        runner.run(test)
    assert runner.tries >= 5 and runner.failures == 0


def test_a_correct_sign_ste_passes():
    assert check_quantizer(Q.ste_sign, **SIGN)


def test_wrong_pseudo_gradient_fails():
    # the op clips at 1, the stated formula at 0.5
    with pytest.raises(AssertionError, match="backward != pseudo_grad formula"):
        check_quantizer(Q.ste_sign, **{**SIGN, "pseudo_grad": lambda x, g: g * _within(x, 0.5),
                                       "kinks": [0, -1, 1, -0.5, 0.5]})


def test_wrong_backward_fails_both_references():
    wide = _step_op(_sign, lambda x, dout: dout * (np.abs(x) <= 2))   # a backward clipping at 2, not 1
    with pytest.raises(AssertionError, match="backward != pseudo_grad formula"):
        check_quantizer(wide, **SIGN)
    # with a formula that agrees with the wrong backward, the surrogate still catches it
    with pytest.raises(AssertionError, match="central difference of the surrogate"):
        check_quantizer(wide, **{**SIGN, "pseudo_grad": lambda x, g: g * _within(x, 2), "kinks": [0, -1, 1, -2, 2]})


def test_transposed_gradient_fails():
    # the right values in the wrong places: only a random cotangent sees it
    flipped = _step_op(_sign, lambda x, dout: (dout * (np.abs(x) <= 1))[::-1].copy())
    with pytest.raises(AssertionError, match="pseudo_grad formula"):
        check_quantizer(flipped, **SIGN)


def test_sign_of_zero_fails():
    numpy_sign = _step_op(np.sign, lambda x, dout: dout * (np.abs(x) <= 1))   # np.sign(0) = 0
    with pytest.raises(AssertionError, match="at zero"):
        check_quantizer(numpy_sign, **{**SIGN, "levels": None})
    negative_zero = _step_op(lambda x: np.copysign(1.0, x), lambda x, dout: dout * (np.abs(x) <= 1))
    with pytest.raises(AssertionError, match="at zero"):   # copysign(1, -0.0) = -1
        check_quantizer(negative_zero, **SIGN)


def test_off_grid_fails():
    half = _step_op(lambda x: 0.5 * _sign(x), lambda x, dout: dout * (np.abs(x) <= 1))
    with pytest.raises(AssertionError, match="is not one of the levels"):
        check_quantizer(half, **SIGN)
    with pytest.raises(AssertionError, match="fails on_grid"):
        check_quantizer(half, **{**SIGN, "levels": None, "on_grid": lambda y, x: np.abs(y) == 1})


def test_not_idempotent_fails():
    rounding = _step_op(lambda x: np.rint(2 * x), lambda x, dout: 2 * dout)
    with pytest.raises(AssertionError, match="idempotence"):
        check_quantizer(rounding, pseudo_grad=lambda x, g: 2 * g, idempotent=True)


def test_wrong_learned_scale_gradient_fails():
    class BadPact(Function):   # PACT's forward with dalpha summed over the wrong set (x > 0)
        @staticmethod
        def forward(ctx, x, alpha):
            ctx.save_for_backward(x, alpha)
            return np.clip(x, 0, alpha)

        @staticmethod
        def backward(ctx, dout):
            x, alpha = ctx.saved
            return dout * ((x >= 0) & (x <= alpha)), np.array((dout * (x > 0)).sum())

    kit = dict(surrogate=lambda x, a: np.clip(x, 0, a), kinks=lambda x, a: np.stack([np.zeros_like(a), a], -1),
               params={"alpha": lambda rng: rng.uniform(0.5, 1.5, ())}, max_examples=10)
    right = lambda x, g, a: (g * ((x >= 0) & (x <= a)), (g * (x >= a)).sum())   # noqa: E731
    with pytest.raises(AssertionError, match="gradient to alpha"):
        check_quantizer(BadPact.apply, pseudo_grad=right, **kit)
    # stated as the bad formula, the finite differences of clip(x, 0, alpha) still refuse it
    wrong = lambda x, g, a: (g * ((x >= 0) & (x <= a)), (g * (x > 0)).sum())    # noqa: E731
    with pytest.raises(AssertionError, match="surrogate \\(gradient to alpha\\)"):
        check_quantizer(BadPact.apply, pseudo_grad=wrong, **kit)
    # and the real PACT passes the same kit
    assert check_quantizer(lambda x, a: Q.pact(x, a, 8), pseudo_grad=right, **{**kit, "surrogate": None})


def test_non_learned_bound_with_gradient_fails():
    class ClipAt(Function):   # clip(x, -b, b) whose bound b is meant fixed but receives a gradient
        @staticmethod
        def forward(ctx, x, b):
            ctx.save_for_backward(x, b)
            return np.clip(x, -b, b)

        @staticmethod
        def backward(ctx, dout):
            x, b = ctx.saved
            return dout * (np.abs(x) <= b), np.array((dout * np.sign(x) * (np.abs(x) > b)).sum())

    with pytest.raises(AssertionError, match="parameter 'b' is not learned but got a gradient"):
        check_quantizer(ClipAt.apply, pseudo_grad=lambda x, g, b: g * (np.abs(x) <= b),
                        params={"b": np.array(1.0)}, learned=(), kinks=[-1, 1], max_examples=5)


def test_float32_output_dtype_checked():
    upcast = _step_op(lambda x: _sign(x).astype(np.float64), lambda x, dout: dout * (np.abs(x) <= 1))
    with pytest.raises(AssertionError, match="float32 inputs gave a float64 output"):
        check_quantizer(upcast, **SIGN)


def test_argument_errors():
    with pytest.raises(ValueError, match="learned names \\['s'\\] are not in params"):
        check_quantizer(Q.ste_sign, pseudo_grad=lambda x, g: g, learned=("s",))
    with pytest.raises(ValueError, match="levels or on_grid, not both"):
        check_quantizer(Q.ste_sign, pseudo_grad=lambda x, g: g, levels=[1], on_grid=lambda y, x: True)
    with pytest.raises(ValueError, match="could not draw inputs off the kinks"):
        check_quantizer(Q.ste_sign, pseudo_grad=lambda x, g: g, kinks=np.linspace(-2, 2, 4001), max_examples=2)


def test_check_ste_still_works():
    x = np.array([-1.7, -0.4, 0.3, 0.8, 1.6])
    assert check_ste(lambda t: Q.ste_sign(t), lambda v: np.clip(v, -1, 1), lambda v: _within(v, 1), x)
    with pytest.raises(AssertionError):
        check_ste(lambda t: Q.ste_sign(t, clip=None), lambda v: np.clip(v, -1, 1), lambda v: _within(v, 1), x)
    assert isinstance(Q.ste_sign(Tensor(x)), Tensor)
