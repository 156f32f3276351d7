"""functional.sparse_conv2d: forward, dx and dw equal the dense masked op conv2d(x, W * mask); the
weight gradient is 0 exactly at the pruned positions; refusals; sparse_training_pays."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from strategies import conv_configs
from tinycomp import Tensor, functional as F
from tinycomp.functional.sparse_conv import sparse_training_pays


def _both(x, w, mask, stride, padding, g):
    """(y, dx, dw) of the sparse op and of the dense masked op for cotangent g."""
    out = []
    for sparse in (True, False):
        xt, wt = Tensor(x, requires_grad=True), Tensor(w, requires_grad=True)
        if sparse:
            y = F.sparse_conv2d(xt, wt, mask, stride, padding)
        else:
            y = F.conv2d(xt, wt * Tensor(mask.astype(np.float32)), None, stride, padding)
        y.backward(g)
        out.append((y.data, xt.grad, wt.grad))
    return out


@settings(max_examples=40)
@given(conv_configs(max_batch=3, max_channels=6, max_size=9, groups=False, dilation=False),
       st.sampled_from([0.0, 0.3, 0.8, 1.0]), st.sampled_from([np.uint8, np.bool_]), st.integers(0, 2**32 - 1))
def test_equals_the_dense_masked_op(cfg, density, mask_dtype, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((cfg["N"], cfg["C"], cfg["H"], cfg["W"])).astype(np.float32)
    w = rng.standard_normal((cfg["O"], cfg["C"], cfg["KH"], cfg["KW"])).astype(np.float32)
    mask = (rng.random(w.shape) < density).astype(mask_dtype)
    s, p = cfg["stride"], cfg["padding"]
    oh = (cfg["H"] + 2 * p - cfg["KH"]) // s + 1
    ow = (cfg["W"] + 2 * p - cfg["KW"]) // s + 1
    g = rng.standard_normal((cfg["N"], cfg["O"], oh, ow)).astype(np.float32)
    (y, dx, dw), (y_ref, dx_ref, dw_ref) = _both(x, w, mask, s, p, g)
    assert y.dtype == dx.dtype == dw.dtype == np.float32
    np.testing.assert_allclose(y, y_ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(dw, dw_ref, rtol=1e-4, atol=1e-4)
    assert (dw[mask == 0] == 0).all()


def test_resnet_layers_and_kept_zero_weights():
    """A stride-1 and a stride-2 3x3 layer at 90 %; kept weights that are exactly 0 get their gradient."""
    rng = np.random.default_rng(0)
    for c, o, h, s in ((16, 16, 16, 1), (16, 32, 16, 2), (64, 64, 8, 1)):
        x = rng.standard_normal((4, c, h, h)).astype(np.float32)
        w = rng.standard_normal((o, c, 3, 3)).astype(np.float32)
        mask = (rng.random(w.shape) < 0.1).astype(np.uint8)
        w[(mask == 1) & (rng.random(w.shape) < 0.3)] = 0
        g = rng.standard_normal((4, o, h // s, h // s)).astype(np.float32)
        (y, dx, dw), (y_ref, dx_ref, dw_ref) = _both(x, w, mask, s, 1, g)
        np.testing.assert_allclose(y, y_ref, rtol=1e-4, atol=2e-4)
        np.testing.assert_allclose(dx, dx_ref, rtol=1e-4, atol=2e-4)
        np.testing.assert_allclose(dw, dw_ref, rtol=1e-4, atol=5e-4)
        assert np.count_nonzero(dw[(mask == 1) & (w == 0)]) > 0  # kept zeros keep their gradient


def test_input_without_gradient_and_a_tensor_used_twice():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 5, 5)).astype(np.float32)
    w = Tensor(rng.standard_normal((3, 3, 3, 3)).astype(np.float32), requires_grad=True)
    mask = (rng.random(w.shape) < 0.5).astype(np.uint8)
    y = F.sparse_conv2d(Tensor(x), w, mask, 1, 1)  # x needs no gradient: only dw
    y.sum().backward()
    assert w.grad is not None and (w.grad[mask == 0] == 0).all()
    xt = Tensor(x, requires_grad=True)  # y = conv(conv(x)) + conv(x): both contributions reach x
    a = F.sparse_conv2d(xt, Tensor(w.data), mask, 1, 1)
    (F.sparse_conv2d(a, Tensor(w.data), mask, 1, 1) + a).sum().backward()
    xr = Tensor(x, requires_grad=True)
    wm = Tensor(w.data * mask)
    ar = F.conv2d(xr, wm, None, 1, 1)
    (F.conv2d(ar, wm, None, 1, 1) + ar).sum().backward()
    np.testing.assert_allclose(xt.grad, xr.grad, rtol=1e-4, atol=1e-4)


def test_evaluation_and_a_frozen_weight():
    """Without a weight gradient to come (no_grad, or a weight that needs none) the patch-matrix geometry
    takes the inference path: the same output, and dx still flows."""
    from tinycomp import no_grad
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 3, 7, 7)).astype(np.float32)  # stride 2 on an odd plane: no phases
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    mask = (rng.random(w.shape) < 0.5).astype(np.uint8)
    ref = F.conv2d(Tensor(x), Tensor(w * mask), None, 2, 1).data
    with no_grad():
        np.testing.assert_allclose(F.sparse_conv2d(Tensor(x), Tensor(w, requires_grad=True), mask, 2, 1).data, ref,
                                   rtol=1e-5, atol=1e-5)
    xt = Tensor(x, requires_grad=True)
    y = F.sparse_conv2d(xt, Tensor(w), mask, 2, 1)
    y.backward(np.ones(y.shape, np.float32))
    xr = Tensor(x, requires_grad=True)
    F.conv2d(xr, Tensor(w * mask), None, 2, 1).backward(np.ones(y.shape, np.float32))
    np.testing.assert_allclose(xt.grad, xr.grad, rtol=1e-5, atol=1e-5)


def test_mask_as_tensor_and_pairs():
    rng = np.random.default_rng(2)
    x = Tensor(rng.standard_normal((1, 2, 6, 6)).astype(np.float32))
    w = Tensor(rng.standard_normal((4, 2, 3, 3)).astype(np.float32))
    mask = rng.random(w.shape) < 0.5
    y = F.sparse_conv2d(x, w, Tensor(mask), (2, 2), (1, 1))
    np.testing.assert_allclose(y.data, F.conv2d(x, Tensor(w.data * mask), None, 2, 1).data, rtol=1e-5, atol=1e-5)


def test_refusals():
    x = Tensor(np.zeros((1, 2, 5, 5), np.float32))
    w = Tensor(np.zeros((3, 2, 3, 3), np.float32))
    mask = np.ones(w.shape, np.uint8)
    with pytest.raises(TypeError, match="float32"):
        F.sparse_conv2d(Tensor(x.data.astype(np.float64)), Tensor(w.data.astype(np.float64)), mask)
    with pytest.raises(ValueError, match="mask must be a uint8 or bool"):
        F.sparse_conv2d(x, w, mask[:2])
    with pytest.raises(ValueError, match="mask must be a uint8 or bool"):
        F.sparse_conv2d(x, w, mask.astype(np.float32))
    with pytest.raises(ValueError, match="the same on both axes"):
        F.sparse_conv2d(x, w, mask, stride=(1, 2))
    with pytest.raises(ValueError, match="channels"):
        F.sparse_conv2d(x, Tensor(np.zeros((3, 4, 3, 3), np.float32)), np.ones((3, 4, 3, 3), np.uint8))
    with pytest.raises(ValueError, match="larger"):
        F.sparse_conv2d(x, Tensor(np.zeros((3, 2, 7, 7), np.float32)), np.ones((3, 2, 7, 7), np.uint8))
    with pytest.raises(TypeError, match="Tensor"):
        F.sparse_conv2d(x.data, w, mask)


def test_the_mask_gets_no_gradient():
    rng = np.random.default_rng(3)
    x = Tensor(rng.standard_normal((1, 1, 4, 4)).astype(np.float32), requires_grad=True)
    w = Tensor(rng.standard_normal((1, 1, 3, 3)).astype(np.float32), requires_grad=True)
    mask_t = Tensor(np.ones((1, 1, 3, 3), np.uint8))
    F.sparse_conv2d(x, w, mask_t, 1, 1).sum().backward()
    assert mask_t.grad is None and x.grad is not None


def test_sparse_training_pays_rule():
    """From the shapes and nnz only: the ResNet-20 layers at 30-99 % take the sparse op, at 10 % they do
    not; a patch-matrix geometry from 50 %; 1x1 kernels, dilation, groups, float64 and unequal pairs never."""
    for c, o, h, s in ((16, 16, 32, 1), (32, 32, 16, 1), (64, 64, 8, 1), (16, 32, 32, 2), (32, 64, 16, 2)):
        size = o * c * 9
        for sparsity in (0.3, 0.7, 0.8, 0.9, 0.95, 0.99):
            assert sparse_training_pays((128, c, h, h), (o, c, 3, 3), int((1 - sparsity) * size), s, 1)
        assert sparse_training_pays((128, c, h, h), (o, c, 3, 3), int(0.3 * size), (s, s), (1, 1))
        assert not sparse_training_pays((128, c, h, h), (o, c, 3, 3), int(0.9 * size), s, 1)
        assert not sparse_training_pays((128, c, h, h), (o, c, 3, 3), size, s, 1)
    odd = ((128, 16, 31, 31), (32, 16, 3, 3))  # stride 2 on an odd plane: the patch-matrix path
    assert sparse_training_pays(*odd, int(0.5 * 16 * 32 * 9), 2, 1)
    assert not sparse_training_pays(*odd, int(0.6 * 16 * 32 * 9), 2, 1)
    fits = ((128, 16, 32, 32), (16, 16, 3, 3), 10)
    assert sparse_training_pays(*fits, 1, 1)
    assert not sparse_training_pays(*fits, 1, 1, dilation=2)
    assert not sparse_training_pays(*fits, 1, 1, groups=2)
    assert not sparse_training_pays(*fits, 1, 1, dtype=np.float64)
    assert not sparse_training_pays(*fits, (1, 2), 1)
    assert not sparse_training_pays((128, 16, 32, 32), (32, 16, 1, 1), 10, 2, 0)
    assert not sparse_training_pays((128, 16, 32, 32), (32, 8, 3, 3), 10, 1, 1)  # channels do not match
