"""Binary (XNOR) convolution: JIT against an independent NumPy reference (unpack, pad, im2col, matmul), exactly."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

from strategies import sign_arrays
from tinycomp_kernels import xnor_conv as xnor
from tinycomp_kernels.bits import pack_signs
from tinycomp_kernels.xnor_conv import (BinaryConv2dPlan, binary_conv2d, binary_conv2d_ref, pack_activations,
                                        pack_weights_per_tap)


def signs(x):
    return np.where(x >= 0, 1.0, -1.0)  # sign(0) = +1


def test_loops_in_plain_python(monkeypatch):
    """Patches, the GEMM block, the epilogue and the NCHW packing, all in Python."""
    block = getattr(xnor.xnor_dot_block, "py_func", xnor.xnor_dot_block)
    monkeypatch.setattr(xnor, "xnor_dot_block", block)  # no JIT anywhere
    rng = np.random.default_rng(4)
    x = rng.standard_normal((1, 3, 4, 3)).astype(np.float32)
    w = rng.standard_normal((2, 3, 3, 3)).astype(np.float32)
    x_bits = np.empty((1, 12, 1), dtype=np.uint64)
    xnor._pack_nchw_loops(x_bits, x.reshape(1, 3, 12), np.empty((1, 12), dtype=np.uint64))
    x_bits = x_bits.reshape(1, 4, 3, 1)
    np.testing.assert_array_equal(x_bits, pack_activations(x))
    w_bits = pack_weights_per_tap(w)
    OH, OW = 2, 2  # stride 2, padding 1
    patches_t = np.empty((9, OH * OW), dtype=np.uint64)
    xnor._patches_t_loops(patches_t, x_bits, np.zeros(1, np.uint64), 3, 3, 2, 2, 1, 1, OH, OW)
    tight = np.empty((1, OH * OW), dtype=np.uint64)  # C = 3 does not divide 64; the loop does not care
    xnor._patches_t_tight_loops(tight, x_bits, np.zeros(1, np.uint64), 3, 3, 3, 2, 2, 1, 1, OH, OW)
    np.testing.assert_array_equal(tight[0] & np.uint64(0b111), patches_t[0])
    np.testing.assert_array_equal((tight[0] >> np.uint64(3)) & np.uint64(0b111), patches_t[1])
    tap_pop = np.array([[bin(int(v)).count("1") for v in w_bits[o].ravel()] for o in range(2)], np.int32).T
    adjust_t = np.empty((2, OH * OW), dtype=np.int32)
    xnor._padding_adjust_loops(adjust_t, np.ascontiguousarray(tap_pop), 3, 4, 3, 3, 3, 2, 2, 1, 1, OW)
    y = np.empty(2 * OH * OW, dtype=np.float32)
    xnor._binary_conv2d_loops(y, w_bits.reshape(2, 9), patches_t, adjust_t,
                              np.ones(2, np.float32), np.zeros(2, np.float32), 27, True, 32, np.zeros(1, np.float32),
                              False)
    np.testing.assert_array_equal(y.reshape(1, 2, OH, OW), binary_conv2d_ref(signs(x), signs(w), 2, 1))
    res = np.arange(2 * OH * OW, dtype=np.float32)  # the fused residual, NCHW then NHWC
    for nchw in (True, False):
        xnor._binary_conv2d_loops(y, w_bits.reshape(2, 9), patches_t, adjust_t,
                                  np.ones(2, np.float32), np.zeros(2, np.float32), 27, nchw, 32, res, True)
        ref = binary_conv2d_ref(signs(x), signs(w), 2, 1)
        ref = ref.reshape(-1) if nchw else ref.transpose(0, 2, 3, 1).reshape(-1)
        np.testing.assert_array_equal(y, ref + res)


# --- binary convolution -------------------------------------------------------------------------
@st.composite
def conv_case(draw):
    N = draw(st.integers(1, 2))
    C = draw(st.sampled_from([1, 3, 8, 16, 32, 63, 64, 65, 130]))
    k = draw(st.sampled_from([1, 2, 3]))
    stride = draw(st.integers(1, 2))
    padding = draw(st.integers(0, 2 if k > 1 else 1))
    H = draw(st.integers(max(1, k - 2 * padding), 7))
    W = draw(st.integers(max(1, k - 2 * padding), 7))
    O = draw(st.sampled_from([1, 5, 16, 33, 40]))
    x = draw(sign_arrays((N, C, H, W)))
    w = draw(sign_arrays((O, C, k, k)))
    return x, w, stride, padding


@given(conv_case(), st.sampled_from(["zero", "one"]), st.sampled_from(["NCHW", "NHWC"]))
def test_binary_conv2d_equals_float_conv_of_signs(case, pad_mode, layout):
    x, w, stride, padding = case
    C = x.shape[1]
    x_in = x if layout == "NCHW" else np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    y = binary_conv2d(pack_activations(x_in, layout=layout), pack_weights_per_tap(w), C, stride=stride,
                      padding=padding, pad_mode=pad_mode, layout=layout)
    ref = binary_conv2d_ref(signs(x), signs(w), stride, padding, pad_mode)  # (N, O, OH, OW)
    if layout == "NHWC":
        ref = ref.transpose(0, 2, 3, 1)
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y, ref)


@pytest.mark.parametrize("C, stride, pad_mode", [(16, 1, "zero"), (32, 2, "one"), (8, 1, "one"), (2, 2, "zero")])
def test_bit_tight_patches_for_channels_dividing_64(C, stride, pad_mode):
    rng = np.random.default_rng(C)
    x = rng.standard_normal((2, C, 7, 6)).astype(np.float32)
    w = rng.standard_normal((20, C, 3, 3)).astype(np.float32)
    y = binary_conv2d(pack_activations(x), pack_weights_per_tap(w), C, stride=stride, padding=1, pad_mode=pad_mode)
    np.testing.assert_array_equal(y, binary_conv2d_ref(signs(x), signs(w), stride, 1, pad_mode))


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_many_work_items_with_blocks_across_images(layout):
    """O = 70 (two row chunks, a 6-row tail) and 3 images of 12 x 12 positions (work items of 128 columns
    start mid-image): every block's counts, its epilogue and the fused residual land where they belong."""
    rng = np.random.default_rng(9)
    x = rng.standard_normal((3, 70, 12, 12)).astype(np.float32)
    w = rng.standard_normal((70, 70, 3, 3)).astype(np.float32)
    res = rng.standard_normal((3, 70, 12, 12)).astype(np.float32)
    ref = binary_conv2d_ref(signs(x), signs(w), 1, 1).astype(np.float32)
    if layout == "NHWC":
        res, ref = (np.ascontiguousarray(v.transpose(0, 2, 3, 1)) for v in (res, ref))
    plan = BinaryConv2dPlan(pack_weights_per_tap(w), 70, (12, 12), padding=1, layout=layout)
    np.testing.assert_array_equal(plan(pack_activations(x)), ref)
    np.testing.assert_array_equal(plan(pack_activations(x), res), ref + res)


