"""Float conv2d kernels (every algorithm) against a direct-loop NumPy reference written here."""
import numpy as np
import pytest
from hypothesis import given, settings

from strategies import conv_configs
from tinycomp_kernels.conv import (ALGORITHMS, Conv2dPlan, _conv2d_direct_backward_input_loops,
                                   _conv2d_direct_backward_weight_loops, _conv2d_direct_loops, _swap01_loops,
                                   conv2d_algorithm, conv2d_backward, conv2d_backward_input,
                                   conv2d_backward_weight, conv2d_forward, conv2d_ref)


def conv_loops_ref(x, w, stride, padding, dilation, groups):
    """Plain loops straight from the definition: y[n,o,oh,ow] = sum w[o,ci,kh,kw] x[n,c,ih,iw]."""
    N, C, H, W = x.shape
    O, Cg, KH, KW = w.shape
    s, p, d = stride, padding, dilation
    OH, OW = (H + 2 * p - d * (KH - 1) - 1) // s + 1, (W + 2 * p - d * (KW - 1) - 1) // s + 1
    y = np.zeros((N, O, OH, OW))
    for n in range(N):
        for o in range(O):
            g = o // (O // groups)
            for oh in range(OH):
                for ow in range(OW):
                    acc = 0.0
                    for ci in range(Cg):
                        for kh in range(KH):
                            for kw in range(KW):
                                ih, iw = oh * s - p + kh * d, ow * s - p + kw * d
                                if 0 <= ih < H and 0 <= iw < W:
                                    acc += w[o, ci, kh, kw] * x[n, g * Cg + ci, ih, iw]
                    y[n, o, oh, ow] = acc
    return y


def grads_ref(dout, x, w, s, p, d, g):
    """dx, dw by linearity: the conv is linear in x and in w, so each gradient entry is the conv of a
    unit input contracted with dout (slow, only for tiny shapes)."""
    dx = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        e = np.zeros_like(x)
        e[idx] = 1
        dx[idx] = np.sum(dout * conv_loops_ref(e, w, s, p, d, g))
    dw = np.zeros_like(w)
    for idx in np.ndindex(w.shape):
        e = np.zeros_like(w)
        e[idx] = 1
        dw[idx] = np.sum(dout * conv_loops_ref(x, e, s, p, d, g))
    return dx, dw


