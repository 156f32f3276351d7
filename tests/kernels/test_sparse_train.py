"""kernels/sparse_train.py and sparse_weight_grad.py: the gradients of a pruned convolution equal the dense
masked reference on every path; the flipped transposed CSR; the loops in plain Python; refusals."""
import numba
import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st

from strategies import pruned_conv_layer
from tinycomp_kernels import csr as C, sparse_conv as S
from tinycomp_kernels.im2col import same_padding_taps
from tinycomp_kernels.sparse_direct import direct_beats_tiles
from tinycomp_kernels import sparse_phases as P
from tinycomp_kernels import sparse_train as T
from tinycomp_kernels import sparse_weight_grad as G

TOL = dict(rtol=1e-4, atol=1e-4)


def _layer(seed, n, c, o, h, w, k, density, oh=None, ow=None):
    """x, the pruned weight, its CSR kept by the mask (zeros included), and a random dout."""
    rng = np.random.default_rng(seed)
    x, weight, _ = pruned_conv_layer(rng, n, c, o, h, w, k, density)
    mask = weight != 0
    csr = C.csr_from_dense(weight.reshape(o, -1), mask.reshape(o, -1))
    dout = rng.standard_normal((n, o, oh or h, ow or w)).astype(np.float32)
    return x, weight, csr, dout


@settings(max_examples=40)
@given(st.integers(0, 3), st.integers(1, 5), st.integers(1, 5), st.integers(1, 9), st.integers(1, 9),
       st.sampled_from([1, 3, 5, 7]), st.sampled_from([0.0, 0.2, 0.6, 1.0]), st.integers(0, 2**32 - 1))
def test_same_gradients_equal_the_dense_reference(n, c, o, h, w, k, density, seed):
    """"same" layers, kernels 1 to 7, planes down to 1x1 and 1xW (every tap column wraps or is padding),
    empty rows and an all-zero W, batch 0 and 1: dx through the flipped CSR, dw by shifted planes."""
    x, weight, (indptr, indices, values), dout = _layer(seed, n, c, o, h, w, k, density)
    p = (k - 1) // 2
    assert T.sparse_train_algorithm(x.shape, weight.shape, 1, p) == "same"
    dx = T.sparse_conv2d_input_grad(dout, indptr, indices, values, x.shape, weight.shape, 1, p)
    assert dx.shape == x.shape and dx.dtype == np.float32
    np.testing.assert_allclose(dx, T.sparse_conv2d_input_grad_ref(dout, x.shape, weight, 1, p), **TOL)
    dv = T.sparse_conv2d_weight_grad(dout, x, indptr, indices, weight.shape, 1, p)
    assert dv.shape == (len(indices),) and dv.dtype == np.float32
    np.testing.assert_allclose(dv, T.sparse_conv2d_weight_grad_ref(dout, x, indptr, indices, weight.shape, 1, p),
                               **TOL)
    # the patch-matrix algorithm on the same layer: csr_sddmm and col2im(W.T @ dout)
    np.testing.assert_allclose(dv, T.sparse_conv2d_weight_grad(dout, x, indptr, indices, weight.shape, 1, p,
                                                               algorithm="im2col"), **TOL)
    np.testing.assert_allclose(dx, T.sparse_conv2d_input_grad(dout, indptr, indices, values, x.shape, weight.shape,
                                                              1, p, algorithm="im2col"), **TOL)


@settings(max_examples=40)
@given(st.integers(1, 3), st.integers(1, 4), st.integers(1, 4), st.integers(1, 3), st.integers(1, 3),
       st.integers(1, 3), st.integers(0, 2), st.integers(1, 2), st.sampled_from([0.0, 0.3, 1.0]), st.data())
