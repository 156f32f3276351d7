"""XNOR GEMM: the JIT against an independent NumPy reference (unpack + float matmul), exactly."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

from strategies import sign_arrays
from tinycomp_kernels import xnor_gemm as G
from tinycomp_kernels.bits import pack_signs, unpack_signs
from tinycomp_kernels.popcount import (popcount64, popcount64_ref, xor_popcount_tile_4x8,
                                       xor_popcount_tile_4x32)
from tinycomp_kernels.xnor_gemm import popcount_instruction_counts, xnor_gemm, xnor_gemm_ref


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
    block = getattr(G.xnor_dot_block, "py_func", G.xnor_dot_block)
    monkeypatch.setattr(G, "xnor_dot_block", block)  # no JIT anywhere
    out = np.zeros((6, 41), dtype=np.int32)
    G._xnor_gemm_loops(out, a_bits, np.ascontiguousarray(b_bits.T), 70, 32)
    np.testing.assert_array_equal(out, expect)
    tile = np.zeros((4, 32), dtype=np.int32)
    xor_popcount_tile_4x32(tile, a_bits, np.ascontiguousarray(b_bits.T), 0, 0, 70, 0, 0)
    np.testing.assert_array_equal(tile, expect[:4, :32])
    tile = np.zeros((6, 41), dtype=np.int32)
    xor_popcount_tile_4x8(tile, a_bits, np.ascontiguousarray(b_bits.T), 2, 33, 70, 2, 33)
    np.testing.assert_array_equal(tile[2:6, 33:41], expect[2:6, 33:41])


@pytest.mark.parametrize("jit", [True, False])
def test_tiles_and_block_write_at_their_output_offsets(jit):
    """The counts of a[i0:i0+4] x b_t[:, j0:j0+w] land at out[oi0:oi0+4, oj0:oj0+w], nothing else written:
    the binary convolution collects a work item's block in a small buffer of its own this way."""
    rng = np.random.default_rng(5)
    a_bits = pack_signs(rng.standard_normal((13, 130)))
    b_bits = pack_signs(rng.standard_normal((75, 130)))
    b_t = np.ascontiguousarray(b_bits.T)
    expect = xnor_gemm_ref(unpack_signs(a_bits, 130), unpack_signs(b_bits, 130))
    run = (lambda f: f) if jit else (lambda f: getattr(f, "py_func", f))
    for tile, width in ((xor_popcount_tile_4x32, 32), (xor_popcount_tile_4x8, 8)):
        out = np.full((6, 40), -7, dtype=np.int32)
        if jit:
            _call_tile_jitted(tile, out, a_bits, b_t, 5, 41, 130, 1, 3)
        else:
            tile(out, a_bits, b_t, 5, 41, 130, 1, 3)
        np.testing.assert_array_equal(out[1:5, 3:3 + width], expect[5:9, 41:41 + width])
        out[1:5, 3:3 + width] = -7
        assert (out == -7).all()
    block = np.full((9, 70), -7, dtype=np.int32)  # rows 3..12, columns 4..74 of the product: tiles and scalar tails
    run(G.xnor_dot_block)(block, a_bits, b_t, 130, 3, 12, 4, 74, 0, 0)
    np.testing.assert_array_equal(block, expect[3:12, 4:74])


def _call_tile_jitted(tile, *args):
    from numba import njit

    @njit
    def call(out, a, b_t, i0, j0, n_bits, oi0, oj0):
        tile(out, a, b_t, i0, j0, n_bits, oi0, oj0)
    call(*args)


# --- bad input ----------------------------------------------------------------------------------
_A, _B = pack_signs(np.ones((4, 70))), pack_signs(np.ones((3, 70)))


@pytest.mark.parametrize("call, exc, words", [
    (lambda: xnor_gemm(_A.astype(np.int64), _B, 70), TypeError, "xnor_gemm: a_bits"),
    (lambda: xnor_gemm(_A, [[1, 2]], 70), TypeError, "xnor_gemm: b_bits"),
    (lambda: xnor_gemm(_A[0], _B, 70), ValueError, "xnor_gemm: a_bits"),
    (lambda: xnor_gemm(_A, _B[:, :1], 70), ValueError, "xnor_gemm: a_bits has 2 words"),
    (lambda: xnor_gemm(_A, _B, 200), ValueError, "xnor_gemm: n_bits=200"),
    (lambda: xnor_gemm(_A, _B, 64), ValueError, "xnor_gemm: n_bits=64"),
    (lambda: xnor_gemm(_A, _B, 70.0), TypeError, "xnor_gemm: n_bits"),
    (lambda: xnor_gemm(_A, _B | np.uint64(1 << 63), 70), ValueError, "xnor_gemm: b_bits has nonzero tail"),
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
    """n_bits given as a small NumPy int gives the same result as a Python int: the wrapper converts it
    before any arithmetic (np.int16(625) + 63 is fine, np.int8(100) + 63 would wrap)."""
    x = np.random.default_rng(3).standard_normal((4, 625)).astype(np.float32)
    a, b = pack_signs(x), pack_signs(x[::-1].copy())
    np.testing.assert_array_equal(xnor_gemm(a, b, np.int16(625)), xnor_gemm(a, b, 625))