def test_zero_padding_differs_from_plus_one_padding():
    x = -np.ones((1, 5, 3, 3), dtype=np.float32)
    w = np.ones((1, 5, 3, 3), dtype=np.float32)
    args = (pack_activations(x), pack_weights_per_tap(w), 5)
    zero = binary_conv2d(*args, padding=1)
    one = binary_conv2d(*args, padding=1, pad_mode="one")
    assert zero[0, 0, 0, 0] == -20 and one[0, 0, 0, 0] == -20 + 25  # 4 valid taps; 5 padded taps of +1
    assert zero[0, 0, 1, 1] == one[0, 0, 1, 1] == -45


@given(conv_case())
def test_alpha_and_folded_batchnorm(case):
    x, w, stride, padding = case
    O, C = w.shape[0], x.shape[1]
    rng = np.random.default_rng(O * 7 + C)
    alpha = rng.random(O).astype(np.float32) + 0.1
    scale, bias = rng.standard_normal(O).astype(np.float32), rng.standard_normal(O).astype(np.float32)
    xb, wb = pack_activations(x), pack_weights_per_tap(w)
    integer = binary_conv2d_ref(signs(x), signs(w), stride, padding).astype(np.float32)
    y = binary_conv2d(xb, wb, C, stride=stride, padding=padding, alpha=alpha)
    np.testing.assert_array_equal(y, integer * alpha[None, :, None, None])  # one float32 product each
    y = binary_conv2d(xb, wb, C, stride=stride, padding=padding, alpha=alpha, bn_scale=scale, bn_bias=bias)
    expect = integer * (alpha * scale)[None, :, None, None] + bias[None, :, None, None]
    np.testing.assert_allclose(y, expect, rtol=1e-6, atol=1e-5 * np.abs(expect).max())