def test_other_geometries_equal_the_dense_reference(n, c, o, kh, kw, stride, padding, dilation, density, data):
    """Strides 1-3, padding 0-2, dilation 1-2, non-square and even kernels: the patch-matrix path, with
    the forward's cols or without."""
    min_h = max(1, dilation * (kh - 1) + 1 - 2 * padding)
    min_w = max(1, dilation * (kw - 1) + 1 - 2 * padding)
    h, w = data.draw(st.integers(min_h, 8)), data.draw(st.integers(min_w, 8))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    mask = rng.random((o, c, kh, kw)) < density
    weight = (rng.standard_normal(mask.shape) * mask).astype(np.float32)
    indptr, indices, values = C.csr_from_dense(weight.reshape(o, -1), mask.reshape(o, -1))
    y, saved = T.sparse_conv2d_train(x, indptr, indices, values, weight.shape, stride, padding, dilation)
    np.testing.assert_allclose(y, S.sparse_conv2d_ref(x, weight, stride, padding, dilation), **TOL)
    dout = rng.standard_normal(y.shape).astype(np.float32)
    dx_ref, dw_ref = S.sparse_conv2d_backward_ref(dout, x, weight, stride, padding, dilation)
    dx = T.sparse_conv2d_input_grad(dout, indptr, indices, values, x.shape, weight.shape, stride, padding, dilation)
    np.testing.assert_allclose(dx, dx_ref, **TOL)
    kept = dw_ref.reshape(o, -1)[mask.reshape(o, -1)]
    for s in (saved, None):
        dv = T.sparse_conv2d_weight_grad(dout, x, indptr, indices, weight.shape, stride, padding, dilation, saved=s)
        np.testing.assert_allclose(dv, kept, **TOL)
    if T.sparse_train_algorithm(x.shape, weight.shape, stride, padding, dilation) == "phases":  # and im2col forced
        np.testing.assert_allclose(T.sparse_conv2d_input_grad(dout, indptr, indices, values, x.shape, weight.shape,
                                                              stride, padding, dilation, algorithm="im2col"), dx_ref,
                                   **TOL)
        dv = T.sparse_conv2d_weight_grad(dout, x, indptr, indices, weight.shape, stride, padding, dilation,
                                         algorithm="im2col")
        np.testing.assert_allclose(dv, kept, **TOL)
    np.testing.assert_array_equal(T.dense_weight_grad(kept, indptr, indices, weight.shape), dw_ref * mask)


@settings(max_examples=40)
@given(st.integers(0, 3), st.integers(1, 4), st.integers(1, 4), st.integers(1, 5), st.integers(1, 5),
       st.sampled_from([2, 3]), st.integers(1, 5), st.integers(0, 2), st.sampled_from([0.0, 0.3, 1.0]),
       st.integers(0, 2**32 - 1))
def test_phases_equal_the_dense_reference(n, c, o, oh, ow, stride, k, padding, density, seed):
    """Strided layers over their stride phases: strides 2 and 3, kernels 1-5, padding 0-2 wherever
    H = s*OH, W = s*OW (the stride-2 3x3 pad-1 layers of ResNet-20 among them)."""
    h, w = stride * oh, stride * ow
    assume(T.sparse_train_algorithm((n, c, h, w), (o, c, k, k), stride, padding) == "phases")
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    mask = rng.random((o, c, k, k)) < density
    weight = (rng.standard_normal(mask.shape) * mask).astype(np.float32)
    indptr, indices, values = C.csr_from_dense(weight.reshape(o, -1), mask.reshape(o, -1))
    y, saved = T.sparse_conv2d_train(x, indptr, indices, values, weight.shape, stride, padding)
    assert y.shape == (n, o, oh, ow) and saved.shape == (n, stride * stride * c, oh, ow)
    np.testing.assert_allclose(y, S.sparse_conv2d_ref(x, weight, stride, padding), **TOL)
    dout = rng.standard_normal(y.shape).astype(np.float32)
    dx_ref, dw_ref = S.sparse_conv2d_backward_ref(dout, x, weight, stride, padding)
    np.testing.assert_allclose(T.sparse_conv2d_input_grad(dout, indptr, indices, values, x.shape, weight.shape,
                                                          stride, padding), dx_ref, **TOL)
    kept = dw_ref.reshape(o, -1)[mask.reshape(o, -1)]
    for s in (saved, None):
        np.testing.assert_allclose(T.sparse_conv2d_weight_grad(dout, x, indptr, indices, weight.shape, stride,
                                                               padding, saved=s), kept, **TOL)


