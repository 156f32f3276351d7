"""Pooling kernels against window-loop NumPy references written here."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinycomp_kernels.pool import (_avg_pool2d_backward_loops, _avg_pool2d_loops, _max_pool2d_backward_loops,
                                   _max_pool2d_loops, avg_pool2d_backward, avg_pool2d_forward, avg_pool2d_ref,
                                   max_pool2d_backward, max_pool2d_forward, max_pool2d_ref)


@st.composite
def pool_configs(draw):
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    ph, pw = draw(st.integers(0, kh // 2)), draw(st.integers(0, kw // 2))
    h, w = draw(st.integers(max(1, kh - 2 * ph), 8)), draw(st.integers(max(1, kw - 2 * pw), 8))
    return dict(shape=(draw(st.integers(1, 2)), draw(st.integers(1, 3)), h, w), kernel=(kh, kw),
                stride=(draw(st.integers(1, 3)), draw(st.integers(1, 3))), padding=(ph, pw),
                seed=draw(st.integers(0, 2**31)))


def windows(shape, kernel, stride, padding):
    """For each output position, the list of in-image (ih, iw) of its window (a plain loop)."""
    H, W = shape[2:]
    OH = (H + 2 * padding[0] - kernel[0]) // stride[0] + 1
    OW = (W + 2 * padding[1] - kernel[1]) // stride[1] + 1
    return {(oh, ow): [(ih, iw) for ih in range(oh * stride[0] - padding[0], oh * stride[0] - padding[0] + kernel[0])
                       for iw in range(ow * stride[1] - padding[1], ow * stride[1] - padding[1] + kernel[1])
                       if 0 <= ih < H and 0 <= iw < W] for oh in range(OH) for ow in range(OW)}, (OH, OW)


@settings(max_examples=25)
@given(pool_configs())
def test_max_pool_forward_backward(cfg):
    rng = np.random.default_rng(cfg["seed"])
    x = rng.standard_normal(cfg["shape"])
    geo = (cfg["kernel"], cfg["stride"], cfg["padding"])
    y, arg = max_pool2d_forward(x, *geo)
    win, (OH, OW) = windows(x.shape, *geo)
    dout = rng.standard_normal(y.shape)
    dx_ref = np.zeros_like(x)
    for n, c in np.ndindex(x.shape[:2]):
        for (oh, ow), pix in win.items():
            vals = [x[n, c, i, j] for i, j in pix]
            assert y[n, c, oh, ow] == max(vals)
            ih, iw = pix[int(np.argmax(vals))]
            assert arg[n, c, oh, ow] == ih * x.shape[3] + iw
            dx_ref[n, c, ih, iw] += dout[n, c, oh, ow]
    y2, arg2 = max_pool2d_ref(x, *geo)
    np.testing.assert_array_equal(y, y2)
    np.testing.assert_array_equal(arg, arg2)
    np.testing.assert_allclose(max_pool2d_backward(dout, arg, x.shape), dx_ref, rtol=1e-12)


@settings(max_examples=25)
@given(pool_configs(), st.booleans())
def test_avg_pool_forward_backward(cfg, include_pad):
    rng = np.random.default_rng(cfg["seed"])
    x = rng.standard_normal(cfg["shape"])
    geo = (cfg["kernel"], cfg["stride"], cfg["padding"])
    y = avg_pool2d_forward(x, *geo, include_pad)
    win, _ = windows(x.shape, *geo)
    dout = rng.standard_normal(y.shape)
    dx_ref = np.zeros_like(x)
    for n, c in np.ndindex(x.shape[:2]):
        for (oh, ow), pix in win.items():
            div = cfg["kernel"][0] * cfg["kernel"][1] if include_pad else len(pix)
            assert np.isclose(y[n, c, oh, ow], sum(x[n, c, i, j] for i, j in pix) / div)
            for i, j in pix:
                dx_ref[n, c, i, j] += dout[n, c, oh, ow] / div
    np.testing.assert_allclose(y, avg_pool2d_ref(x, *geo, include_pad), rtol=1e-12)
    np.testing.assert_allclose(avg_pool2d_backward(dout, x.shape, *geo, include_pad), dx_ref, rtol=1e-12, atol=1e-14)


def test_float32_and_ties():
    x = np.zeros((1, 1, 4, 4), np.float32)  # all ties: the first pixel of each window wins
    y, arg = max_pool2d_forward(x, 2)
    assert y.dtype == np.float32
    np.testing.assert_array_equal(arg[0, 0], [[0, 2], [8, 10]])
    assert avg_pool2d_forward(x + 1, 3, 1, 1).dtype == np.float32


def test_loops_run_as_plain_python():
    x = np.random.default_rng(0).standard_normal((1, 2, 4, 5))
    y, arg = np.empty((1, 2, 2, 3)), np.empty((1, 2, 2, 3), np.int64)
    _max_pool2d_loops(y, arg, x, 3, 3, 2, 2, 1, 1)
    y2, arg2 = max_pool2d_ref(x, (3, 3), (2, 2), (1, 1))
    np.testing.assert_array_equal(y, y2)
    np.testing.assert_array_equal(arg, arg2)
    dx = np.empty_like(x)
    _max_pool2d_backward_loops(dx, y, arg)
    np.testing.assert_allclose(dx, max_pool2d_backward(y, arg, x.shape))
    _avg_pool2d_loops(y, x, 3, 3, 2, 2, 1, 1, True)
    np.testing.assert_allclose(y, avg_pool2d_ref(x, (3, 3), (2, 2), (1, 1)))
    _avg_pool2d_backward_loops(dx, y, 3, 3, 2, 2, 1, 1, False)
    np.testing.assert_allclose(dx, avg_pool2d_backward(y, x.shape, 3, 2, 1, False))


def test_bad_input():
    x = np.zeros((1, 2, 4, 4), np.float32)
    with pytest.raises(ValueError, match=r"max_pool2d: input must be 4-D .* \(2, 4, 4\)"):
        max_pool2d_forward(x[0], 2)
    with pytest.raises(TypeError, match="avg_pool2d: input must be float32 or float64, got int64"):
        avg_pool2d_forward(x.astype(np.int64), 2)
    with pytest.raises(ValueError, match="max_pool2d: padding .* at most half the kernel size"):
        max_pool2d_forward(x, 2, padding=2)
    with pytest.raises(ValueError, match=r"avg_pool2d: kernel \(5, 5\) .* does not fit"):
        avg_pool2d_forward(x, 5)
    with pytest.raises(ValueError, match="max_pool2d_backward: dout .* do not agree"):
        max_pool2d_backward(np.zeros((1, 2, 2, 2)), np.zeros((1, 2, 3, 3), np.int64), x.shape)
    for bad in (-1, 16):  # the kernel scatters at argmax unchecked: an index outside the 4x4 plane must not reach it
        with pytest.raises(ValueError, match=r"max_pool2d_backward: argmax values must lie in \[0, 16\)"):
            max_pool2d_backward(np.zeros((1, 2, 2, 2)), np.full((1, 2, 2, 2), bad, np.int64), x.shape)
    with pytest.raises(TypeError, match="max_pool2d_backward: argmax must be integers"):
        max_pool2d_backward(np.zeros((1, 2, 2, 2)), np.zeros((1, 2, 2, 2)), x.shape)
    with pytest.raises(TypeError, match="max_pool2d_backward: dout must be float32 or float64"):
        max_pool2d_backward(np.zeros((1, 2, 2, 2), np.int64), np.zeros((1, 2, 2, 2), np.int64), x.shape)
    with pytest.raises(ValueError, match=r"avg_pool2d_backward: dout has shape \(1, 2, 3, 3\)"):
        avg_pool2d_backward(np.zeros((1, 2, 3, 3), np.float32), x.shape, 2)
