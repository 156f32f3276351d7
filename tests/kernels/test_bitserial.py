"""Bit-serial k-bit GEMM and convolution: every path against int64 NumPy references, exactly."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from tinycomp_kernels import bitserial as bs
from tinycomp_kernels import bitserial_conv as bc
from tinycomp_kernels.bitserial import (bitserial_gemm, bitserial_gemm_ref, code_range, pack_planes,
                                        pack_planes_ref, unpack_planes)
from tinycomp_kernels.bitserial_conv import (bitserial_conv2d, bitserial_conv2d_ref, pack_activation_planes,
                                             pack_weight_planes, patch_sums, patch_sums_ref)
from tinycomp_kernels.im2col import im2col_ref

CODE_DTYPES = [np.int8, np.uint8, np.int16, np.int64]


def random_codes(rng, shape, bits, signed, dtype=None):
    lo, hi = code_range(bits, signed)
    if dtype is None or (not signed and np.dtype(dtype).kind == "i" and hi > np.iinfo(dtype).max) \
            or (signed and np.dtype(dtype).kind == "u"):
        dtype = np.int16
    codes = rng.integers(lo, hi + 1, shape)
    codes.flat[:2] = [lo, hi][:codes.size]  # both ends of the range, always
    return codes.astype(dtype)


operand = st.tuples(st.integers(1, 8), st.booleans())  # (bits, signed)


# --- packing ------------------------------------------------------------------------------------
@settings(max_examples=15)
@given(operand, st.integers(1, 6), st.sampled_from([1, 63, 64, 65, 130, 200]), st.sampled_from(CODE_DTYPES),
       st.integers(0, 2**32 - 1))
def test_pack_planes_matches_oracle_and_round_trips(op, M, K, dtype, seed):
    bits, signed = op
    codes = random_codes(np.random.default_rng(seed), (M, K), bits, signed, dtype)
    planes = pack_planes(codes, bits, signed)
    assert planes.shape == (bits, M, -(-K // 64)) and planes.dtype == np.uint64
    np.testing.assert_array_equal(planes, pack_planes_ref(codes, bits))
    np.testing.assert_array_equal(unpack_planes(planes, K, signed), codes.astype(np.int64))
    if K % 64:
        assert not (planes[..., -1] >> np.uint64(K % 64)).any()  # tail bits 0


def test_signed_planes_are_twos_complement():
    planes = pack_planes(np.array([[-4, -1, 0, 3]], np.int8), 3, signed=True)
    # -4 = 100, -1 = 111, 0 = 000, 3 = 011 (bit i of element k -> plane i, bit k)
    assert [int(p[0, 0]) for p in planes] == [0b1010, 0b1010, 0b0011]


# --- GEMM ---------------------------------------------------------------------------------------
@settings(max_examples=25)
@given(operand, operand, st.integers(1, 13), st.integers(1, 20), st.sampled_from([1, 5, 64, 65, 127, 200]),
       st.integers(0, 2**32 - 1))
def test_bitserial_gemm_equals_int64_matmul(a_op, b_op, M, N, K, seed):
    rng = np.random.default_rng(seed)
    a = random_codes(rng, (M, K), *a_op, dtype=CODE_DTYPES[rng.integers(4)])
    b = random_codes(rng, (N, K), *b_op, dtype=CODE_DTYPES[rng.integers(4)])
    out = bitserial_gemm(pack_planes(a, *a_op), pack_planes(b, *b_op), K, a_signed=a_op[1], b_signed=b_op[1])
    assert out.dtype == np.int32 and out.shape == (M, N)
    np.testing.assert_array_equal(out, bitserial_gemm_ref(a, b))


@pytest.mark.parametrize("signed", [False, True])
def test_gemm_at_the_int32_bound(signed):
    # the largest reduction allowed for 8 x 8 bits: every product at its extreme
    lo, hi = code_range(8, signed)
    K = (2**31 - 1) // (max(-lo, hi) * 255)
    a = np.full((5, K), lo if signed else hi, np.int16)
    b = np.full((9, K), 255, np.int16)
    out = bitserial_gemm(pack_planes(a, 8, signed), pack_planes(b, 8), K, a_signed=signed)
    np.testing.assert_array_equal(out, np.full((5, 9), K * int(a[0, 0]) * 255))
    one_more = np.zeros((1, K + 1), np.int16)
    with pytest.raises(ValueError, match=f"a reduction of {K + 1} products .* beyond the int32 output"):
        bitserial_gemm(pack_planes(one_more, 8, signed), pack_planes(one_more, 8), K + 1, a_signed=signed)


def test_gemm_rows_and_columns_across_work_items():
    # more rows than one chunk of 64, several strip groups, ragged edges
    rng = np.random.default_rng(1)
    a, b = random_codes(rng, (131, 150), 3, True), random_codes(rng, (203, 150), 2, False)
    out = bitserial_gemm(pack_planes(a, 3, True), pack_planes(b, 2), 150, a_signed=True)
    np.testing.assert_array_equal(out, bitserial_gemm_ref(a, b))


# --- convolution --------------------------------------------------------------------------------
@st.composite
def conv_case(draw):
    N = draw(st.integers(1, 2))
    C = draw(st.sampled_from([1, 3, 16, 32, 63, 64, 65, 130]))
    k = draw(st.sampled_from([1, 2, 3]))
    stride = draw(st.integers(1, 2))
    padding = draw(st.integers(0, 1))
    H = draw(st.integers(max(1, k - 2 * padding), 7))
    W = draw(st.integers(max(1, k - 2 * padding), 7))
    O = draw(st.sampled_from([1, 4, 5, 16, 33]))
    return N, C, H, W, O, k, stride, padding


@settings(max_examples=25)
@given(conv_case(), operand, operand, st.integers(0, 2**32 - 1))
def test_bitserial_conv2d_equals_im2col_reference(case, w_op, x_op, seed):
    N, C, H, W, O, k, stride, padding = case
    rng = np.random.default_rng(seed)
    x = random_codes(rng, (N, C, H, W), *x_op, dtype=np.int16)
    w = random_codes(rng, (O, C, k, k), *w_op, dtype=np.int16)
    out = bitserial_conv2d(pack_activation_planes(x, *x_op), pack_weight_planes(w, *w_op), C, stride, padding,
                           w_signed=w_op[1], x_signed=x_op[1])
    assert out.dtype == np.int32 and out.flags.c_contiguous
    np.testing.assert_array_equal(out, bitserial_conv2d_ref(x, w, stride, padding))


@pytest.mark.parametrize("N, C, H, O, stride", [(3, 16, 8, 16, 1), (2, 32, 8, 6, 2), (2, 64, 4, 7, 1),
                                                (2, 3, 5, 4, 1), (1, 130, 6, 9, 2)])
def test_conv_output_paths(N, C, H, O, stride):
    # OH*OW % 8 == 0 writes NCHW from the GEMM (O % 4 != 0 too), otherwise the (O, N*P) product is reordered
    rng = np.random.default_rng(C + O)
    x, w = random_codes(rng, (N, C, H, H), 2, False), random_codes(rng, (O, C, 3, 3), 4, True)
    out = bitserial_conv2d(pack_activation_planes(x, 2), pack_weight_planes(w, 4, True), C, stride, 1, w_signed=True)
    np.testing.assert_array_equal(out, bitserial_conv2d_ref(x, w, stride, 1))


def test_packed_conv_layouts_match_pack_planes():
    rng = np.random.default_rng(2)
    x, w = random_codes(rng, (2, 70, 3, 4), 3, False), random_codes(rng, (5, 70, 2, 3), 2, True)
    xp, wp = pack_activation_planes(x, 3), pack_weight_planes(w, 2, True)
    assert xp.shape == (3, 2, 3, 4, 2) and wp.shape == (2, 5, 2, 3, 2)
    np.testing.assert_array_equal(xp.reshape(3, -1, 2), pack_planes(x.transpose(0, 2, 3, 1).reshape(-1, 70), 3))
    np.testing.assert_array_equal(wp.reshape(2, -1, 2), pack_planes(w.transpose(0, 2, 3, 1).reshape(-1, 70), 2, True))


@settings(max_examples=15)
@given(conv_case(), st.integers(1, 8), st.integers(0, 2**32 - 1))
def test_patch_sums_equal_summed_patches(case, bits, seed):
    N, C, H, W, _, k, stride, padding = case
    x = random_codes(np.random.default_rng(seed), (N, C, H, W), bits, False)
    ref = im2col_ref(x.astype(np.int64), k, k, stride, padding).sum(axis=0)  # (N*OH*OW,)
    got = patch_sums(x, k, k, stride, padding)
    np.testing.assert_array_equal(got, patch_sums_ref(x, k, k, stride, padding))
    np.testing.assert_array_equal(got.ravel(), ref)


@pytest.mark.parametrize("kw, kx", [(2, 2), (4, 3), (1, 8)])
def test_dorefa_epilogue_recovers_the_float_conv(kw, kx):
    # w = (2 q_w - L_w) / L_w, x = q_x / L_x  =>  conv(w, x) = (2 I - L_w S) / (L_w L_x)
    rng = np.random.default_rng(kw * 10 + kx)
    Lw, Lx = 2**kw - 1, 2**kx - 1
    qx, qw = random_codes(rng, (2, 16, 6, 6), kx, False), random_codes(rng, (8, 16, 3, 3), kw, False)
    wf, xf = (2.0 * qw - Lw) / Lw, qx / Lx
    cols = im2col_ref(xf, 3, 3, 1, 1)  # (C*9, N*36) float64, zero padding = code 0
    expect = (wf.reshape(8, -1) @ cols).reshape(8, 2, 6, 6).transpose(1, 0, 2, 3)
    I = bitserial_conv2d(pack_activation_planes(qx, kx), pack_weight_planes(qw, kw), 16, 1, 1)
    S = patch_sums(qx, 3, 3, 1, 1)[:, None]  # (N, 1, OH, OW), the same for every output channel
    np.testing.assert_allclose((2.0 * I - Lw * S) / (Lw * Lx), expect, rtol=0, atol=1e-12)


# --- the loops in plain Python (the NUMBA_DISABLE_JIT path) -----------------------------------------
def test_loops_in_plain_python():
    rng = np.random.default_rng(4)
    a, b = random_codes(rng, (4, 70), 2, True), random_codes(rng, (8, 70), 3, False)
    a_planes = np.empty((2, 4, 2), np.uint64)
    bs._pack_planes_loops(a_planes, a.astype(np.uint8))
    np.testing.assert_array_equal(a_planes, pack_planes_ref(a, 2))
    b_t = np.ascontiguousarray(pack_planes(b, 3).transpose(0, 2, 1))  # (kb, words, N)
    out = np.zeros((1, 4, 8), np.int32)
    bs._bitserial_gemm_loops(out, a_planes, b_t, bs.plane_pairs(2, True, 3, False), 1)
    np.testing.assert_array_equal(out[0], bitserial_gemm_ref(a, b))
    # convolution pieces: C = 16 packs 4 taps a word (3 segments' words for 3x3), stride 2, padding 1
    x, w = random_codes(rng, (1, 16, 5, 4), 2, False), random_codes(rng, (4, 16, 3, 3), 1, False)
    xp = np.empty((2, 1, 20, 1), np.uint64)
    bc._pack_nchw_planes_loops(xp, x.astype(np.uint8).reshape(1, 16, 20))
    xp = xp.reshape(2, 1, 5, 4, 1)
    np.testing.assert_array_equal(xp, pack_activation_planes(x, 2))
    seg_ptr, seg_tap, seg_word, seg_shift, R = bc._segments(16, 1, 9)
    OH, OW = 3, 2
    patches_t = np.zeros((2, R, 8), np.uint64)
    bc._patches_t_loops(patches_t, xp, seg_ptr, seg_tap // 3, seg_tap % 3, seg_word, seg_shift, 2, 2, 1, 1, OH, OW)
    cols = im2col_ref(x.astype(np.int64), 3, 3, 2, 1)  # (16*9, 6), rows c*9 + tap
    bits_of = cols.reshape(16, 9, 6).transpose(1, 0, 2).reshape(144, 6)  # bit t*16 + c of the patch
    np.testing.assert_array_equal(patches_t[:, :, :6], pack_planes_ref(bits_of.T, 2).transpose(0, 2, 1))
    w_rows = pack_planes_ref(w.transpose(0, 2, 3, 1).reshape(4, 144), 1)  # same bit order
    out = np.zeros((1, 4, 8), np.int32)
    bs._bitserial_gemm_loops(out, w_rows, patches_t, bs.plane_pairs(1, False, 2, False), 1)
    np.testing.assert_array_equal(out[0, :, :6].reshape(4, 1, OH, OW).transpose(1, 0, 2, 3),
                                  bitserial_conv2d_ref(x, w, 2, 1))


# --- bad input ----------------------------------------------------------------------------------
_A, _B = pack_planes(np.ones((4, 70), np.uint8), 2), pack_planes(np.ones((3, 70), np.uint8), 3)
_X = pack_activation_planes(np.ones((1, 70, 4, 4), np.uint8), 2)
_W = pack_weight_planes(np.ones((2, 70, 3, 3), np.int8), 2, signed=True)


@pytest.mark.parametrize("call, exc, words", [
    (lambda: pack_planes(np.array([[0, 4]]), 2), ValueError, r"pack_planes: codes has codes in \[0, 4\], outside \[0, 3\]"),
    (lambda: pack_planes(np.array([[-3, 0]]), 2, signed=True), ValueError, r"outside \[-2, 1\] of 2-bit signed"),
    (lambda: pack_planes(np.array([[-1, 0]]), 2), ValueError, "unsigned"),
    (lambda: pack_planes(np.ones((2, 3)), 2), TypeError, "pack_planes: codes must have an integer dtype"),
    (lambda: pack_planes(np.ones((2, 3), bool), 2), TypeError, "integer dtype"),
    (lambda: pack_planes([[1, 2]], 2), TypeError, "pack_planes: codes must be a numpy array"),
    (lambda: pack_planes(np.ones(3, np.int8), 2), ValueError, "non-empty 2-D array"),
    (lambda: pack_planes(np.ones((2, 3), np.int8), 9), ValueError, "bits must be in 1..8"),
    (lambda: pack_planes(np.ones((2, 3), np.int8), 2.0), TypeError, "bits must be an int"),
    (lambda: pack_planes(np.ones((2, 3), np.int8), 2, signed=1), TypeError, "signed must be True or False"),
    (lambda: unpack_planes(_A, 200), ValueError, "unpack_planes: k=200"),
    (lambda: bitserial_gemm(_A.astype(np.int64), _B, 70), TypeError, "bitserial_gemm: a_planes must have dtype uint64"),
    (lambda: bitserial_gemm(_A, _B[0], 70), ValueError, "bitserial_gemm: b_planes must be a non-empty 3-D"),
    (lambda: bitserial_gemm(_A, _B[:, :, :1], 70), ValueError, "a_planes has 2 words per row but b_planes has 1"),
    (lambda: bitserial_gemm(_A, _B, 64), ValueError, "bitserial_gemm: k=64 needs 1 words"),
    (lambda: bitserial_gemm(_A, _B, 70.0), TypeError, "bitserial_gemm: k must be an int"),
    (lambda: bitserial_gemm(_A, _B | np.uint64(1 << 63), 70), ValueError, "b_planes has nonzero tail bits"),
    (lambda: bitserial_gemm(_A, _B, 70, a_signed="no"), TypeError, "a_signed must be True or False"),
    (lambda: bitserial_gemm(np.zeros((9, 4, 2), np.uint64), _B, 70), ValueError, "9 planes, at most 8"),
    (lambda: pack_activation_planes(np.ones((1, 3, 2, 2), np.uint8) * 8, 3), ValueError,
     r"pack_activation_planes: x_codes has codes in \[8, 8\]"),
    (lambda: pack_activation_planes(np.ones((3, 2, 2), np.uint8), 3), ValueError, "x_codes must be a non-empty 4-D"),
    (lambda: pack_weight_planes(np.ones((2, 3, 3, 3), np.float32), 2), TypeError, "pack_weight_planes: w_codes"),
    (lambda: bitserial_conv2d(_X, _W[..., :1], 70), ValueError, "w_planes has 1 words per tap but x_planes has 2"),
    (lambda: bitserial_conv2d(_X, _W, 64), ValueError, "bitserial_conv2d: channels=64"),
    (lambda: bitserial_conv2d(_X, _W, "70"), TypeError, "bitserial_conv2d: channels must be an int"),
    (lambda: bitserial_conv2d(_X[0], _W, 70), ValueError, "bitserial_conv2d: x_planes must be a non-empty 5-D"),
    (lambda: bitserial_conv2d(_X, _W, 70, padding=-1), ValueError, "bitserial_conv2d: padding must be >= 0"),
    (lambda: bitserial_conv2d(_X, _W, 70, stride=0), ValueError, "bitserial_conv2d: stride must be >= 1"),
    (lambda: bitserial_conv2d(_X[:, :, :2, :2], _W, 70), ValueError, "kernel 3x3 does not fit"),
    (lambda: bitserial_conv2d(_X, _W, 70, w_signed=None), TypeError, "w_signed must be True or False"),
    (lambda: patch_sums(np.ones((1, 2, 3, 3)), 3, 3), TypeError, "patch_sums: x_codes"),
    (lambda: patch_sums(np.ones((1, 2, 3, 3), np.int8), 0, 3), ValueError, "patch_sums: KH and KW"),
])
def test_bad_input_is_refused_with_a_clear_message(call, exc, words):
    with pytest.raises(exc, match=words):
        call()


def test_conv_accumulator_bound_is_checked():
    x = pack_activation_planes(np.zeros((1, 512, 3, 3), np.uint8), 8)
    w = pack_weight_planes(np.zeros((1, 512, 3, 3), np.uint8), 8)
    bitserial_conv2d(x, w, 512, padding=1)  # 4608 * 255 * 255 < 2^31
    w_big = np.zeros((8, 1, 15, 15, 8), np.uint64)  # 512 * 225 * 255 * 255 >= 2^31
    with pytest.raises(ValueError, match="bitserial_conv2d: a reduction of 115200 products"):
        bitserial_conv2d(x, w_big, 512, padding=7)
