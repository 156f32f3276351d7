"""im2col / col2im against NumPy slicing references; col2im is im2col's adjoint."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from strategies import conv_configs
from tinycomp_kernels.im2col import (_col2im_loops, _im2col_loops, _im2col_same_loops, col2im, col2im_ref,
                                     conv_output_size, im2col, im2col_ref)


def _cfg_input(cfg, dtype, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((cfg["N"], cfg["C"], cfg["H"], cfg["W"])).astype(dtype)


@settings(max_examples=20)
@given(conv_configs())
def test_im2col_matches_reference_and_col2im_is_adjoint(cfg):
    x = _cfg_input(cfg, np.float64)
    geo = (cfg["KH"], cfg["KW"], cfg["stride"], cfg["padding"], cfg["dilation"])
    cols = im2col(x, *geo)
    np.testing.assert_array_equal(cols, im2col_ref(x, *geo))  # a pure copy: exact
    c = np.random.default_rng(1).standard_normal(cols.shape)
    back = col2im(c, x.shape, *geo)
    np.testing.assert_allclose(back, col2im_ref(c, x.shape, *geo), rtol=1e-12, atol=1e-12)
    assert np.isclose(np.vdot(cols, c), np.vdot(x, back), rtol=1e-10)  # <im2col x, c> = <x, col2im c>


@settings(max_examples=30)
@given(st.integers(1, 3), st.integers(1, 3), st.integers(1, 9), st.integers(1, 9), st.sampled_from([1, 3, 5]),
       st.sampled_from([1, 3]), st.sampled_from([np.float32, np.float64]), st.integers(0, 2**32 - 1))
def test_same_padding_path_exact_with_inf_and_nan(n, c, h, w, kh, kw, dtype, seed):
    """Stride 1 with padding (KH-1)/2, (KW-1)/2 takes the shifted-plane path: exact against the
    slicing reference, with inf and NaN in x (the padding must stay 0, never inf * 0 = NaN)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    x.reshape(-1)[rng.integers(0, x.size, 3)] = [np.inf, -np.inf, np.nan]
    pad = ((kh - 1) // 2, (kw - 1) // 2)
    np.testing.assert_array_equal(im2col(x, kh, kw, 1, pad), im2col_ref(x, kh, kw, 1, pad))


def test_same_loops_run_as_plain_python():
    x = _cfg_input(dict(N=2, C=2, H=3, W=4), np.float64)
    iw = np.arange(12) % 4
    col_ok = np.array([(iw + kw - 1 >= 0) & (iw + kw - 1 < 4) for kw in range(3)])
    cols = np.full((2 * 9, 2 * 12), np.nan)
    _im2col_same_loops(cols, x, 3, 3, 1, 1, col_ok, np.zeros((2, 12 + 2 * 5)))  # two workers
    np.testing.assert_array_equal(cols, im2col_ref(x, 3, 3, 1, 1))


def test_layout_of_one_entry():
    x = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    cols = im2col(x, 3, 2, stride=1, padding=(1, 0), dilation=1)
    OH, OW = conv_output_size(4, 5, 3, 2, 1, (1, 0), 1)
    assert cols.shape == (3 * 3 * 2, 2 * OH * OW)
    n, c, kh, kw, oh, ow = 1, 2, 2, 1, 1, 3
    assert cols[(c * 3 + kh) * 2 + kw, (n * OH + oh) * OW + ow] == x[n, c, oh - 1 + kh, ow + kw]
    assert cols[(c * 3 + 0) * 2 + kw, (n * OH + 0) * OW + ow] == 0  # row -1: padding


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtypes_and_strided_input(dtype):
    x = _cfg_input(dict(N=2, C=3, H=9, W=8), dtype)[:, :, ::2]   # non-contiguous view
    cols = im2col(x, 2, 3, stride=(2, 1), padding=1, dilation=(1, 2))
    assert cols.dtype == dtype
    np.testing.assert_array_equal(cols, im2col_ref(x, 2, 3, (2, 1), 1, (1, 2)))


def test_loops_run_as_plain_python():
    x = _cfg_input(dict(N=1, C=2, H=4, W=3), np.float64)
    OH, OW = conv_output_size(4, 3, 2, 2, 2, 1, 1)
    cols = np.empty((2 * 2 * 2, OH * OW))
    _im2col_loops(cols, x, 2, 2, 2, 2, 1, 1, 1, 1, OH, OW)
    np.testing.assert_array_equal(cols, im2col_ref(x, 2, 2, 2, 1, 1))
    back = np.empty_like(x)
    _col2im_loops(back, cols, 2, 2, 2, 2, 1, 1, 1, 1, OH, OW)
    np.testing.assert_allclose(back, col2im_ref(cols, x.shape, 2, 2, 2, 1, 1))


def test_bad_input():
    x = np.zeros((1, 2, 4, 4), np.float32)
    with pytest.raises(ValueError, match=r"im2col: x must be 4-D.*\(2, 4, 4\)"):
        im2col(x[0], 3, 3)
    with pytest.raises(TypeError, match="im2col: x must be float32 or float64, got int64"):
        im2col(x.astype(np.int64), 3, 3)
    with pytest.raises(ValueError, match="im2col: a 5x5 kernel .* does not fit a 4x4 input"):
        im2col(x, 5, 5)
    with pytest.raises(ValueError, match="im2col: stride must be >= 1"):
        im2col(x, 3, 3, stride=0)
    with pytest.raises(ValueError, match=r"im2col: padding must be an int or a pair"):
        im2col(x, 3, 3, padding=(1, 1, 1))
    with pytest.raises(ValueError, match=r"col2im: cols has shape \(3, 4\)"):
        col2im(np.zeros((3, 4)), (1, 2, 4, 4), 3, 3)
    with pytest.raises(ValueError, match=r"im2col: out must be"):
        im2col(x, 3, 3, out=np.empty((18, 3), np.float32))
