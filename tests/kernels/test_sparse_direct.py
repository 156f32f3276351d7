"""kernels/sparse_direct.py: the direct sparse convolution equals the dense reference; the dispatch rule."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from strategies import pruned_conv_layer
from tinycomp_kernels import csr as C, sparse_conv as S
from tinycomp_kernels import sparse_direct as D

TOL = dict(rtol=1e-4, atol=1e-4)


@settings(max_examples=40)
@given(st.integers(0, 3), st.integers(1, 5), st.integers(1, 5), st.integers(1, 9), st.integers(1, 9),
       st.sampled_from([1, 3, 5, 7]), st.sampled_from([0.0, 0.2, 0.6, 1.0]), st.integers(0, 2**32 - 1))
def test_direct_equals_the_dense_reference(n, c, o, h, w, k, density, seed):
    """Kernel sizes 1 to 7 with "same" padding, planes down to 1x1 and 1xW (taps in the padding),
    empty rows of W and an all-zero W, batch 0 and 1 (one image: the output channels are split)."""
    x, weight, (indptr, indices, values) = pruned_conv_layer(np.random.default_rng(seed), n, c, o, h, w, k, density)
    y = S.sparse_conv2d(x, indptr, indices, values, weight.shape, 1, (k - 1) // 2, algorithm="direct")
    assert y.shape == (n, o, h, w) and y.dtype == np.float32 and y.flags.c_contiguous
    np.testing.assert_allclose(y, S.sparse_conv2d_ref(x, weight, 1, (k - 1) // 2), **TOL)
    np.testing.assert_allclose(y, S.sparse_conv2d(x, indptr, indices, values, weight.shape, 1, (k - 1) // 2,
                                                  algorithm="im2col"), **TOL)


def test_unsorted_and_repeated_columns_add_like_the_general_path():
    """_check_csr accepts a row's columns in any order and repeated: both paths add every entry."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 2, 5, 6)).astype(np.float32)
    indptr = np.array([0, 3, 5])
    indices = np.array([10, 4, 10, 17, 0], dtype=np.int32)  # row 0: column 10 twice, out of order
    values = rng.standard_normal(5).astype(np.float32)
    dense = C.csr_to_dense(indptr, indices, values, 18).reshape(2, 2, 3, 3)
    for algorithm in ("direct", "implicit", "im2col"):
        y = S.sparse_conv2d(x, indptr, indices, values, (2, 2, 3, 3), 1, 1, algorithm=algorithm)
        np.testing.assert_allclose(y, S.sparse_conv2d_ref(x, dense, 1, 1), **TOL)


def test_loops_run_as_plain_python():
    rng = np.random.default_rng(1)
    x, weight, (indptr, indices, values) = pruned_conv_layer(rng, 2, 3, 2, 4, 5, 3, 0.5)
    cols = indices.astype(np.int64)
    chan, tap_col = cols // 9, cols % 3
    shift = ((cols // 3) % 3 - 1) * 5 + (tap_col - 1)
    j = np.arange(20) % 5
    col_ok = np.array([(j + k - 1 >= 0) & (j + k - 1 < 5) for k in range(3)])
    y = np.full((2, 2, 4, 5), np.nan, np.float32)
    D._sparse_conv2d_direct_loops(y, x, indptr, chan, shift, tap_col, values, col_ok,  # two workers
                                  np.zeros((2, 3, 20 + 2 * 6), np.float32), np.empty((2, 20), np.float32))
    np.testing.assert_allclose(y, S.sparse_conv2d_ref(x, weight, 1, 1), **TOL)


def test_dispatch_is_from_the_shapes():
    """3x3 layers: direct for 16 channels at 32x32 and 32 at 16x16 at 95 %, 64 at 8x8 at 99 %; the
    implicit path for 32 channels at 90 %, 64 at 8x8 and 256 at 8x8 at 95 % and anything at 50 %;
    im2col for any stride-2 or padding-0 layer, and whenever the patch matrix is asked for (training)."""
    def algo(c, h, density, **kw):
        nnz = int(round(density * c * c * 9))
        return S.sparse_conv2d_algorithm((64, c, h, h), (c, c, 3, 3), nnz, **{"stride": 1, "padding": 1, **kw})
    assert algo(16, 32, 0.05) == "direct" and algo(32, 16, 0.05) == "direct" and algo(64, 8, 0.01) == "direct"
    assert algo(32, 16, 0.1) == "implicit" and algo(64, 8, 0.05) == "implicit" and algo(256, 8, 0.05) == "implicit"
    assert algo(16, 32, 0.5) == "implicit"
    assert algo(16, 32, 0.05, stride=2) == "im2col" and algo(16, 32, 0.05, padding=0) == "im2col"
    assert algo(16, 32, 0.05, return_cols=True) == "im2col" and algo(64, 8, 0.05, return_cols=True) == "im2col"
    rng = np.random.default_rng(2)
    x, weight, (indptr, indices, values) = pruned_conv_layer(rng, 2, 4, 4, 6, 6, 3, 0.05)
    auto = S.sparse_conv2d(x, indptr, indices, values, weight.shape, 1, 1)
    np.testing.assert_allclose(auto, S.sparse_conv2d_ref(x, weight, 1, 1), **TOL)


def test_direct_and_implicit_refused_where_they_do_not_apply():
    x, weight, (indptr, indices, values) = pruned_conv_layer(np.random.default_rng(3), 1, 2, 2, 5, 5, 3, 0.5)
    for kw in (dict(stride=2, padding=1), dict(stride=1, padding=0), dict(stride=1, padding=1, dilation=2),
               dict(stride=1, padding=1, return_cols=True)):
        for algorithm in ("direct", "implicit"):
            with pytest.raises(ValueError, match=f"sparse_conv2d: algorithm '{algorithm}' computes inference"):
                S.sparse_conv2d(x, indptr, indices, values, weight.shape, algorithm=algorithm, **kw)
    with pytest.raises(ValueError, match="sparse_conv2d: algorithm must be None or one of"):
        S.sparse_conv2d(x, indptr, indices, values, weight.shape, 1, 1, algorithm="fft")
