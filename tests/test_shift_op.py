"""functional.shift2d (forward against np.roll with zeroing, gradcheck, the adjoint) and the Shift layer
(ShiftNet's offsets, no parameters, no MACs; a thinned Shift's kept channels' offsets)."""
import numpy as np
import pytest

from tinycomp import Tensor, functional as F, nn
from tinycomp.functional.shift import shiftnet_offsets
from tinycomp.nn.shift import Shift
from tinycomp.summary import summarize
from tinycomp.testing import gradcheck

rng = np.random.default_rng(0)


def roll_and_zero(x, shift_y, shift_x):
    """out[n, c, h, w] = x[n, c, h + sy, w + sx]: np.roll by (-sy, -sx), then zero what wrapped around."""
    out = np.empty_like(x)
    H, W = x.shape[2:]
    rows, cols = np.arange(H)[:, None], np.arange(W)[None, :]
    for c, (sy, sx) in enumerate(zip(shift_y, shift_x)):
        rolled = np.roll(x[:, c], (-int(sy), -int(sx)), axis=(1, 2))  # (N, H, W)
        inside = (rows + sy >= 0) & (rows + sy < H) & (cols + sx >= 0) & (cols + sx < W)  # (H, W)
        out[:, c] = np.where(inside, rolled, 0)
    return out


def random_offsets(C, H, W):
    # up to one image size past the border: some channels leave the image entirely
    return rng.integers(-H - 1, H + 2, C), rng.integers(-W - 1, W + 2, C)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(2, 5, 4, 6), (1, 9, 3, 3), (3, 18, 8, 8), (1, 3, 1, 7)])
def test_forward_equals_roll_and_zero(shape, dtype):
    x = rng.standard_normal(shape).astype(dtype)
    for shift_y, shift_x in (random_offsets(*shape[1:]), shiftnet_offsets(shape[1], 3, 1),
                             shiftnet_offsets(shape[1], 3, 2)):
        y = F.shift2d(Tensor(x), shift_y, shift_x)
        assert y.dtype == dtype and y.shape == x.shape
        np.testing.assert_array_equal(y.data, roll_and_zero(x, shift_y, shift_x))


def test_gradcheck_float64():
    x = rng.standard_normal((2, 6, 4, 5))
    shift_y, shift_x = random_offsets(6, 4, 5)
    gradcheck(lambda t: F.shift2d(t, shift_y, shift_x), [x])
    gradcheck(lambda t: F.shift2d(t * t, *shiftnet_offsets(6, 3, 1)), [x])  # inside a graph


def test_backward_is_the_opposite_shift():
    x = Tensor(rng.standard_normal((2, 4, 5, 5)), requires_grad=True)
    shift_y, shift_x = random_offsets(4, 5, 5)
    g = rng.standard_normal(x.shape)
    F.shift2d(x, shift_y, shift_x).backward(g)
    np.testing.assert_array_equal(x.grad, roll_and_zero(g, -shift_y, -shift_x))
    # the adjoint identity <shift(x), g> = <x, shift^T(g)>
    lhs = np.vdot(roll_and_zero(x.data, shift_y, shift_x), g)
    assert np.isclose(lhs, np.vdot(x.data, x.grad), rtol=1e-12)


def test_refusals():
    x = Tensor(np.zeros((1, 3, 4, 4), np.float32))
    z = np.zeros(3, np.int64)
    with pytest.raises(TypeError, match="shift2d: input must be a Tensor"):
        F.shift2d(np.zeros((1, 3, 4, 4), np.float32), z, z)
    with pytest.raises(TypeError, match="shift2d: input must be floating"):
        F.shift2d(Tensor(np.zeros((1, 3, 4, 4), np.int32)), z, z)
    with pytest.raises(TypeError, match="shift2d: shift_x must be an integer array, not a Tensor"):
        F.shift2d(x, z, Tensor(z.astype(np.float32)))
    with pytest.raises(ValueError, match=r"shift2d: shift_y must have shape \(3,\)"):
        F.shift2d(x, np.zeros(2, np.int64), z)
    with pytest.raises(TypeError, match="shift2d: shift_x must be an integer array"):
        F.shift2d(x, z, z + 0.5)
    with pytest.raises(ValueError, match="shift2d: x must be 4-D"):
        F.shift2d(Tensor(np.zeros((3, 4, 4), np.float32)), z, z)