def test_phase_split_and_merge():
    x = np.random.default_rng(0).standard_normal((2, 3, 6, 9)).astype(np.float32)
    xq = P.phase_split(x, 3)
    np.testing.assert_array_equal(xq[:, 3 * 1 + 2], x[:, 0, 1::3, 2::3])  # channel 0, phase (1, 2)
    np.testing.assert_array_equal(P.phase_merge(xq, 3), x)
    np.testing.assert_array_equal(P.phase_merge_ref(xq, 3), x)
    merged = np.full_like(x, np.nan)
    P._phase_merge_loops(merged, xq, 3)  # the loops in plain Python
    np.testing.assert_array_equal(merged, x)
    assert P.phase_fits((1, 16, 32, 32), (32, 16, 3, 3), 2, 1)
    assert not P.phase_fits((1, 16, 31, 31), (32, 16, 3, 3), 2, 1)
    assert not P.phase_fits((1, 16, 32, 32), (32, 16, 3, 3), 1, 1)
    indices_q, shape_q = P.phase_csr(np.arange(9, dtype=np.int32), (1, 1, 3, 3), 2, 1)
    assert shape_q == (1, 4, 3, 3)
    # tap (kh, kw) -> phase ((kh - 1) % 2, (kw - 1) % 2), shift ((kh - 1) // 2, (kw - 1) // 2) + 1
    assert list(indices_q) == [3 * 9 + 0, 2 * 9 + 1, 3 * 9 + 1, 1 * 9 + 3, 0 * 9 + 4, 1 * 9 + 4, 3 * 9 + 3,
                               2 * 9 + 4, 3 * 9 + 4]


def test_resnet20_shapes_and_kept_zeros():
    """The three stride-1 layer shapes of ResNet-20 at 90 % (direct and implicit paths for dx), with some
    kept weights exactly 0: they keep their slot and get their gradient."""
    rng = np.random.default_rng(3)
    for c, h in ((16, 32), (32, 16), (64, 8)):
        x = rng.standard_normal((4, c, h, h)).astype(np.float32)
        mask = rng.random((c, c, 3, 3)) < 0.1
        weight = (rng.standard_normal(mask.shape) * mask).astype(np.float32)
        weight[mask & (rng.random(mask.shape) < 0.2)] = 0  # kept but 0
        indptr, indices, values = C.csr_from_dense(weight.reshape(c, -1), mask.reshape(c, -1))
        dout = rng.standard_normal(x.shape[:1] + (c, h, h)).astype(np.float32)
        dx_ref, dw_ref = S.sparse_conv2d_backward_ref(dout, x, weight, 1, 1)
        np.testing.assert_allclose(T.sparse_conv2d_input_grad(dout, indptr, indices, values, x.shape, weight.shape,
                                                              1, 1), dx_ref, rtol=1e-4, atol=2e-4)
        dv = T.sparse_conv2d_weight_grad(dout, x, indptr, indices, weight.shape, 1, 1)
        np.testing.assert_allclose(dv, dw_ref.reshape(c, -1)[mask.reshape(c, -1)], rtol=1e-4, atol=5e-4)


