"""F.conv2d: forward against a direct-loop reference, gradients by central differences."""
import numpy as np
import pytest
from hypothesis import given, settings

import tinycomp.functional.conv as Fc
from strategies import conv_configs
from tinycomp import Tensor
from tinycomp.testing import gradcheck


def conv_ref(x, w, b, s, p, d, g):
    """Direct loops over (n, o, oh, ow, ci, kh, kw) with (h, w) pairs, straight from the definition."""
    N, C, H, W = x.shape
    O, Cg, KH, KW = w.shape
    OH = (H + 2 * p[0] - d[0] * (KH - 1) - 1) // s[0] + 1
    OW = (W + 2 * p[1] - d[1] * (KW - 1) - 1) // s[1] + 1
    y = np.zeros((N, O, OH, OW))
    for n, o, oh, ow in np.ndindex(N, O, OH, OW):
        c0 = (o // (O // g)) * Cg
        acc = 0.0 if b is None else b[o]
        for ci, kh, kw in np.ndindex(Cg, KH, KW):
            ih, iw = oh * s[0] - p[0] + kh * d[0], ow * s[1] - p[1] + kw * d[1]
            if 0 <= ih < H and 0 <= iw < W:
                acc += w[o, ci, kh, kw] * x[n, c0 + ci, ih, iw]
        y[n, o, oh, ow] = acc
    return y


def _tensors(cfg, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((cfg["N"], cfg["C"], cfg["H"], cfg["W"]))
    w = rng.standard_normal((cfg["O"], cfg["C"] // cfg["groups"], cfg["KH"], cfg["KW"]))
    return x, w, rng.standard_normal(cfg["O"])


@settings(max_examples=15)
@given(conv_configs(max_batch=2, max_channels=6, max_size=7))
def test_forward_matches_loops(cfg):
    x, w, b = _tensors(cfg)
    kw = dict(stride=cfg["stride"], padding=cfg["padding"], dilation=cfg["dilation"], groups=cfg["groups"])
    y = Fc.conv2d(Tensor(x), Tensor(w), Tensor(b), **kw)
    pair = lambda v: (v, v)  # noqa: E731
    ref = conv_ref(x, w, b, pair(cfg["stride"]), pair(cfg["padding"]), pair(cfg["dilation"]), cfg["groups"])
    np.testing.assert_allclose(y.data, ref, rtol=1e-10, atol=1e-10)


@settings(max_examples=6)
@given(conv_configs(max_batch=2, max_channels=4, max_size=5, max_kernel=3))
def test_gradcheck_drawn_configs(cfg):
    x, w, b = _tensors(cfg, 1)
    kw = dict(stride=cfg["stride"], padding=cfg["padding"], dilation=cfg["dilation"], groups=cfg["groups"])
    gradcheck(lambda x, w, b: Fc.conv2d(x, w, b, **kw), [x, w, b])


@pytest.mark.parametrize("shapes,kw", [
    (((2, 4, 6, 5), (6, 2, 3, 3)), dict(stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=2)),
    (((2, 3, 5, 5), (6, 1, 3, 3)), dict(stride=1, padding=1, groups=3)),                  # depthwise x2
    (((2, 3, 6, 6), (4, 3, 1, 1)), dict(stride=2)),                                       # 1x1 matmul
])
def test_gradcheck_pairs_and_special_paths(shapes, kw):
    rng = np.random.default_rng(2)
    x, w, b = rng.standard_normal(shapes[0]), rng.standard_normal(shapes[1]), rng.standard_normal(shapes[1][0])
    gradcheck(lambda x, w, b: Fc.conv2d(x, w, b, **kw), [x, w, b])
    gradcheck(lambda x, w: Fc.conv2d(x, w, None, **kw), [x, w])


def test_only_needed_gradients_are_computed():
    x = Tensor(np.ones((1, 2, 4, 4)), requires_grad=False)
    w = Tensor(np.ones((3, 2, 3, 3)), requires_grad=True)
    Fc.conv2d(x, w).backward(np.ones((1, 3, 2, 2)))
    assert x.grad is None and w.grad.shape == (3, 2, 3, 3)
    np.testing.assert_allclose(w.grad, 4.0)  # each tap sees four ones


def test_float32_stays_float32():
    x = Tensor(np.ones((1, 2, 4, 4), np.float32))
    w = Tensor(np.ones((3, 2, 3, 3), np.float32), requires_grad=True)
    y = Fc.conv2d(x, w, Tensor(np.zeros(3, np.float32)), padding=1)
    assert y.dtype == np.float32


def test_bad_input():
    x, w = Tensor(np.zeros((2, 3, 8, 8), np.float32)), Tensor(np.zeros((5, 4, 3, 3), np.float32))
    with pytest.raises(ValueError, match=r"conv2d: input has 3 channels but weight expects 4 \(groups=1\); "
                                         r"input \(2, 3, 8, 8\), weight \(5, 4, 3, 3\)"):
        Fc.conv2d(x, w)
    with pytest.raises(ValueError, match=r"conv2d: 5 output channels are not divisible by groups=2"):
        Fc.conv2d(Tensor(np.zeros((2, 4, 8, 8))), Tensor(np.zeros((5, 2, 3, 3))), groups=2)
    with pytest.raises(TypeError, match="conv2d: input is float32 but weight is float64"):
        Fc.conv2d(Tensor(np.zeros((2, 4, 8, 8), np.float32)), Tensor(np.zeros((5, 4, 3, 3))))
    with pytest.raises(ValueError, match=r"conv2d: bias has shape \(4,\), expected \(5,\)"):
        Fc.conv2d(Tensor(np.zeros((2, 4, 8, 8))), Tensor(np.zeros((5, 4, 3, 3))), Tensor(np.zeros(4)))
    with pytest.raises(ValueError, match=r"conv2d: input must be 4-D"):
        Fc.conv2d(Tensor(np.zeros((4, 8, 8))), Tensor(np.zeros((5, 4, 3, 3))))
    with pytest.raises(ValueError, match=r"conv2d: kernel 9x9 .* larger than the padded input"):
        Fc.conv2d(Tensor(np.zeros((2, 4, 8, 8))), Tensor(np.zeros((5, 4, 9, 9))))
    with pytest.raises(ValueError, match=r"conv2d: stride must be >= 1"):
        Fc.conv2d(Tensor(np.zeros((2, 4, 8, 8))), Tensor(np.zeros((5, 4, 3, 3))), stride=0)
    with pytest.raises(TypeError, match=r"conv2d: input must be a Tensor"):
        Fc.conv2d(np.zeros((2, 4, 8, 8)), Tensor(np.zeros((5, 4, 3, 3))))
