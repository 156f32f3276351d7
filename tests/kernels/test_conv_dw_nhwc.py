"""The channels-last weight gradient, with either tile set (AVX-512 or AVX2, whatever this CPU is):
equal to its NumPy oracle and to im2col + GEMM, the same bits on any thread count, its plain-Python
loops, and when ``conv2d_backward`` takes it."""

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinycomp_kernels import conv_dw_nhwc as M
from tinycomp_kernels.conv import conv2d_backward, conv2d_backward_weight
from tile_sets import tile_set


def _case(N, C, H, W, O, KH, KW, s, p, d, seed=0):
    rng = np.random.default_rng(seed)
    OH = (H + 2 * p[0] - d[0] * (KH - 1) - 1) // s[0] + 1
    OW = (W + 2 * p[1] - d[1] * (KW - 1) - 1) // s[1] + 1
    x = rng.standard_normal((N, C, H, W)).astype(np.float32)
    dout = rng.standard_normal((N, O, OH, OW)).astype(np.float32)
    return dout, x, (O, C, KH, KW)


@st.composite
def configs(draw):
    """Channel counts on and off the 16- and 8-lane vectors (spans of 3, 2 or 1 vectors: every tile),
    output channels the tile heights do not divide, rectangular kernels, strides, dilations."""
    KH, KW = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    s = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    d = (draw(st.sampled_from([1, 1, 2])), draw(st.sampled_from([1, 1, 2])))
    p = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    H = draw(st.integers(max(1, d[0] * (KH - 1) + 1 - 2 * p[0]), 9))
    W = draw(st.integers(max(1, d[1] * (KW - 1) + 1 - 2 * p[1]), 9))
    return dict(N=draw(st.integers(1, 5)), C=draw(st.sampled_from([9, 16, 17, 32, 40, 48, 64])), H=H, W=W,
                O=draw(st.sampled_from([8, 11, 16, 24, 40])), KH=KH, KW=KW, s=s, p=p, d=d)


@pytest.mark.parametrize("wide", [True, False], ids=["avx512", "avx2"])
@settings(max_examples=40, deadline=None)
@given(cfg=configs())
def test_equals_the_oracle_and_im2col(wide, cfg):
    dout, x, w_shape = _case(**cfg)
    with tile_set(wide):
        got = M.conv2d_nhwc_backward_weight(dout, x, w_shape, cfg["s"], cfg["p"], cfg["d"])
    ref = M.conv2d_dw_nhwc_ref(dout, x, w_shape, cfg["s"], cfg["p"], cfg["d"])
    scale = np.abs(ref).max() + 1
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5 * scale)
    gemm = conv2d_backward_weight(dout, x, w_shape, cfg["s"], cfg["p"], cfg["d"], algorithm="im2col")
    np.testing.assert_allclose(got, gemm, rtol=1e-5, atol=1e-5 * scale)


def test_the_oracle_is_the_definition():
    """conv2d_dw_nhwc_ref against the sum written out, pixel by pixel, on a tiny case."""
    dout, x, w_shape = _case(2, 3, 5, 4, 2, 3, 2, (2, 1), (1, 0), (1, 2), seed=3)
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (1, 1), (0, 0)))
    want = np.zeros(w_shape)
    for o, c, kh, kw, n, oh, ow in np.ndindex(*w_shape, *dout.shape[:1], *dout.shape[2:]):
        want[o, c, kh, kw] += dout[n, o, oh, ow] * xp[n, c, oh * 2 + kh, ow + 2 * kw]
    got = M.conv2d_dw_nhwc_ref(dout, x, w_shape, (2, 1), (1, 0), (1, 2))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="one thread: nothing to compare")