@pytest.mark.parametrize("n, c, h, direct", [(5, 16, 32, True), (4, 16, 32, False), (5, 32, 16, False)])
def test_same_conv_takes_the_direct_path_only_where_it_beats_the_tiles(monkeypatch, n, c, h, direct):
    """The forward and dx of a "same" layer at 98 %: the direct path for more than 4 images on 32x32
    planes (sparse_direct.direct_beats_tiles), the kept-weight tiles otherwise; equal either way."""
    assert not direct_beats_tiles(int(0.1 * 144) * 16, 16, 128, 32 * 32)  # 90 %: the tiles, at any batch
    rng = np.random.default_rng(n * c)
    mask = rng.random((c, c, 3, 3)) < 0.02
    weight = (rng.standard_normal(mask.shape) * mask).astype(np.float32)
    indptr, indices, values = C.csr_from_dense(weight.reshape(c, -1), mask.reshape(c, -1))
    x = rng.standard_normal((n, c, h, h)).astype(np.float32)
    dout = rng.standard_normal(x.shape).astype(np.float32)
    calls = []
    direct_conv = T.sparse_conv2d
    monkeypatch.setattr(T, "sparse_conv2d", lambda *a: calls.append(a[0].shape) or direct_conv(*a))
    y, _ = T.sparse_conv2d_train(x, indptr, indices, values, weight.shape, 1, 1)
    dx = T.sparse_conv2d_input_grad(dout, indptr, indices, values, x.shape, weight.shape, 1, 1)
    assert calls == ([x.shape, dout.shape] if direct else [])
    np.testing.assert_allclose(y, S.sparse_conv2d_ref(x, weight, 1, 1), rtol=1e-4, atol=2e-4)
    np.testing.assert_allclose(dx, S.sparse_conv2d_backward_ref(dout, x, weight, 1, 1)[0], rtol=1e-4, atol=2e-4)


@settings(max_examples=30)
@given(st.integers(1, 5), st.integers(1, 5), st.sampled_from([(1, 1), (3, 3), (1, 3), (5, 3), (2, 4)]),
       st.sampled_from([0.0, 0.3, 1.0]), st.integers(0, 2**32 - 1))
def test_flip_transpose_csr(o, c, k, density, seed):
    rng = np.random.default_rng(seed)
    kh, kw = k
    mask = rng.random((o, c, kh, kw)) < density
    weight = (rng.standard_normal(mask.shape) * mask).astype(np.float32)
    indptr, indices, values = C.csr_from_dense(weight.reshape(o, -1), mask.reshape(o, -1))
    indptr_f, indices_f, values_f, perm = T.flip_transpose_csr(indptr, indices, values, weight.shape)
    flipped = weight[:, :, ::-1, ::-1].transpose(1, 0, 2, 3).reshape(c, -1)  # (C, O*KH*KW)
    np.testing.assert_array_equal(C.csr_to_dense(indptr_f, indices_f, values_f, o * kh * kw), flipped)
    np.testing.assert_array_equal(values_f, values[perm])
    assert len(indptr_f) == c + 1 and indices_f.dtype == np.int32 and indptr_f.dtype == np.int64


def test_weight_grad_does_not_depend_on_the_thread_count():
    x, weight, (indptr, indices, _), dout = _layer(7, 20, 6, 5, 9, 7, 3, 0.5)
    got = []
    before = numba.get_num_threads()
    try:
        for threads in sorted({1, before}):
            numba.set_num_threads(threads)
            got.append(T.sparse_conv2d_weight_grad(dout, x, indptr, indices, weight.shape, 1, 1))
    finally:
        numba.set_num_threads(before)
    for g in got[1:]:
        np.testing.assert_array_equal(g, got[0])


