"""tinycomp_kernels.sparse_tiles: the kept-weight register tiles equal the dense conv of the pruned
weight at any stride, padding, dilation and plane size (8x8 blocks cut at the edges), and the loops
run in plain Python."""
import contextlib

import numpy as np
import pytest
from hypothesis import given, strategies as st

from tinycomp_kernels import conv_tiles, csr as C, sparse_tiles as T
from tinycomp_kernels.sparse_conv import sparse_conv2d_ref

TOL = dict(rtol=1e-4, atol=1e-4)


@contextlib.contextmanager
def tile_set(wide):
    """The AVX-512 (wide) or AVX2 tile set in force, whatever this CPU is."""
    saved = conv_tiles.WIDE_VECTORS
    conv_tiles.WIDE_VECTORS = wide
    try:
        yield
    finally:
        conv_tiles.WIDE_VECTORS = saved

cases = st.fixed_dictionaries(dict(
    N=st.integers(1, 3), C=st.integers(1, 6), O=st.integers(1, 7), H=st.integers(1, 19), W=st.integers(1, 19),
    K=st.sampled_from([1, 3, 5]), stride=st.sampled_from([1, 2, 3]), padding=st.integers(0, 2),
    dilation=st.sampled_from([1, 1, 2]), density=st.sampled_from([0.0, 0.1, 0.5, 1.0]),
    seed=st.integers(0, 2**32 - 1)))


def _plan(w, mask, hw, stride, padding, dilation):
    O, C_in, KH, KW = w.shape
    indptr, indices, values = C.csr_from_dense(w.reshape(O, -1), mask=mask.reshape(O, -1))
    tap = indices % (KH * KW)
    return T.SparseTilesPlan(indptr, indices // (KH * KW), tap // KW, tap % KW, values, C_in, (KH, KW), hw,
                             stride, padding, dilation)


@pytest.mark.parametrize("wide", [True, False], ids=["avx512", "avx2"])
@given(cases)
def test_tiles_equal_the_dense_conv_of_the_kept_weights(wide, cfg):
    rng = np.random.default_rng(cfg["seed"])
    k, d, p = cfg["K"], cfg["dilation"], cfg["padding"]
    H, W = max(cfg["H"], d * (k - 1) + 1 - 2 * p), max(cfg["W"], d * (k - 1) + 1 - 2 * p)  # a valid output
    x = rng.standard_normal((cfg["N"], cfg["C"], H, W)).astype(np.float32)
    w = rng.standard_normal((cfg["O"], cfg["C"], k, k)).astype(np.float32)
    mask = rng.random(w.shape) < cfg["density"]
    mask[0] = False  # an output channel with no kept weight: an empty CSR row, zeros out
    w = np.where(mask, w, 0).astype(np.float32)
    plan = _plan(w, mask, (H, W), cfg["stride"], p, d)
    with tile_set(wide):
        y = plan(x)
    ref = sparse_conv2d_ref(x, w, cfg["stride"], p, d)
    assert y.shape == ref.shape and y.flags.c_contiguous
    np.testing.assert_allclose(y, ref, **TOL)
    np.testing.assert_array_equal(y[:, 0], 0)


def test_loops_run_in_plain_python():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 2, 3, 5)).astype(np.float32)
    w = rng.standard_normal((3, 2, 3, 3)).astype(np.float32)
    mask = rng.random(w.shape) < 0.5
    w = np.where(mask, w, 0).astype(np.float32)
    plan = _plan(w, mask, (3, 5), 1, 1, 1)
    xq = np.zeros((1,) + plan.padded, np.float32)
    xq[:, :, 1:4, 1:6] = x  # padded by 1: one phase at stride 1
    out = np.empty((1, 3, 8, 8), np.float32)
    T._sparse_tiles_loops(out, xq, plan.indptr, plan.koff, plan.values, False)
    np.testing.assert_allclose(out[:, :, :3, :5], sparse_conv2d_ref(x, w, 1, 1), **TOL)
    x16 = rng.standard_normal((1, 2, 3, 16)).astype(np.float32)  # padded width 16: the 8 x 16 blocks
    plan16 = _plan(w, mask, (3, 16), 1, 1, 1)
    xq16 = np.zeros((1,) + plan16.padded, np.float32)
    xq16[:, :, 1:4, 1:17] = x16
    out16 = np.empty((1, 3, 8, 16), np.float32)
    T._sparse_tiles_loops(out16, xq16, plan16.indptr, plan16.koff, plan16.values, True)
    np.testing.assert_allclose(out16[:, :, :3], sparse_conv2d_ref(x16, w, 1, 1), **TOL)


@pytest.mark.parametrize("W", [16, 32, 24])
def test_both_block_widths_give_equal_bits(W):
    """8 x 16 blocks (AVX-512, padded width a multiple of 16; 24 stays on 8 x 8) sum each output's kept
    entries in the same CSR order as 8 x 8 blocks."""
    rng = np.random.default_rng(W)
    x = rng.standard_normal((2, 5, 12, W)).astype(np.float32)
    w = rng.standard_normal((6, 5, 3, 3)).astype(np.float32)
    mask = rng.random(w.shape) < 0.2
    plan = _plan(np.where(mask, w, 0).astype(np.float32), mask, (12, W), 1, 1, 1)
    with tile_set(True):
        wide = plan(x)
    with tile_set(False):
        narrow = plan(x)
    np.testing.assert_array_equal(wide, narrow)


def test_a_plan_refuses_another_input():
    w = np.ones((2, 3, 3, 3), np.float32)
    plan = _plan(w, w > 0, (8, 8), 1, 1, 1)
    with pytest.raises(ValueError, match=r"sparse tiles: x is \(3, 8, 9\), the plan was made for \(3, 8, 8\)"):
        plan(np.ones((1, 3, 8, 9), np.float32))
    with pytest.raises(ValueError, match="sparse tiles: x must be a C-contiguous 4-D float32 array"):
        plan(np.ones((1, 3, 8, 8)))