def test_pack_activations_layouts_agree():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 130, 3, 5)).astype(np.float32)
    x[0, :, 0, 0] = 0.0
    a = pack_activations(x)
    assert a.shape == (2, 3, 5, 3) and a.dtype == np.uint64
    np.testing.assert_array_equal(a, pack_signs(x, axis=1).transpose(0, 2, 3, 1))
    np.testing.assert_array_equal(a, pack_activations(np.ascontiguousarray(x.transpose(0, 2, 3, 1)), "NHWC"))
    np.testing.assert_array_equal(a, pack_activations(x[:, :, :, ::-1][:, :, :, ::-1]))  # non-contiguous


# --- bad input ----------------------------------------------------------------------------------
_X, _W = pack_activations(np.ones((1, 70, 4, 4), np.float32)), pack_weights_per_tap(np.ones((2, 70, 3, 3)))


@pytest.mark.parametrize("call, exc, words", [
    (lambda: binary_conv2d(_X.astype(np.float32), _W, 70), TypeError, "binary_conv2d: x_bits"),
    (lambda: binary_conv2d(_X, _W[0], 70), ValueError, "binary_conv2d: w_bits"),
    (lambda: binary_conv2d(_X, _W[..., :1], 70), ValueError, "binary_conv2d: w_bits has 1 words"),
    (lambda: binary_conv2d(_X, _W, 64), ValueError, "binary_conv2d: channels=64"),
    (lambda: binary_conv2d(_X, _W, "70"), TypeError, "binary_conv2d: channels"),
    (lambda: binary_conv2d(_X, _W, 70, stride=0), ValueError, "binary_conv2d: stride"),
    (lambda: binary_conv2d(_X, _W, 70, stride=1.5), TypeError, "binary_conv2d: stride"),
    (lambda: binary_conv2d(_X, _W, 70, stride=(1, 1, 1)), ValueError, "binary_conv2d: stride must be an int or a pair"),
    (lambda: binary_conv2d(_X, _W, 70, padding=True), TypeError, "binary_conv2d: padding must be an int or a pair"),
    (lambda: binary_conv2d(_X, _W, 70, padding=-1), ValueError, "binary_conv2d: padding"),
    (lambda: binary_conv2d(_X[:, :2], _W, 70), ValueError, "binary_conv2d: kernel 3x3 does not fit"),
    (lambda: binary_conv2d(_X, _W, 70, pad_mode="reflect"), ValueError, "binary_conv2d: pad_mode"),
    (lambda: binary_conv2d(_X, _W, 70, layout="CHWN"), ValueError, "binary_conv2d: layout"),
    (lambda: binary_conv2d(_X, _W, 70, alpha=np.ones(3)), ValueError, "binary_conv2d: alpha"),
    (lambda: binary_conv2d(_X, _W, 70, bn_scale=[1.0, 2.0]), TypeError, "binary_conv2d: bn_scale"),
    (lambda: binary_conv2d(_X, _W, 70, bn_bias=np.ones((2, 1))), ValueError, "binary_conv2d: bn_bias"),
    (lambda: binary_conv2d(_X | np.uint64(1 << 40), _W, 70), ValueError, "binary_conv2d: x_bits has nonzero tail"),
    (lambda: pack_activations(np.ones((1, 2, 3), np.float32)), ValueError, "pack_activations: x"),
    (lambda: pack_activations(np.ones((1, 2, 3, 3), np.int32)), TypeError, "pack_activations: x"),
    (lambda: pack_activations(np.ones((1, 2, 3, 3)), layout="CHWN"), ValueError, "pack_activations: layout"),
    (lambda: pack_weights_per_tap(np.ones((2, 3))), TypeError, "pack_weights_per_tap: w"),
])
def test_bad_input(call, exc, words):
    with pytest.raises(exc, match=words):
        call()


