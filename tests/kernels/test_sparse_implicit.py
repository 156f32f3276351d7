"""kernels/sparse_implicit.py: the implicit-im2col sparse convolution equals the dense reference."""
import numpy as np
from hypothesis import given, settings, strategies as st

from strategies import pruned_conv_layer
from tinycomp_kernels import csr as C, sparse_conv as S, sparse_matmul as M
from tinycomp_kernels import sparse_implicit as I

TOL = dict(rtol=1e-4, atol=1e-4)


@settings(max_examples=40)
@given(st.integers(0, 3), st.integers(1, 5), st.integers(1, 5), st.integers(1, 9), st.integers(1, 9),
       st.sampled_from([1, 3, 5, 7]), st.sampled_from([0.0, 0.2, 0.6, 1.0]), st.integers(0, 2**32 - 1))
def test_implicit_equals_the_dense_reference(n, c, o, h, w, k, density, seed):
    """Kernel sizes 1 to 7 with "same" padding, planes down to 1x1 and 1xW (taps in the padding),
    empty rows of W and an all-zero W, batch 0 and 1."""
    x, weight, (indptr, indices, values) = pruned_conv_layer(np.random.default_rng(seed), n, c, o, h, w, k, density)
    y = S.sparse_conv2d(x, indptr, indices, values, weight.shape, 1, (k - 1) // 2, algorithm="implicit")
    assert y.shape == (n, o, h, w) and y.dtype == np.float32 and y.flags.c_contiguous
    np.testing.assert_allclose(y, S.sparse_conv2d_ref(x, weight, 1, (k - 1) // 2), **TOL)


@settings(max_examples=40)
@given(st.integers(1, 3), st.integers(1, 4), st.integers(1, 9), st.integers(1, 9), st.sampled_from([1, 3, 5, 7]),
       st.integers(1, 70), st.integers(1, 40), st.integers(0, 2**32 - 1))
def test_any_slab_and_band_split(n, c, h, w, k, slab, k_block, seed):
    """Slabs that start and end inside a plane, are shorter than the guard G or than one tile, and
    bands that split a channel's taps: every slab reads its neighbours' columns correctly."""
    o = 3
    x, weight, (indptr, indices, values) = pruned_conv_layer(np.random.default_rng(seed), n, c, o, h, w, k, 0.6)
    bw = C.csr_block_unchecked(indptr, indices, values, c * k * k, k_block, with_perm=False)
    y = np.full((n, o, h, w), np.nan, np.float32)
    I.sparse_conv2d_implicit_into(y, x, bw, k, k, slab=slab)
    np.testing.assert_allclose(y, S.sparse_conv2d_ref(x, weight, 1, (k - 1) // 2), **TOL)


def test_inf_stays_in_its_image_and_its_taps():
    """A masked tap is a select, not a multiply by 0: an inf on an image's border reaches only the
    outputs whose taps read it, never the padding taps of its neighbours in the flat sequence."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 2, 4, 5)).astype(np.float32)
    x[0, 1, 3, 4] = np.inf  # last pixel of image 0: the next flat column is image 1's first
    x[2, 0, 0, 0] = -np.inf
    weight = rng.standard_normal((2, 2, 3, 3)).astype(np.float32) + 5  # dense and positive
    indptr, indices, values = C.csr_from_dense(weight.reshape(2, -1))
    y = S.sparse_conv2d(x, indptr, indices, values, weight.shape, 1, 1, algorithm="implicit")
    ref = S.sparse_conv2d(x, indptr, indices, values, weight.shape, 1, 1, algorithm="im2col")
    np.testing.assert_array_equal(np.isposinf(y), np.isposinf(ref))
    np.testing.assert_array_equal(np.isneginf(y), np.isneginf(ref))
    assert np.isfinite(y[1]).all() and not np.isnan(y).any()
    finite = np.isfinite(ref)
    np.testing.assert_allclose(y[finite], ref[finite], **TOL)


def test_tables():
    chan, shift, tap, tap_ok, g = I.implicit_tables(2, 3, 3, 4, 5, slab=7)
    assert g == 6 and list(chan) == [0] * 9 + [1] * 9 and list(tap) == list(range(9)) * 2
    assert list(shift[:9]) == [-6, -5, -4, -1, 0, 1, 4, 5, 6]
    assert tap_ok.shape[0] == 9 and tap_ok.shape[1] >= 20 + 7 and tap_ok.shape[1] % 20 == 0
    ok = tap_ok[:, :20].reshape(9, 4, 5)
    assert not ok[0, 0].any() and not ok[0, :, 0].any() and ok[0, 1:, 1:].all()  # tap (0, 0): row -1, col -1
    assert ok[4].all()  # the centre tap never reads the padding
    np.testing.assert_array_equal(tap_ok[:, 20:40], tap_ok[:, :20])


def test_loops_run_as_plain_python():
    rng = np.random.default_rng(1)
    n, c, o, h, w = 2, 3, 4, 4, 5
    x, weight, (indptr, indices, values) = pruned_conv_layer(rng, n, c, o, h, w, 3, 0.5)
    bw = C.csr_block_unchecked(indptr, indices, values, c * 9, 10, with_perm=False)
    slab, workers = 13, 2
    chan, shift, tap, tap_ok, g = I.implicit_tables(c, 3, 3, h, w, slab)
    stride = M._padded(slab)
    y = np.full((n, o, h * w), np.nan, np.float32)
    I._sparse_conv2d_implicit_loops(y, bw.ptr, bw.indices, bw.values, bw.used, bw.used_ptr, x.reshape(n, c, -1),
                                    chan, shift, tap, tap_ok, g, bw.k_block, slab, o,
                                    np.zeros((workers, 10, stride), np.float32),
                                    np.zeros((workers, o, stride), np.float32),
                                    np.zeros((workers, slab + 2 * g), np.float32))
    np.testing.assert_allclose(y.reshape(n, o, h, w), S.sparse_conv2d_ref(x, weight, 1, 1), **TOL)