@pytest.mark.parametrize("wide", [True, False], ids=["avx512", "avx2"])
@pytest.mark.parametrize("N", [9, 40])   # 2 chunks, and 16 (MAX_CHUNKS) of 2-3 images
def test_the_bits_do_not_depend_on_the_thread_count(N, wide):
    dout, x, w_shape = _case(N, 16, 8, 8, 16, 3, 3, (1, 1), (1, 1), (1, 1), seed=1)
    saved = numba.get_num_threads()
    try:
        runs = []
        for threads in (1, 2):
            numba.set_num_threads(threads)
            with tile_set(wide):
                runs.append(M.conv2d_nhwc_backward_weight(dout, x, w_shape, (1, 1), (1, 1), (1, 1)))
    finally:
        numba.set_num_threads(saved)
    np.testing.assert_array_equal(runs[0], runs[1])


@pytest.mark.parametrize("wide", [True, False], ids=["avx512", "avx2"])
def test_a_zero_padded_channel_count_gives_the_same_bits(wide):
    """9 channels and the same layer padded with zero channels to 16 split the images alike (from the
    padded count) and sum each column in the same order: equal bits on the 9 they share."""
    dout, x16, _ = _case(64, 16, 8, 8, 64, 3, 3, (1, 1), (1, 1), (1, 1), seed=5)
    x16[:, 9:] = 0
    with tile_set(wide):
        dw16 = M.conv2d_nhwc_backward_weight(dout, x16, (64, 16, 3, 3), (1, 1), (1, 1), (1, 1))
        dw9 = M.conv2d_nhwc_backward_weight(dout, np.ascontiguousarray(x16[:, :9]), (64, 9, 3, 3), (1, 1), (1, 1),
                                            (1, 1))
    np.testing.assert_array_equal(dw9, dw16[:, :9])


def test_an_empty_batch_and_a_wrong_dout():
    dout, x, w_shape = _case(2, 16, 6, 6, 8, 3, 3, (1, 1), (1, 1), (1, 1))
    empty = M.conv2d_nhwc_backward_weight(dout[:0], x[:0], w_shape, (1, 1), (1, 1), (1, 1))
    assert empty.shape == w_shape and not empty.any()
    with pytest.raises(ValueError, match="dout has shape"):
        M.conv2d_nhwc_backward_weight(np.zeros((2, 8, 7, 6), np.float32), x, w_shape, (1, 1), (1, 1), (1, 1))


@pytest.mark.parametrize("wide", [True, False], ids=["avx512", "avx2"])
@pytest.mark.parametrize("C,KW,d", [(32, 3, 1), (16, 2, 1), (16, 1, 1), (24, 3, 2), (40, 1, 1)],
                         ids=["span96", "span32", "span16", "per-tap24", "span40"])  # every tile of both sets
def test_loops_run_as_plain_python(C, KW, d, wide):
    """The loops and the padding copy as plain Python (the tiles' Python fallbacks) equal the JIT."""
    dout, x, w_shape = _case(2, C, 4, 5, 16, 2, KW, (1, 1), (1, 1), (1, d), seed=2)
    Cp = M.padded_channels(C, wide)
    xh_py, xh_jit = (np.full((2, 6, 7, Cp), np.nan, np.float32) for _ in range(2))  # all written
    M._pad_channels_last_loops(xh_py, x, 1, 1)
    M.pad_channels_last_jit(xh_jit, x, 1, 1)
    np.testing.assert_array_equal(xh_py, xh_jit)
    np.testing.assert_array_equal(xh_py[:, 1:5, 1:6, :C], x.transpose(0, 2, 3, 1))
    for border in (xh_py[:, 0], xh_py[:, -1], xh_py[:, :, 0], xh_py[:, :, -1], xh_py[..., C:]):
        assert not border.any()   # the padding rows and columns and the extra channels are 0

    calls = []
    real_jit = M.conv2d_dw_nhwc_jit
    M.conv2d_dw_nhwc_jit = lambda *args: (calls.append(args), M._conv2d_dw_nhwc_loops(*args))
    try:
        with tile_set(wide):
            got = M.conv2d_nhwc_backward_weight(dout, x, w_shape, (1, 1), (1, 1), (1, d))
    finally:
        M.conv2d_dw_nhwc_jit = real_jit
    assert calls   # the plain-Python loops ran
    ref = M.conv2d_dw_nhwc_ref(dout, x, w_shape, (1, 1), (1, 1), (1, d))
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