@pytest.mark.parametrize("C,k,d", [(9, 3, 1), (20, 3, 1), (18, 3, 2), (7, 3, 1), (50, 5, 1)])
def test_layer_uses_shiftnet_offsets(C, k, d):
    layer = Shift(C, kernel_size=k, dilation=d)
    full = k * k * (C // (k * k))
    c = np.arange(C)
    expected_x = np.where(c < full, d * (c % k - k // 2), 0)
    expected_y = np.where(c < full, d * ((c // k) % k - k // 2), 0)
    np.testing.assert_array_equal(layer.shift_x, expected_x)
    np.testing.assert_array_equal(layer.shift_y, expected_y)
    x = rng.standard_normal((2, C, 6, 7)).astype(np.float32)
    np.testing.assert_array_equal(layer(Tensor(x)).data, roll_and_zero(x, expected_y, expected_x))


def test_layer_has_no_parameters_state_or_macs():
    layer = Shift(16)
    assert list(layer.parameters()) == [] and layer.state_dict() == {}
    model = nn.Sequential(nn.Conv2d(3, 16, 1, bias=False), Shift(16), nn.Conv2d(16, 4, 1, bias=False))
    rows = {r["name"]: r for r in summarize(model, (3, 8, 8))["layers"]}
    assert rows["1"]["params"] == 0 and rows["1"]["param_bits"] == 0 and rows["1"]["macs"] == 0
    assert rows["0"]["macs"] == 8 * 8 * 3 * 16  # the convolutions around it still count
    x = Tensor(rng.standard_normal((1, 3, 8, 8)).astype(np.float32), requires_grad=True)
    model(x).sum().backward()
    assert x.grad is not None and np.abs(x.grad).sum() > 0


def test_layer_refusals():
    with pytest.raises(ValueError, match="Shift: expected input \\(N, 9, H, W\\)"):
        Shift(9)(Tensor(np.zeros((1, 8, 4, 4), np.float32)))
    for kwargs, name in (({"channels": 0}, "channels"), ({"channels": 4, "kernel_size": 2.0}, "kernel_size"),
                         ({"channels": 4, "dilation": 0}, "dilation")):
        with pytest.raises(ValueError, match=f"Shift: {name} must be a positive int"):
            Shift(**kwargs)


def test_keeping_holds_the_kept_channels_with_their_offsets_in_the_full_assignment():
    full = Shift(20, kernel_size=3, dilation=2)
    kept = [0, 3, 4, 9, 18, 19]  # 18, 19: past the 18 channels that cycle, they stay in place
    layer = Shift.keeping(20, kept, kernel_size=3, dilation=2)
    assert (layer.channels, layer.assignment, layer.kept.tolist()) == (6, 20, kept)
    np.testing.assert_array_equal(layer.shift_y, full.shift_y[kept])
    np.testing.assert_array_equal(layer.shift_x, full.shift_x[kept])
    assert layer.shift_x.tolist() == [-2, -2, 0, -2, 0, 0] and layer.shift_y.tolist() == [-2, 0, 0, -2, 0, 0]
    x = rng.standard_normal((2, 20, 6, 7)).astype(np.float32)
    np.testing.assert_array_equal(layer(Tensor(x[:, kept])).data, full(Tensor(x)).data[:, kept])
    assert repr(layer) == "Shift(6 of 20, kernel_size=3, dilation=2)"
    assert repr(full) == "Shift(20, kernel_size=3, dilation=2)"
    assert list(layer.parameters()) == [] and layer.state_dict() == {}
    with pytest.raises(ValueError, match=r"Shift: expected input \(N, 6, H, W\)"):
        layer(Tensor(x))


@pytest.mark.parametrize("kept", [[], [2, 1], [1, 1], [-1, 2], [0, 9], [0.0, 1.0], [[0, 1]], [True]])
def test_keeping_refuses_indices_that_are_not_increasing_channels(kept):
    with pytest.raises(ValueError, match=r"Shift.keeping: kept must be increasing channel indices in 0..8"):
        Shift.keeping(9, kept)