def test_numpy_int_counts_do_not_overflow():
    """channels given as small NumPy ints (int8, uint8) gives the same result as Python ints: the
    wrapper converts them before any arithmetic (np.int8(100) + 63 would wrap)."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 100, 5, 5)).astype(np.float32)
    w = rng.standard_normal((3, 100, 3, 3)).astype(np.float32)
    xb, wb = pack_activations(x), pack_weights_per_tap(w)
    expected = binary_conv2d(xb, wb, 100)
    for ch in (np.int8(100), np.uint8(100)):
        np.testing.assert_array_equal(binary_conv2d(xb, wb, ch), expected)


@given(conv_case(), st.sampled_from(["zero", "one"]), st.sampled_from(["NCHW", "NHWC"]))
def test_a_plan_equals_the_one_shot_call_on_every_batch(case, pad_mode, layout):
    """BinaryConv2dPlan keeps the weight rows and padding correction; each call equals binary_conv2d."""
    x, w, stride, padding = case
    C, H, W = x.shape[1:]
    alpha = np.linspace(0.5, 1.5, w.shape[0]).astype(np.float32)
    plan = xnor.BinaryConv2dPlan(pack_weights_per_tap(w), C, (H, W), stride, padding, alpha=alpha,
                                 pad_mode=pad_mode, layout=layout)
    for batch in (x, x[:1], np.concatenate([x, -x])):
        bits = pack_activations(np.ascontiguousarray(batch))
        y = binary_conv2d(bits, pack_weights_per_tap(w), C, stride, padding, alpha=alpha, pad_mode=pad_mode,
                          layout=layout)
        np.testing.assert_array_equal(plan(bits), y)
        residual = np.random.default_rng(len(batch)).standard_normal(y.shape).astype(np.float32)
        np.testing.assert_array_equal(plan(bits, residual), y + residual)  # fused: the rounding of two passes


def test_a_plan_refuses_an_input_of_another_size_and_tail_bits():
    w = pack_weights_per_tap(np.ones((4, 70, 3, 3), np.float32))
    plan = xnor.BinaryConv2dPlan(w, 70, (5, 5), padding=1)
    good = pack_activations(np.ones((2, 70, 5, 5), np.float32))
    assert plan(good).shape == (2, 4, 5, 5)
    with pytest.raises(ValueError, match=r"x_bits must be uint64 \(N, 5, 5, 2\) for this plan, got uint64 \(2, 6, 5, 2\)"):
        plan(pack_activations(np.ones((2, 70, 6, 5), np.float32)))
    with pytest.raises(ValueError, match="x_bits has nonzero tail"):
        plan(good | np.uint64(1 << 40))
    with pytest.raises(ValueError, match=r"residual must be float32 \(2, 4, 5, 5\), got float64"):
        plan(good, np.zeros((2, 4, 5, 5)))
    with pytest.raises(ValueError, match="input size 0x5"):
        xnor.BinaryConv2dPlan(w, 70, (0, 5))
