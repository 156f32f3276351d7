"""The ReLU-backward kernel against np.where, the add + ReLU kernel against np.maximum(a + b, 0)."""
import numpy as np
import pytest

from tinycomp_kernels.elementwise import (_add_relu_loops, _relu_backward_loops, add_relu, add_relu_ref,
                                         relu_backward, relu_backward_ref)


@pytest.mark.parametrize("shape", [(3, 4, 5, 6), (70001,), (2, 3)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_backward_matches_where(shape, dtype):
    rng = np.random.default_rng(0)
    y = np.maximum(rng.standard_normal(shape), 0).astype(dtype)
    dout = rng.standard_normal(shape).astype(dtype)
    dx = relu_backward(dout, y)
    assert dx.dtype == dtype and dx.shape == shape
    np.testing.assert_array_equal(dx, relu_backward_ref(dout, y))
    if len(shape) == 4:  # non-contiguous views are accepted
        np.testing.assert_array_equal(relu_backward(dout[:, ::2], y[:, ::2]), relu_backward_ref(dout[:, ::2], y[:, ::2]))


def test_nan_and_loops_in_python():
    y = np.array([np.nan, 0.0, 2.0, -0.0])
    dout = np.array([5.0, 6.0, 7.0, np.inf])
    np.testing.assert_array_equal(relu_backward(dout, y), [0.0, 0.0, 7.0, 0.0])
    dx = np.empty(4)
    _relu_backward_loops(dx, dout, y, 0.0)
    np.testing.assert_array_equal(dx, [0.0, 0.0, 7.0, 0.0])


def test_bad_input():
    with pytest.raises(ValueError, match=r"relu_backward: dout float32\(2, 3\) and y float32\(3, 2\)"):
        relu_backward(np.zeros((2, 3), np.float32), np.zeros((3, 2), np.float32))
    with pytest.raises(TypeError, match="relu_backward: y must be a float32 or float64 array, got int64"):
        relu_backward(np.zeros(3), np.zeros(3, np.int64))


@pytest.mark.parametrize("shape", [(3, 4, 5, 6), (70001,), (2, 3), ()])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_add_relu_equals_numpy_bit_for_bit(shape, dtype):
    rng = np.random.default_rng(1)
    a, b = (rng.standard_normal(shape).astype(dtype) for _ in range(2))
    z = add_relu(a, b)
    assert z.dtype == dtype and z.shape == shape
    np.testing.assert_array_equal(z, add_relu_ref(a, b))
    if len(shape) == 4:  # non-contiguous views are accepted
        np.testing.assert_array_equal(add_relu(a[:, ::2], b[:, 1::2]), add_relu_ref(a[:, ::2], b[:, 1::2]))
    if a.size > 10:
        assert 0.3 < (z == 0).mean() < 0.7  # the clamp really happened


def test_add_relu_nan_signed_zero_and_loops_in_python():
    a = np.array([np.nan, -0.0, 1.0, -3.0, np.inf, -np.inf])
    b = np.array([1.0, -0.0, -1.0, 2.0, -np.inf, 1.0])
    z_loops = np.empty(6)
    with np.errstate(invalid="ignore"):  # inf - inf
        ref = np.maximum(a + b, 0)  # [nan, +0, +0, 0, nan, 0]
        _add_relu_loops(z_loops, a, b, 0.0)
    for z in (add_relu(a, b), z_loops):
        np.testing.assert_array_equal(z, ref)
        assert not np.signbit(z[1])  # -0 + -0 clamps to +0, as np.maximum does


def test_add_relu_bad_input():
    with pytest.raises(ValueError, match=r"add_relu: a float32\(2, 3\) and b float32\(1, 3\) must have the same"):
        add_relu(np.zeros((2, 3), np.float32), np.zeros((1, 3), np.float32))
    with pytest.raises(ValueError, match=r"add_relu: a float32\(3,\) and b float64\(3,\)"):
        add_relu(np.zeros(3, np.float32), np.zeros(3))
    with pytest.raises(TypeError, match="add_relu: b must be a float32 or float64 array, got list"):
        add_relu(np.zeros(3), [0.0, 1.0, 2.0])