def test_padding_taps_never_read_a_neighbour():
    """A huge value on an image's border reaches only the taps that read it: the wrapped columns are zeroed
    in each tap column's copy, the rows above and below are guard zeros."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 2, 4, 5)).astype(np.float32)
    x[0, 1, :, 4] = 1e30  # the last column: tap column 2 of column 4 would wrap onto it from the next row
    x[1, 0, 0, :] = -1e30  # the first row: tap row 0 of the last row of image 0 must not reach it
    mask = np.ones((3, 2, 3, 3), bool)
    indptr, indices, _ = C.csr_from_dense(np.ones((3, 18), np.float32), mask.reshape(3, -1))
    dout = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    dv = T.sparse_conv2d_weight_grad(dout, x, indptr, indices, mask.shape, 1, 1)
    np.testing.assert_allclose(dv, T.sparse_conv2d_weight_grad_ref(dout, x, indptr, indices, mask.shape, 1, 1),
                               rtol=1e-5)


def test_wrap_columns():
    lo, hi = G.wrap_columns(5, 6)  # pw = 2: columns -2 .. +2
    assert [(a, b) for a, b in zip(lo, hi)] == [(4, 6), (5, 6), (0, 0), (0, 1), (0, 2)]
    lo, hi = G.wrap_columns(3, 1)  # a 1-wide plane: both side columns are all padding
    assert [(a, b) for a, b in zip(lo, hi)] == [(0, 1), (0, 0), (0, 1)]


@pytest.mark.parametrize("block", [1, 2])
def test_loops_run_as_plain_python(block):
    """The kernel's loops called directly (two workers, parts of 2 images, strips of 1 or 2) on a tiny layer."""
    x, weight, (indptr, indices, _), dout = _layer(1, 3, 2, 3, 4, 5, 3, 0.6)
    n, c, h, w = x.shape
    chan, tap, shift = same_padding_taps(indices, 3, 3, w)
    g = w + 1
    lo, hi = G.wrap_columns(3, w)
    parts = np.full((2, len(indices)), np.nan, np.float32)
    G._sparse_conv2d_dw_direct_loops(parts, x.reshape(n, c, -1), dout.reshape(n, 3, -1), indptr,
                                     (tap % 3) * c + chan, g + shift, lo, hi, w,
                                     np.zeros((2, 3 * c, g + block * (h * w + g)), np.float32),
                                     np.zeros((2, 3, block * (h * w + g)), np.float32), 2)
    np.testing.assert_allclose(parts.sum(axis=0), T.sparse_conv2d_weight_grad_ref(dout, x, indptr, indices,
                                                                                  weight.shape, 1, 1), **TOL)


@settings(max_examples=20)
@given(st.integers(1, 11), st.integers(1, 8), st.integers(1, 6), st.integers(1, 6), st.sampled_from([1, 3, 5]),
       st.integers(0, 2**32 - 1))
def test_any_strip_of_images(n, block, h, w, k, seed):
    """Strips of 1-8 images, a last strip shorter than the others, parts that end inside a strip."""
    x, weight, (indptr, indices, _), dout = _layer(seed, n, 3, 4, h, w, k, 0.5)
    got = G.sparse_conv2d_dw_direct_into(np.empty(len(indices), np.float32), dout, x, indptr, indices, k, k, block=block)
    np.testing.assert_allclose(got, T.sparse_conv2d_weight_grad_ref(dout, x, indptr, indices, weight.shape, 1,
                                                                     (k - 1) // 2), **TOL)


def test_refusals():
    x, weight, (indptr, indices, values), dout = _layer(0, 2, 3, 4, 6, 6, 3, 0.5)
    with pytest.raises(ValueError, match="'same' needs stride 1"):
        T.sparse_conv2d_weight_grad(dout[:, :, ::2, ::2].copy(), x, indptr, indices, weight.shape, 2, 1,
                                    algorithm="same")
    with pytest.raises(ValueError, match="algorithm must be"):
        T.sparse_conv2d_input_grad(dout, indptr, indices, values, x.shape, weight.shape, 1, 1, algorithm="tiles")
    with pytest.raises(ValueError, match="dout has shape"):
        T.sparse_conv2d_input_grad(dout[:, :2].copy(), indptr, indices, values, x.shape, weight.shape, 1, 1)
    with pytest.raises(ValueError, match="patch matrix"):
        T.sparse_conv2d_weight_grad(dout, x, indptr, indices, weight.shape, 1, 1, saved=np.zeros((3, 3), np.float32),
                                    algorithm="im2col")
    with pytest.raises(ValueError, match="phase planes"):
        T.sparse_conv2d_weight_grad(dout[:, :, ::2, ::2].copy(), x, indptr, indices, weight.shape, 2, 1,
                                    saved=np.zeros((3, 3), np.float32))
    with pytest.raises(ValueError, match="'phases' needs stride >= 2"):
        T.sparse_conv2d_train(x, indptr, indices, values, weight.shape, 1, 1, algorithm="phases")
    with pytest.raises(TypeError, match="float32"):
        T.sparse_conv2d_weight_grad(dout.astype(np.float64), x, indptr, indices, weight.shape, 1, 1)
    with pytest.raises(ValueError, match="indptr has length"):
        T.sparse_conv2d_weight_grad(dout, x, indptr[:-1], indices, weight.shape, 1, 1)
