"""XNOR GEMM and binary convolution: JIT against independent NumPy references, exactly."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

from strategies import sign_arrays
from tinycomp_kernels import xnor_conv as xnor
from tinycomp_kernels.bits import pack_signs, unpack_signs
from tinycomp_kernels.popcount import (popcount64, popcount64_ref, xor_popcount_tile_4x8,
                                       xor_popcount_tile_4x32)
from tinycomp_kernels.xnor_conv import (binary_conv2d, binary_conv2d_ref, pack_activations, pack_conv_weights,
                                   popcount_instruction_counts, xnor_gemm, xnor_gemm_ref)


def signs(x):
    return np.where(x >= 0, 1.0, -1.0)  # sign(0) = +1


# --- popcount -----------------------------------------------------------------------------------
def test_popcount64_python_and_jit():
    from numba import njit

    values = [0, 1, 2 ** 63, 2 ** 64 - 1, 0x5555555555555555, 12345678901234567]
    jit = njit(lambda v: popcount64(v))
    for v in values:
        assert popcount64(v) == popcount64_ref(v) == jit(np.uint64(v))
    assert popcount64(-1) == jit(np.int64(-1)) == jit(np.int32(-1)) == 64


# --- GEMM ---------------------------------------------------------------------------------------
@st.composite
def gemm_case(draw):
    M = draw(st.integers(1, 40))
    N = draw(st.integers(1, 75))
    K = draw(st.sampled_from([1, 7, 63, 64, 65, 130, 576]))
    return draw(sign_arrays((M, K))), draw(sign_arrays((N, K)))


@given(gemm_case())
def test_xnor_gemm_equals_unpacked_matmul(case):
    a, b = case
    K = a.shape[1]
    a_bits, b_bits = pack_signs(a), pack_signs(b)
    out = xnor_gemm(a_bits, b_bits, K)
    assert out.dtype == np.int32 and out.shape == (a.shape[0], b.shape[0])
    np.testing.assert_array_equal(out, xnor_gemm_ref(unpack_signs(a_bits, K), unpack_signs(b_bits, K)))
    np.testing.assert_array_equal(out, signs(a) @ signs(b).T)


@pytest.mark.parametrize("M, N, K", [(130, 100, 300), (70, 64, 1152), (9, 200, 64)])
def test_xnor_gemm_all_tile_paths(M, N, K):
    # 4x32 strips, a 4x8 strip, scalar columns and scalar rows, several column groups.
    rng = np.random.default_rng(M + N + K)
    a, b = rng.standard_normal((M, K)), rng.standard_normal((N, K))
    out = xnor_gemm(pack_signs(a), pack_signs(b), K)
    np.testing.assert_array_equal(out, xnor_gemm_ref(signs(a), signs(b)))


def test_xnor_gemm_noncontiguous_operands_are_copied():
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((12, 100)), rng.standard_normal((10, 100))
    a_bits = np.asfortranarray(pack_signs(a))
    b_bits = np.concatenate([pack_signs(b), pack_signs(b)], axis=1)[:, :2]  # strided view
    np.testing.assert_array_equal(xnor_gemm(a_bits, b_bits, 100), xnor_gemm_ref(signs(a), signs(b)))


def test_loops_in_plain_python(monkeypatch):
    rng = np.random.default_rng(4)
    a_bits = pack_signs(rng.standard_normal((6, 70)))
    b_bits = pack_signs(rng.standard_normal((41, 70)))
    expect = xnor_gemm_ref(unpack_signs(a_bits, 70), unpack_signs(b_bits, 70))
    block = getattr(xnor._xnor_dot_block, "py_func", xnor._xnor_dot_block)
    monkeypatch.setattr(xnor, "_xnor_dot_block", block)  # no JIT anywhere
    out = np.zeros((6, 41), dtype=np.int32)
    xnor._xnor_gemm_loops(out, a_bits, np.ascontiguousarray(b_bits.T), 70, 32)
    np.testing.assert_array_equal(out, expect)
    tile = np.zeros((4, 32), dtype=np.int32)
    xor_popcount_tile_4x32(tile, a_bits, np.ascontiguousarray(b_bits.T), 0, 0, 70)
    np.testing.assert_array_equal(tile, expect[:4, :32])
    tile = np.zeros((6, 41), dtype=np.int32)
    xor_popcount_tile_4x8(tile, a_bits, np.ascontiguousarray(b_bits.T), 2, 33, 70)
    np.testing.assert_array_equal(tile[2:6, 33:41], expect[2:6, 33:41])
    # binary convolution: patches + epilogue + NCHW packing, all in Python
    x = rng.standard_normal((1, 3, 4, 3)).astype(np.float32)
    w = rng.standard_normal((2, 3, 3, 3)).astype(np.float32)
    x_bits = np.empty((1, 12, 1), dtype=np.uint64)
    xnor._pack_nchw_loops(x_bits, x.reshape(1, 3, 12), np.empty((1, 12), dtype=np.uint64))
    x_bits = x_bits.reshape(1, 4, 3, 1)
    np.testing.assert_array_equal(x_bits, pack_activations(x))
    w_bits = pack_conv_weights(w)
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
    xnor._binary_conv2d_loops(y, np.empty((2, OH * OW), np.int32), w_bits.reshape(2, 9), patches_t, adjust_t,
                              np.ones(2, np.float32), np.zeros(2, np.float32), 27, True, 32)
    np.testing.assert_array_equal(y.reshape(1, 2, OH, OW), binary_conv2d_ref(signs(x), signs(w), 2, 1))


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
    y = binary_conv2d(pack_activations(x_in, layout=layout), pack_conv_weights(w), C, stride=stride,
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
    y = binary_conv2d(pack_activations(x), pack_conv_weights(w), C, stride=stride, padding=1, pad_mode=pad_mode)
    np.testing.assert_array_equal(y, binary_conv2d_ref(signs(x), signs(w), stride, 1, pad_mode))


def test_zero_padding_differs_from_plus_one_padding():
    x = -np.ones((1, 5, 3, 3), dtype=np.float32)
    w = np.ones((1, 5, 3, 3), dtype=np.float32)
    args = (pack_activations(x), pack_conv_weights(w), 5)
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
    xb, wb = pack_activations(x), pack_conv_weights(w)
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
_A, _B = pack_signs(np.ones((4, 70))), pack_signs(np.ones((3, 70)))
_X, _W = pack_activations(np.ones((1, 70, 4, 4), np.float32)), pack_conv_weights(np.ones((2, 70, 3, 3)))


@pytest.mark.parametrize("call, exc, words", [
    (lambda: xnor_gemm(_A.astype(np.int64), _B, 70), TypeError, "xnor_gemm: a_bits"),
    (lambda: xnor_gemm(_A, [[1, 2]], 70), TypeError, "xnor_gemm: b_bits"),
    (lambda: xnor_gemm(_A[0], _B, 70), ValueError, "xnor_gemm: a_bits"),
    (lambda: xnor_gemm(_A, _B[:, :1], 70), ValueError, "xnor_gemm: a_bits has 2 words"),
    (lambda: xnor_gemm(_A, _B, 200), ValueError, "xnor_gemm: n_bits=200"),
    (lambda: xnor_gemm(_A, _B, 64), ValueError, "xnor_gemm: n_bits=64"),
    (lambda: xnor_gemm(_A, _B, 70.0), TypeError, "xnor_gemm: n_bits"),
    (lambda: xnor_gemm(_A, _B | np.uint64(1 << 63), 70), ValueError, "xnor_gemm: b_bits has nonzero tail"),
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
    (lambda: pack_conv_weights(np.ones((2, 3))), TypeError, "pack_conv_weights: w"),
])
def test_bad_input(call, exc, words):
    with pytest.raises(exc, match=words):
        call()


def test_compiled_gemm_uses_vector_popcount():
    import llvmlite.binding as llvm
    from numba import config

    if config.DISABLE_JIT:
        pytest.skip("NUMBA_DISABLE_JIT=1: nothing is compiled")
    counts = popcount_instruction_counts()
    assert set(counts) == {"zmm", "ymm", "xmm", "scalar", "cpu"}
    if "+avx512vpopcntdq" not in llvm.get_host_cpu_features().flatten():
        pytest.skip("no AVX-512 VPOPCNTDQ on this CPU")
    assert counts["zmm"] + counts["ymm"] >= 16  # at least the 4 x 32 tile's 16 vector popcounts


def test_numpy_int_counts_do_not_overflow():
    """channels / n_bits given as small NumPy ints (int8, uint8) give the same result as Python ints:
    the wrappers convert them before any arithmetic (np.int8(100) + 63 would wrap)."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 100, 5, 5)).astype(np.float32)
    w = rng.standard_normal((3, 100, 3, 3)).astype(np.float32)
    xb, wb = pack_activations(x), pack_conv_weights(w)
    expected = binary_conv2d(xb, wb, 100)
    for ch in (np.int8(100), np.uint8(100)):
        np.testing.assert_array_equal(binary_conv2d(xb, wb, ch), expected)
    a, b = pack_signs(x.reshape(4, -1)), pack_signs(x.reshape(4, -1)[::-1].copy())
    np.testing.assert_array_equal(xnor.xnor_gemm(a, b, np.int16(625)), xnor.xnor_gemm(a, b, 625))
