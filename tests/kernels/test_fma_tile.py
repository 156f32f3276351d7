"""The float32 register tiles: JIT (LLVM IR) and plain-Python versions against NumPy oracles."""
import numpy as np
import pytest
from numba import njit

from tinycomp_kernels import fma_tile as ft

FWD = [(ft.fma_tile_8_16x2, 8, 16, 2), (ft.fma_tile_8_16x1, 8, 16, 1), (ft.fma_tile_8_8x1, 8, 8, 1),
       (ft.fma_tile_8_8x2, 8, 8, 2), (ft.fma_tile_16_16x1, 16, 16, 1), (ft.fma_tile_4_8x2, 4, 8, 2),
       (ft.fma_tile_8_16hx2, 8, 16, 2), (ft.fma_tile_1_16x8, 1, 16, 8), (ft.fma_tile_1_8x8, 1, 8, 8),
       (ft.fma_tile_8_16x3_acc, 8, 16, 3), (ft.fma_tile_8_16x2_acc, 8, 16, 2), (ft.fma_tile_16_16x1_acc, 16, 16, 1)]
DW = [(ft.dw_tile_4x4_16x2, 4, 16, 2), (ft.dw_tile_4x4_16x1, 4, 16, 1), (ft.dw_tile_4x4_8x1, 4, 8, 1),
      (ft.dw_tile_4x3_8x4, 3, 8, 4), (ft.dw_tile_4x3_8x2, 3, 8, 2), (ft.dw_tile_4x3_8x1, 3, 8, 1)]


def _jitted(tile):
    if tile.__name__.startswith("fma"):
        @njit
        def call(out, out_off, out_rs, a, r0, x, base, koff, xvs, ovs):
            tile(out, out_off, out_rs, a, r0, x, base, koff, xvs, ovs)
    else:
        @njit
        def call(part, o0, k0, dout, x, koff, m0, m1, OH, OW, OP, P, plane, Wq):
            tile(part, o0, k0, dout, x, koff, m0, m1, OH, OW, OP, P, plane, Wq)
    return call


@pytest.mark.parametrize("tile,rows,lanes,vecs", FWD, ids=lambda v: getattr(v, "__name__", str(v)))
@pytest.mark.parametrize("jit", [True, False])
def test_forward_tile(tile, rows, lanes, vecs, jit):
    rng = np.random.default_rng(rows * lanes + vecs)
    K, r0 = 13, 3
    a = rng.standard_normal((r0 + rows + 2, K)).astype(np.float32)
    x = rng.standard_normal(600).astype(np.float32)
    koff = rng.integers(0, 300, K).astype(np.int64)
    base, xvs, ovs, out_off = 7, 41, 3 * lanes, 5
    out_rs = max(2 * vecs * lanes, (vecs - 1) * ovs + lanes) + 9   # rows apart: the _acc tiles read what they add to
    expected = np.full(out_off + rows * out_rs + 4 * vecs * lanes, -7.0, np.float32)
    got = expected.copy()
    ft.fma_tile_ref(expected, out_off, out_rs, a, r0, x, base, koff, xvs, ovs, rows, lanes, vecs,
                    halves="h" in tile.__name__, accumulate=tile.__name__.endswith("_acc"))
    (_jitted(tile) if jit else tile)(got, out_off, out_rs, a, r0, x, base, koff, xvs, ovs)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)   # untouched entries stay -7 too
    if tile.__name__.endswith("_acc"):   # the tile added its sums to the -7 it found
        assert not np.allclose(got[out_off:out_off + lanes], -7.0)


def test_a_half_row_tile_is_two_input_rows_per_vector():
    """fma_tile_8_16hx2 on a 4 x 8 output block of a padded 10-wide input equals the plain 8-lane tile
    run on each pair of rows (the same sums in the same order: equal bits)."""
    rng = np.random.default_rng(5)
    K, Wq = 9, 10
    a = rng.standard_normal((8, K)).astype(np.float32)
    x = rng.standard_normal(6 * Wq + 8).astype(np.float32)
    koff = np.array([kh * Wq + kw for kh in range(3) for kw in range(3)], np.int64)
    got, want = np.zeros(8 * 32, np.float32), np.zeros(8 * 32, np.float32)
    _jitted(ft.fma_tile_8_16hx2)(got, 0, 32, a, 0, x, 0, koff, Wq, 16)
    for pair in range(2):
        _jitted(ft.fma_tile_8_8x2)(want, 16 * pair, 32, a, 0, x, 2 * pair * Wq, koff, Wq, 8)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("tile,taps,lanes,vecs", DW, ids=lambda v: getattr(v, "__name__", str(v)))
@pytest.mark.parametrize("jit", [True, False])
def test_weight_gradient_tile(tile, taps, lanes, vecs, jit):
    rng = np.random.default_rng(lanes + vecs)
    N, O, OH, OW = 3, 8, 3, lanes * vecs
    P, Wq, Hq, Cq = OH * OW, OW + 3, OH + 2, 2
    plane = Cq * Hq * Wq
    dout = rng.standard_normal(N * O * P).astype(np.float32)
    x = rng.standard_normal(N * plane).astype(np.float32)
    koff = rng.integers(0, plane - (OH - 1) * Wq - OW, 9).astype(np.int64)
    part = rng.standard_normal((O, 9)).astype(np.float32)
    expected = part.astype(np.float64)
    m0, m1 = 1, N * OH - 1                       # starts and ends inside an image
    ft.dw_tile_ref(expected, 4, 5, dout, x, koff, m0, m1, OH, OW, O * P, P, plane, Wq, 4, taps)
    (_jitted(tile) if jit else tile)(part, 4, 5, dout, x, koff, m0, m1, OH, OW, O * P, P, plane, Wq)
    np.testing.assert_allclose(part, expected, rtol=1e-4, atol=1e-4)