def test_when_conv2d_backward_takes_it():
    def fit(x_shape, w_shape, groups=1, dtype=np.float32, stride=(1, 1)):  # a 3x3 'same' conv's OW
        return M.nhwc_backward_weight_fit(x_shape, w_shape, x_shape[3] // stride[1], groups, dtype)

    with tile_set(True):
        assert fit((2, 16, 8, 8), (8, 16, 3, 3))
        assert fit((2, 16, 32, 32), (16, 16, 3, 3))                     # any OW
        assert fit((2, 9, 8, 8), (8, 9, 3, 3))                          # as its zero-padded 16 channels
        assert not fit((2, 8, 8, 8), (8, 8, 3, 3))                      # half zero channels or more
        assert not fit((2, 16, 8, 8), (7, 16, 3, 3))                    # under one tile of rows
        assert not fit((2, 16, 8, 8), (8, 16, 3, 3), groups=2)
        assert not fit((2, 16, 8, 8), (8, 16, 3, 3), dtype=np.float64)
        assert fit((2, 256, 8, 8), (256, 256, 3, 3))                    # ResNet-18's 256: dw 2.4 MiB
        assert not fit((2, 512, 4, 4), (512, 512, 3, 3))                # 512: dw 9 MiB, im2col + GEMM
    with tile_set(False):   # the AVX2 set: at OW = 8; conv_tiles' dw_tile at 16 and 32 wide
        assert fit((2, 64, 8, 8), (64, 64, 3, 3))
        assert fit((2, 32, 16, 16), (64, 32, 3, 3), stride=(2, 2))
        assert not fit((2, 16, 32, 32), (32, 16, 3, 3), stride=(2, 2))
        assert not fit((2, 16, 32, 32), (16, 16, 3, 3))
        assert not fit((2, 32, 16, 16), (32, 32, 3, 3))
        assert not fit((2, 8, 8, 8), (8, 8, 3, 3))
    dout, x, w_shape = _case(3, 32, 8, 8, 16, 3, 3, (1, 1), (1, 1), (1, 1), seed=4)
    w = np.zeros(w_shape, np.float32)
    for wide in (True, False):
        with tile_set(wide):
            _, dw = conv2d_backward(dout, x, w, 1, 1, need_input=False)
            np.testing.assert_array_equal(dw, M.conv2d_nhwc_backward_weight(dout, x, w_shape, (1, 1), (1, 1), (1, 1)))


def test_conv2d_backward_takes_it_where_the_rule_says(monkeypatch):
    """The AVX2 set sends an 8-wide layer here and keeps a 16-wide one on dw_tile; AVX-512 sends both."""
    from tinycomp_kernels import conv as conv_module

    calls = []
    real = conv_module.conv2d_nhwc_backward_weight
    monkeypatch.setattr(conv_module, "conv2d_nhwc_backward_weight", lambda *a: (calls.append(a[0].shape), real(*a))[1])
    for wide, W, taken in ((False, 8, True), (False, 16, False), (True, 16, True)):
        dout, x, w_shape = _case(2, 16, W, W, 8, 3, 3, (1, 1), (1, 1), (1, 1), seed=7)
        calls.clear()
        with tile_set(wide):
            _, dw = conv2d_backward(dout, x, np.zeros(w_shape, np.float32), 1, 1, need_input=False)
        assert bool(calls) == taken, (wide, W)
        ref = M.conv2d_dw_nhwc_ref(dout, x, w_shape, (1, 1), (1, 1), (1, 1))
        np.testing.assert_allclose(dw, ref, rtol=1e-5, atol=1e-5 * (np.abs(ref).max() + 1))