def _data(cfg, dtype, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((cfg["N"], cfg["C"], cfg["H"], cfg["W"])).astype(dtype)
    w = rng.standard_normal((cfg["O"], cfg["C"] // cfg["groups"], cfg["KH"], cfg["KW"])).astype(dtype)
    return x, w, (cfg["stride"], cfg["padding"], cfg["dilation"], cfg["groups"])


def _algorithms(x, w, geo):
    """Every algorithm that accepts these float64 shapes ("tiles" is float32-only: test_conv_tiles.py)."""
    return [a for a in ALGORITHMS
            if a not in ("matmul1x1", "tiles") or conv2d_algorithm(x.shape, w.shape, *geo, dtype=x.dtype) == a]


@settings(max_examples=25)
@given(conv_configs())
def test_forward_all_algorithms_match_loop_reference(cfg):
    x, w, geo = _data(cfg, np.float64)
    ref = conv_loops_ref(x, w, *geo)
    np.testing.assert_allclose(conv2d_ref(x, w, *geo), ref, rtol=1e-10, atol=1e-10)
    for algo in _algorithms(x, w, geo):
        np.testing.assert_allclose(conv2d_forward(x, w, *geo, algorithm=algo), ref, rtol=1e-10, atol=1e-10,
                                   err_msg=algo)


@settings(max_examples=20)
@given(conv_configs(max_batch=2, max_channels=4, max_size=6))
def test_backward_all_algorithms_match_reference(cfg):
    x, w, geo = _data(cfg, np.float64)
    dout = np.random.default_rng(2).standard_normal(conv_loops_ref(x, w, *geo).shape)
    dx_ref, dw_ref = grads_ref(dout, x, w, *geo)
    for algo in _algorithms(x, w, geo):
        dx, dw = conv2d_backward(dout, x, w, *geo, algorithm=algo)
        np.testing.assert_allclose(dx, dx_ref, rtol=1e-10, atol=1e-10, err_msg=algo)
        np.testing.assert_allclose(dw, dw_ref, rtol=1e-10, atol=1e-10, err_msg=algo)
        np.testing.assert_allclose(conv2d_backward_input(dout, w, x.shape, *geo, algorithm=algo), dx_ref,
                                   rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(conv2d_backward_weight(dout, x, w.shape, *geo, algorithm=algo), dw_ref,
                                   rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("cfg", [
    dict(N=2, C=6, H=9, W=7, O=6, KH=3, KW=3, stride=1, padding=1, dilation=1, groups=6),   # depthwise
    dict(N=2, C=4, H=8, W=8, O=8, KH=1, KW=1, stride=2, padding=0, dilation=1, groups=1),   # 1x1 / 2
    dict(N=3, C=5, H=8, W=9, O=7, KH=3, KW=3, stride=2, padding=1, dilation=1, groups=1),
])
def test_float32_matches_float64(cfg):
    x, w, geo = _data(cfg, np.float32)
    ref = conv_loops_ref(x.astype(np.float64), w.astype(np.float64), *geo)
    y = conv2d_forward(x, w, *geo)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)
    dout = np.random.default_rng(3).standard_normal(y.shape).astype(np.float32)
    dx, dw = conv2d_backward(dout, x, w, *geo)
    assert dx.dtype == dw.dtype == np.float32
    dx64, dw64 = conv2d_backward(dout.astype(np.float64), x.astype(np.float64), w.astype(np.float64), *geo)
    np.testing.assert_allclose(dx, dx64, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(dw, dw64, rtol=1e-4, atol=1e-3)


def test_algorithm_choice_is_a_function_of_the_shapes():
    assert conv2d_algorithm((8, 16, 32, 32), (32, 16, 1, 1), 2, 0, 1, 1) == "matmul1x1"
    assert conv2d_algorithm((8, 16, 32, 32), (16, 1, 3, 3), 1, 1, 1, 16) == "direct"
    assert conv2d_algorithm((8, 16, 32, 32), (16, 16, 3, 3), 1, 1, 1, 1) == "tiles"
    assert conv2d_algorithm((8, 16, 32, 32), (16, 16, 3, 3), 1, 1, 1, 1, dtype=np.float64) == "im2col"
    assert conv2d_algorithm((8, 11, 32, 32), (11, 11, 3, 3), 1, 1, 1, 1) == "tiles"    # any channel count
    assert conv2d_algorithm((8, 16, 32, 32), (5, 16, 3, 3), 1, 1, 1, 1) == "tiles"
    assert conv2d_algorithm((8, 16, 32, 30), (16, 16, 3, 3), 1, 1, 1, 1) == "im2col"  # OW = 30
    assert conv2d_algorithm((8, 16, 32, 32), (32, 16, 1, 1), 1, 1, 1, 1) == "im2col"  # padded 1x1


def test_loops_run_as_plain_python():
    rng = np.random.default_rng(4)
    x, w = rng.standard_normal((1, 4, 5, 4)), rng.standard_normal((4, 2, 2, 3))
    geo = (2, 1, 1, 1, 1, 2, 2)  # sh, sw, ph, pw, dil_h, dil_w, groups
    ref = conv2d_ref(x, w, (2, 1), 1, (1, 2), 2)
    y = np.empty(ref.shape)
    _conv2d_direct_loops(y, x, w, *geo)
    np.testing.assert_allclose(y, ref)
    dout = rng.standard_normal(ref.shape)
    dx, dw = np.empty_like(x), np.empty_like(w)
    _conv2d_direct_backward_input_loops(dx, dout, w, *geo)
    _conv2d_direct_backward_weight_loops(dw, dout, x, *geo)
    dx_ref, dw_ref = conv2d_backward(dout, x, w, (2, 1), 1, (1, 2), 2, algorithm="im2col")
    np.testing.assert_allclose(dx, dx_ref)
    np.testing.assert_allclose(dw, dw_ref)
    a = rng.standard_normal((2, 3, 4))
    out = np.empty((3, 2, 4))
    _swap01_loops(out, a)
    np.testing.assert_array_equal(out, a.transpose(1, 0, 2))


def test_bad_input():
    x, w = np.zeros((2, 3, 8, 8), np.float32), np.zeros((5, 4, 3, 3), np.float32)
    with pytest.raises(ValueError, match=r"conv2d_forward: input has 3 channels but weight expects 4 \(groups=1.*"
                                         r"input \(2, 3, 8, 8\), weight \(5, 4, 3, 3\)"):
        conv2d_forward(x, w)
    with pytest.raises(ValueError, match="out channels 5 must be a multiple of groups"):
        conv2d_forward(np.zeros((2, 4, 8, 8), np.float32), np.zeros((5, 2, 3, 3), np.float32), groups=2)
    with pytest.raises(TypeError, match="conv2d_forward: input is float32 but weight is float64"):
        conv2d_forward(np.zeros((2, 4, 8, 8), np.float32), np.zeros((5, 4, 3, 3)))
    with pytest.raises(TypeError, match="conv2d_forward: input must be float32 or float64, got int32"):
        conv2d_forward(np.zeros((2, 4, 8, 8), np.int32), np.zeros((5, 4, 3, 3), np.int32))
    with pytest.raises(ValueError, match=r"conv2d_forward: input must be \(N, C, H, W\)"):
        conv2d_forward(np.zeros((4, 8, 8), np.float32), w)
    with pytest.raises(ValueError, match="kernel 9x9 .* larger than the input 8x8"):
        conv2d_forward(np.zeros((2, 4, 8, 8), np.float32), np.zeros((5, 4, 9, 9), np.float32))
    with pytest.raises(ValueError, match=r"conv2d_backward: dout has shape \(2, 5, 7, 7\), expected \(2, 5, 6, 6\)"):
        conv2d_backward_weight(np.zeros((2, 5, 7, 7), np.float32), np.zeros((2, 4, 8, 8), np.float32), (5, 4, 3, 3))
    with pytest.raises(ValueError, match="algorithm must be one of"):
        conv2d_forward(np.zeros((2, 4, 8, 8), np.float32), np.zeros((5, 4, 3, 3), np.float32), algorithm="fft")
    with pytest.raises(ValueError, match="tiles needs float32"):
        conv2d_forward(np.zeros((2, 4, 8, 8)), np.zeros((8, 4, 3, 3)), padding=1, algorithm="tiles")
    with pytest.raises(ValueError, match="an output width that is a multiple of 8"):
        conv2d_forward(np.zeros((2, 4, 8, 8), np.float32), np.zeros((8, 4, 3, 3), np.float32), algorithm="tiles")
    with pytest.raises(ValueError, match="matmul1x1 needs a 1x1 kernel"):
        conv2d_forward(np.zeros((2, 4, 8, 8), np.float32), np.zeros((5, 4, 3, 3), np.float32), algorithm="matmul1x1")


@pytest.mark.parametrize("w_shape, hw, stride, padding, groups", [
    ((16, 16, 3, 3), (32, 32), 1, 1, 1),   # tiles
    ((32, 16, 3, 3), (32, 32), 2, 1, 1),   # tiles, stride 2
    ((10, 3, 3, 3), (32, 32), 1, 1, 1),    # tiles, few channels
    ((64, 32, 1, 1), (16, 16), 2, 0, 1),   # matmul1x1
    ((12, 1, 3, 3), (9, 9), 1, 1, 12),     # direct (depthwise)
    ((6, 5, 3, 3), (7, 7), 1, 0, 1),       # im2col (OW 5)
])
def test_a_plan_gives_conv2d_forwards_bits_on_every_batch(w_shape, hw, stride, padding, groups):
    rng = np.random.default_rng(7)
    w = rng.standard_normal(w_shape).astype(np.float32)
    plan = Conv2dPlan(w, hw, stride, padding, groups=groups)
    assert plan.algorithm == conv2d_algorithm((1, w_shape[1] * groups) + hw, w_shape, stride, padding, 1, groups)
    for n in (1, 3):
        x = rng.standard_normal((n, w_shape[1] * groups) + hw).astype(np.float32)
        np.testing.assert_array_equal(plan(x), conv2d_forward(x, w, stride, padding, groups=groups))


def test_a_plan_refuses_another_input_size_and_a_bad_geometry():
    plan = Conv2dPlan(np.ones((8, 4, 3, 3), np.float32), (8, 8), padding=1)
    with pytest.raises(ValueError, match=r"x must be float32 \(N, 4, 8, 8\) for this plan, got float32 \(1, 4, 9, 8\)"):
        plan(np.ones((1, 4, 9, 8), np.float32))
    with pytest.raises(ValueError, match="got float64"):
        plan(np.ones((1, 4, 8, 8)))
    with pytest.raises(ValueError, match="Conv2dPlan: kernel 3x3"):
        Conv2dPlan(np.ones((8, 4, 3, 3), np.float32), (2, 2))
