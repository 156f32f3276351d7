"""The quantizer kernels against their NumPy references (elementwise results exactly, sums within
float64 rounding), on drawn inputs with ties, zeros, -0.0, infinities and NaNs; the loops run in Python."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

from tinycomp_kernels.quantize import (_clip_backward_loops, _lsq_backward_loops, _round_to_grid_loops,
                                       _round_to_levels_loops, _sign_loops, clip_backward, clip_backward_ref,
                                       lsq_backward, lsq_backward_ref, round_to_grid, round_to_grid_ref,
                                       round_to_levels, round_to_levels_ref, sign, sign_ref)

SPECIAL = np.array([0.0, -0.0, 0.5, -0.5, 1.5, 1.0, -1.0, 0.3, np.inf, -np.inf, np.nan])


@st.composite
def inputs(draw):
    """(x, dout): float32 or float64, sizes around the kernels' block of 2**14, with special values
    (ties of the rounding at k + 1/2 steps, exact bounds, ±0, ±inf, NaN) written in."""
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    n = draw(st.sampled_from([1, 7, 1000, (1 << 14) + 3, 40000]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x = (rng.standard_normal(n) * draw(st.sampled_from([0.5, 3.0]))).astype(dtype)
    if draw(st.booleans()):
        at = rng.random(n) < 0.2
        x[at] = rng.choice(SPECIAL, int(at.sum()))
    dout = rng.standard_normal(n).astype(dtype)
    shape = draw(st.sampled_from([(n,), (1, n), (n, 1)]))
    return x.reshape(shape), dout.reshape(shape)


@given(inputs())
def test_sign_equals_reference(case):
    x, _ = case
    out = sign(x)
    assert out.dtype == x.dtype and out.shape == x.shape
    np.testing.assert_array_equal(out, sign_ref(x))
    assert np.all(out[x == 0] == 1)                      # sign(0) = sign(-0.0) = +1


@given(inputs(), st.sampled_from([(0.25, -4, 3), (0.1, 0, 15), (1 / 3, 0, 3), (0.7, -128, 127)]))
def test_round_to_grid_equals_reference(case, grid):
    x, _ = case
    with np.errstate(invalid="ignore"):
        want = round_to_grid_ref(x, x.dtype.type(grid[0]), grid[1], grid[2])
    np.testing.assert_array_equal(round_to_grid(x, grid[0], grid[1], grid[2]), want)
    with np.errstate(invalid="ignore"):  # codes: the same integers, before the step multiplies them
        want_codes = np.rint(np.clip(x / x.dtype.type(grid[0]), grid[1], grid[2])).astype(x.dtype)
    np.testing.assert_array_equal(round_to_grid(x, grid[0], grid[1], grid[2], codes=True), want_codes)


@given(inputs(), st.sampled_from([1, 3, 7, 15, 255]))
def test_round_to_levels_equals_reference(case, levels):
    x, _ = case
    with np.errstate(invalid="ignore"):
        want = round_to_levels_ref(x, levels)
    np.testing.assert_array_equal(round_to_levels(x, levels), want)
    n = x.dtype.type(levels)
    with np.errstate(invalid="ignore"):
        np.testing.assert_array_equal(round_to_levels(x, levels, codes=True), np.rint(np.clip(x * n, 0, n)))


def test_round_to_levels_keeps_exact_ties():
    """r = 0.5 times 2^k - 1 is an exact tie, rounded half to even (dividing by a rounded 1/levels is not)."""
    for levels, want in ((7, 4 / 7), (15, 8 / 15), (255, 128 / 255)):
        out = round_to_levels(np.full(3, 0.5, np.float32), levels)
        np.testing.assert_array_equal(out, np.float32(want))
    out = np.empty(2, np.float32)
    _round_to_levels_loops(out, np.array([0.5, 2.0], np.float32), np.float32(7), False)  # plain Python
    np.testing.assert_array_equal(out, np.array([4 / 7, 1.0], np.float32))
    _round_to_levels_loops(out, np.array([0.5, 2.0], np.float32), np.float32(7), True)
    np.testing.assert_array_equal(out, [4, 7])


@given(inputs(), st.sampled_from([(-1.0, 1.0), (0.0, 1.0), (0.0, 0.7), (-np.inf, np.inf), (-0.5, 2.0)]))
def test_clip_backward_equals_reference(case, bounds):
    x, dout = case
    dx, above = clip_backward(dout, x, *bounds)
    want_dx, want_above = clip_backward_ref(dout, x, x.dtype.type(bounds[0]), x.dtype.type(bounds[1]))
    assert dx.dtype == x.dtype
    np.testing.assert_array_equal(dx, want_dx)
    np.testing.assert_allclose(above, want_above, rtol=1e-9, atol=1e-9 * x.size)


@given(inputs(), st.sampled_from([(0.25, -4, 3), (0.1, 0, 15), (0.5, -2, 1), (0.05, -128, 127)]))
def test_lsq_backward_equals_reference(case, grid):
    x, dout = case
    dx, dstep = lsq_backward(dout, x, *grid)
    with np.errstate(invalid="ignore"):
        want_dx, want_dstep = lsq_backward_ref(dout, x, x.dtype.type(grid[0]), grid[1], grid[2])
    np.testing.assert_array_equal(dx, want_dx)
    np.testing.assert_allclose(dstep, want_dstep, rtol=1e-9, atol=1e-9 * x.size)


def test_nan_gives_nan_forward_and_no_gradient():
    x = np.array([np.nan, 1.0, -0.0], np.float32)
    dout = np.ones(3, np.float32)
    np.testing.assert_array_equal(sign(x), [-1, 1, 1])
    assert np.isnan(round_to_grid(x, 0.5, -2, 1)[0])
    dx, above = clip_backward(dout, x, -1, 1)
    np.testing.assert_array_equal(dx, [0, 1, 1])
    assert above == 1.0
    dx, dstep = lsq_backward(dout, x, 0.5, -2, 1)
    np.testing.assert_array_equal(dx, [0, 0, 1])         # u = NaN, 2 (> qp = 1), -0
    assert np.isnan(dstep)                               # as the NumPy path: the NaN reaches the step


def test_non_contiguous_and_multidimensional():
    rng = np.random.default_rng(1)
    big = rng.standard_normal((8, 6, 10, 10)).astype(np.float32)
    x, dout = big[::2, :, ::3], big[1::2, :, ::3]
    np.testing.assert_array_equal(sign(x), sign_ref(x))
    np.testing.assert_array_equal(round_to_grid(x, 0.3, 0, 7), round_to_grid_ref(x, np.float32(0.3), 0, 7))
    np.testing.assert_array_equal(clip_backward(dout, x, -1, 1)[0], clip_backward_ref(dout, x, -1, 1)[0])
    assert sign(x).shape == x.shape


def test_loops_in_plain_python():
    x = np.array([-1.5, -0.0, 0.26, 0.75, 2.0, np.nan])
    dout = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    out = np.empty(6)
    _sign_loops(out, x, 1.0)
    np.testing.assert_array_equal(out, [-1, 1, 1, 1, 1, -1])
    _round_to_grid_loops(out, x, 0.5, -2.0, 1.0, False)
    np.testing.assert_array_equal(out, [-1.0, -0.0, 0.5, 0.5, 0.5, np.nan])   # 0.52 -> 1, 1.5 -> 2 -> clip 1
    _round_to_grid_loops(out, x, 0.5, -2.0, 1.0, True)
    np.testing.assert_array_equal(out, [-2.0, -0.0, 1.0, 1.0, 1.0, np.nan])
    dx, partial = np.empty(6), np.zeros(1)
    _clip_backward_loops(dx, partial, dout, x, -1.0, 0.75, 0.0)
    np.testing.assert_array_equal(dx, [0, 2, 3, 4, 0, 0])
    assert partial[0] == 4 + 5
    _lsq_backward_loops(dx, partial, dout, x, 0.5, -2.0, 1.0, 0.0)
    np.testing.assert_array_equal(dx, [0, 2, 3, 0, 0, 0])              # u = -3, -0, 0.52, 1.5, 4, NaN
    assert np.isnan(partial[0])
    _lsq_backward_loops(dx, partial, dout[:5], x[:5], 0.5, -2.0, 1.0, 0.0)
    assert partial[0] == pytest.approx(-2 * 1 + 0 + (1 - 0.52) * 3 + 1 * 4 + 1 * 5)


@pytest.mark.parametrize("call, exc, match", [
    (lambda: sign([1.0]), TypeError, "sign: x must be a float32 or float64 array, got list"),
    (lambda: sign(np.zeros(2, np.int32)), TypeError, "sign: x must be a float32 or float64 array, got int32"),
    (lambda: round_to_grid(np.zeros(2), 0.0, 0, 3), ValueError, "round_to_grid: step must be positive and finite"),
    (lambda: round_to_grid(np.zeros(2), 0.1, 3, 0), ValueError, "round_to_grid: need qn <= qp"),
    (lambda: round_to_grid(np.zeros(2), "a", 0, 3), ValueError, "round_to_grid: step must be a real number"),
    (lambda: clip_backward(np.zeros(2), np.zeros(3), -1, 1), ValueError, r"clip_backward: dout float64\(2,\) and x"),
    (lambda: clip_backward(np.zeros(2, np.float32), np.zeros(2), -1, 1), ValueError, "must have the same shape and dtype"),
    (lambda: clip_backward(np.zeros(2), np.zeros(2), 1, -1), ValueError, "clip_backward: need lo <= hi"),
    (lambda: clip_backward(np.zeros(2), np.zeros(2), np.nan, 1), ValueError, "clip_backward: lo must be a real number"),
    (lambda: lsq_backward(np.zeros(2), np.zeros(2), -0.1, 0, 3), ValueError, "lsq_backward: step must be positive"),
])
def test_refusals(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
