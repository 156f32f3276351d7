"""tinycomp_kernels.sparse_conv: the pruned convolution's im2col path and backward equal dense references."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from tinycomp_kernels import csr as C, sparse_conv as V

TOL = dict(rtol=1e-4, atol=1e-4)


conv_cases = st.fixed_dictionaries(dict(
    N=st.integers(1, 3), C=st.integers(1, 5), O=st.integers(1, 6), H=st.integers(3, 8), W=st.integers(3, 8),
    K=st.sampled_from([1, 3]), stride=st.sampled_from([1, 2]), padding=st.integers(0, 1),
    dilation=st.sampled_from([1, 1, 2]), density=st.sampled_from([0.0, 0.3, 1.0]), seed=st.integers(0, 2**32 - 1)))


def _conv_inputs(cfg):
    rng = np.random.default_rng(cfg["seed"])
    k = cfg["K"]
    x = rng.standard_normal((cfg["N"], cfg["C"], cfg["H"], cfg["W"])).astype(np.float32)
    w = rng.standard_normal((cfg["O"], cfg["C"], k, k)).astype(np.float32)
    mask = rng.random(w.shape) < cfg["density"]
    mask[0] = False  # an output channel with no kept weight: an empty CSR row
    return x, np.where(mask, w, 0).astype(np.float32), mask


def _im2col_matmul(x, w, stride, padding, dilation):
    """Independent of both the kernel and sparse_conv2d_ref: explicit loop im2col + np.matmul."""
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    oh = (h + 2 * padding - dilation * (kh - 1) - 1) // stride + 1
    ow = (wd + 2 * padding - dilation * (kw - 1) - 1) // stride + 1
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    cols = np.empty((n, oh, ow, c, kh, kw))
    for y in range(oh):
        for z in range(ow):
            ys, zs = y * stride, z * stride
            cols[:, y, z] = xp[:, :, ys:ys + dilation * (kh - 1) + 1:dilation, zs:zs + dilation * (kw - 1) + 1:dilation]
    out = cols.reshape(n * oh * ow, -1) @ w.reshape(o, -1).T.astype(np.float64)  # (N*OH*OW, O)
    return out.reshape(n, oh, ow, o).transpose(0, 3, 1, 2)


@settings(max_examples=20)
@given(conv_cases)
def test_sparse_conv2d_forward_and_backward(cfg):
    x, w, mask = _conv_inputs(cfg)
    s, p, d = cfg["stride"], cfg["padding"], cfg["dilation"]
    if (cfg["H"] + 2 * p - d * (cfg["K"] - 1)) < 1 or (cfg["W"] + 2 * p - d * (cfg["K"] - 1)) < 1:
        return
    indptr, indices, values = C.csr_from_dense(w.reshape(w.shape[0], -1), mask=mask.reshape(w.shape[0], -1))
    y, cols = V.sparse_conv2d(x, indptr, indices, values, w.shape, s, p, d, return_cols=True)
    np.testing.assert_allclose(y, _im2col_matmul(x, w, s, p, d), **TOL)
    np.testing.assert_allclose(y, V.sparse_conv2d_ref(x, w, s, p, d), **TOL)
    dout = np.random.default_rng(cfg["seed"] + 1).standard_normal(y.shape).astype(np.float32)
    dx, dvalues = V.sparse_conv2d_backward(dout, cols, x.shape, indptr, indices, values, w.shape, s, p, d)
    dx_ref, dw_ref = V.sparse_conv2d_backward_ref(dout, x, w, s, p, d)
    np.testing.assert_allclose(dx, dx_ref, **TOL)
    np.testing.assert_allclose(dvalues, dw_ref[mask], **TOL)  # the kept weights, in CSR (row-major) order
    # adjoint identity <conv(x), dout> = <x, dx> ties forward and backward together
    np.testing.assert_allclose(np.vdot(y.astype(np.float64), dout), np.vdot(x.astype(np.float64), dx),
                               rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("chunk_bytes", [1, 2 * 4 * 18 * 63, 1 << 30])  # at stride 1, pad 1: 2 images (4 B x 18 x 63 each)
def test_sparse_conv2d_inference_in_chunks(monkeypatch, chunk_bytes):
    """Without return_cols the images go through in chunks (of one image; at stride 1 and padding 1,
    of at most two, so the five go as 2, 2, 1; all at once): the same result as the reference,
    stride and padding included."""
    monkeypatch.setattr(V, "CONV_CHUNK_BYTES", chunk_bytes)
    monkeypatch.setattr(V, "CONV_WHOLE_BYTES", 0)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((5, 2, 7, 9)).astype(np.float32)
    w = rng.standard_normal((3, 2, 3, 3)).astype(np.float32) * (rng.random((3, 2, 3, 3)) < 0.4)
    indptr, indices, values = C.csr_from_dense(w.reshape(3, -1))
    for stride, padding in ((1, 1), (2, 0), (1, 2)):
        y = V.sparse_conv2d(x, indptr, indices, values, w.shape, stride, padding)
        np.testing.assert_allclose(y, V.sparse_conv2d_ref(x, w, stride, padding), **TOL)
    empty = V.sparse_conv2d(x[:0], indptr, indices, values, w.shape, 1, 1)
    assert empty.shape == (0, 3, 7, 9) and empty.dtype == np.float32


def test_sparse_conv2d_bad_input():
    x = np.ones((1, 2, 5, 5), np.float32)
    w = np.ones((3, 2, 3, 3), np.float32)
    ip, ix, v = C.csr_from_dense(w.reshape(3, -1))
    with pytest.raises(ValueError, match="sparse_conv2d: x has 2 channels"):
        V.sparse_conv2d(x, ip, ix, v, (3, 4, 3, 3))
    with pytest.raises(ValueError, match="sparse_conv2d: indptr has length 4"):
        V.sparse_conv2d(x, ip, ix, v, (2, 2, 3, 3))
    with pytest.raises(ValueError, match="sparse_conv2d: x must be C-contiguous"):
        V.sparse_conv2d(np.ones((1, 2, 5, 10), np.float32)[..., ::2], ip, ix, v, w.shape)
    with pytest.raises(TypeError, match="sparse_conv2d: x must be float32"):
        V.sparse_conv2d(x.astype(np.float64), ip, ix, v, w.shape)
    with pytest.raises(ValueError, match="sparse_conv2d: kernel 3x3"):
        V.sparse_conv2d(np.ones((1, 2, 2, 2), np.float32), ip, ix, v, w.shape)
    y, cols = V.sparse_conv2d(x, ip, ix, v, w.shape, padding=1, return_cols=True)
    with pytest.raises(ValueError, match="sparse_conv2d_backward: dout has shape"):
        V.sparse_conv2d_backward(y[:, :2].copy(), cols, x.shape, ip, ix, v, w.shape, padding=1)
    with pytest.raises(ValueError, match="sparse_conv2d_backward: cols has shape"):
        V.sparse_conv2d_backward(y, cols[:, :3].copy(), x.shape, ip, ix, v, w.shape, padding=1)
    ip, ix, v = C.csr_from_dense(np.ones((3, 18), np.float32))
    for kw in (dict(stride=(1, 1)), dict(padding=None), dict(stride=1.0), dict(dilation=0)):
        with pytest.raises(ValueError, match=f"sparse_conv2d: {next(iter(kw))} must be an integer"):
            V.sparse_conv2d(x, ip, ix, v, (3, 2, 3, 3), **kw)
    with pytest.raises(ValueError, match="sparse_conv2d: weight_shape must be"):
        V.sparse_conv2d(x, ip, ix, v, (3, 2, 3.5, 3))
