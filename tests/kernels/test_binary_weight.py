"""tinycomp_kernels.binary_weight: the packed-weight convolution equals a float conv with alpha*sign(w)."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

from strategies import conv_configs
from tinycomp_kernels import binary_weight as bw
from tinycomp_kernels.bits import pack_signs


def float_conv_im2col(x, w, stride, padding, dilation):
    """Independent float conv: im2col by explicit loops over taps (float64), then one matmul."""
    N, C, H, W = x.shape
    O, _, KH, KW = w.shape
    OH = (H + 2 * padding - dilation * (KH - 1) - 1) // stride + 1
    OW = (W + 2 * padding - dilation * (KW - 1) - 1) // stride + 1
    xp = np.zeros((N, C, H + 2 * padding, W + 2 * padding))
    xp[:, :, padding:padding + H, padding:padding + W] = x
    cols = np.zeros((C, KH, KW, N, OH, OW))
    for kh in range(KH):
        for kw in range(KW):
            for oh in range(OH):
                for ow in range(OW):
                    cols[:, kh, kw, :, oh, ow] = xp[:, :, oh * stride + kh * dilation, ow * stride + kw * dilation].T
    y = w.reshape(O, -1).astype(np.float64) @ cols.reshape(C * KH * KW, -1)  # (O, N*OH*OW)
    return y.reshape(O, N, OH, OW).transpose(1, 0, 2, 3)


def effective_weights(w, scale):
    s = np.where(w >= 0, 1.0, -1.0)  # sign(0) = +1
    if scale == "filter":
        alpha = np.abs(w).reshape(w.shape[0], -1).mean(axis=1)
    elif scale == "layer":
        alpha = np.full(w.shape[0], np.abs(w).mean())
    else:
        alpha = np.ones(w.shape[0])
    return s * alpha[:, None, None, None]


@st.composite
def bw_cases(draw):
    cfg = draw(conv_configs(max_batch=2, max_channels=9, max_size=8, groups=False))
    # sometimes many channels: K = C*KH*KW crosses one or several 64-bit words and _KC chunks
    if draw(st.integers(0, 3)) == 0:
        cfg["C"] = draw(st.sampled_from([29, 64, 71, 130]))
    seed = draw(st.integers(0, 2**32 - 1))
    scale = draw(st.sampled_from(["filter", "layer", "none"]))
    return cfg, seed, scale


@given(bw_cases())
def test_equals_float_conv_with_sign_weights(case):
    cfg, seed, scale = case
    rng = np.random.default_rng(seed)
    N, C, H, W, O, KH, KW = (cfg[k] for k in ("N", "C", "H", "W", "O", "KH", "KW"))
    s, p, d = cfg["stride"], cfg["padding"], cfg["dilation"]
    x = rng.standard_normal((N, C, H, W)).astype(np.float32)
    w = rng.standard_normal((O, C, KH, KW)).astype(np.float32)
    w[rng.random(w.shape) < 0.1] = 0.0  # sign(0) = +1
    w_bits, alpha = bw.pack_weights_per_filter(w, scale=scale)
    got = bw.binary_weight_conv2d(x, w_bits, alpha, (KH, KW), stride=s, padding=p, dilation=d)
    want = float_conv_im2col(x, effective_weights(w.astype(np.float64), scale), s, p, d)
    assert got.dtype == np.float32 and got.shape == want.shape
    # float32 sums of up to C*KH*KW terms of size |x|*alpha, in another order than float64
    tol = 1e-5 * np.sqrt(C * KH * KW) * max(1.0, float(np.max(alpha)) * 4)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=tol)
    np.testing.assert_allclose(bw.binary_weight_conv2d_ref(x, w_bits, alpha, (KH, KW), s, p, d), want,
                               rtol=1e-4, atol=tol)


def test_bc_scalar_alpha_and_pack_signs_bits():
    # BC: a scalar alpha of 1, bits straight from bits.pack_signs; 1x1 kernel, stride 2
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 67, 5, 6)).astype(np.float32)
    w = rng.standard_normal((5, 67, 1, 1)).astype(np.float32)
    w_bits = pack_signs(w.reshape(5, -1))
    got = bw.binary_weight_conv2d(x, w_bits, 1.0, 1, stride=2)
    want = float_conv_im2col(x, np.where(w >= 0, 1.0, -1.0), 2, 0, 1)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_many_items_and_channel_blocks():
    # batch 1 with few tiles splits the output channels into blocks; batch 3 uses several tiles
    rng = np.random.default_rng(4)
    for N, C, H, O in [(1, 130, 7, 40), (3, 20, 13, 9)]:
        x = rng.standard_normal((N, C, H, H)).astype(np.float32)
        w = rng.standard_normal((O, C, 3, 3)).astype(np.float32)
        w_bits, alpha = bw.pack_weights_per_filter(w)
        got = bw.binary_weight_conv2d(x, w_bits, alpha, 3, padding=1)
        want = float_conv_im2col(x, effective_weights(w.astype(np.float64), "filter"), 1, 1, 1)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_loops_run_in_plain_python():
    rng = np.random.default_rng(5)
    N, C, H, W, O, KH, KW = 1, 3, 4, 3, 2, 2, 2
    x = rng.standard_normal((N, C, H, W)).astype(np.float32)
    w = rng.standard_normal((O, C, KH, KW)).astype(np.float32)
    w_bits, alpha = bw.pack_weights_per_filter(w)
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))  # padding 1
    OH, OW = H + 2 - KH + 1, W + 2 - KW + 1
    out = np.full((N, O, OH, OW), np.nan, np.float32)
    col = np.empty((1, bw._KC, bw._LT), np.float32)
    table = np.empty((1, bw._KC // 4, 16, bw._LT), np.float32)
    acc = np.empty((1, O, bw._LT), np.float32)
    offs = np.empty((1, bw._LT), np.int64)
    bw._bwconv_loops(out, xp, w_bits, alpha, KH, KW, 1, 1, 1, 1, 1, col, table, acc, offs)
    want = float_conv_im2col(x, effective_weights(w.astype(np.float64), "filter"), 1, 1, 1)
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)


def test_bad_inputs():
    x = np.zeros((1, 3, 5, 5), np.float32)
    w_bits, alpha = bw.pack_weights_per_filter(np.ones((4, 3, 3, 3), np.float32))
    f = bw.binary_weight_conv2d
    with pytest.raises(TypeError, match="binary_weight_conv2d: x"):
        f(x.astype(np.float64), w_bits, alpha, 3)
    with pytest.raises(TypeError, match="binary_weight_conv2d: x"):
        f(x.tolist(), w_bits, alpha, 3)
    with pytest.raises(ValueError, match="binary_weight_conv2d: x"):
        f(x[0], w_bits, alpha, 3)
    with pytest.raises(TypeError, match="binary_weight_conv2d: w_bits"):
        f(x, w_bits.astype(np.int64), alpha, 3)
    with pytest.raises(ValueError, match="binary_weight_conv2d: w_bits"):
        f(x, np.zeros((4, 2), np.uint64), alpha, 3)  # 27 taps need 1 word
    with pytest.raises(ValueError, match="binary_weight_conv2d: w_bits"):
        f(x, w_bits | np.uint64(1 << 40), alpha, 3)  # tail bit set past K = 27
    with pytest.raises(ValueError, match="binary_weight_conv2d: alpha"):
        f(x, w_bits, np.ones(3, np.float32), 3)
    with pytest.raises(ValueError, match="binary_weight_conv2d: alpha"):
        f(x, w_bits, np.nan, 3)
    with pytest.raises(ValueError, match="binary_weight_conv2d: stride"):
        f(x, w_bits, alpha, 3, stride=0)
    with pytest.raises(ValueError, match="binary_weight_conv2d: padding"):
        f(x, w_bits, alpha, 3, padding=-1)
    with pytest.raises(ValueError, match="binary_weight_conv2d"):
        f(x, w_bits, alpha, 3, dilation=3)  # 7x7 window on a 5x5 input
    with pytest.raises(TypeError, match="pack_weights_per_filter: w"):
        bw.pack_weights_per_filter(np.ones((2, 3, 3, 3), np.int32))
    with pytest.raises(ValueError, match="pack_weights_per_filter: w"):
        bw.pack_weights_per_filter(np.ones((2, 27), np.float32))
    with pytest.raises(ValueError, match="pack_weights_per_filter: scale"):
        bw.pack_weights_per_filter(np.ones((2, 3, 3, 3), np.float32), scale="row")
