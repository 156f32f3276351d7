"""The ReLU-backward kernel against np.where."""
import numpy as np
import pytest

from tinycomp_kernels.elementwise import _relu_backward_loops, relu_backward, relu_backward_ref


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
