"""F.max_pool2d / avg_pool2d / adaptive_avg_pool2d: forward against NumPy, gradients by central differences."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinycomp.functional.pooling as Fp
from tinycomp import Tensor
from tinycomp.testing import gradcheck


def distinct(shape, seed=0):
    """Inputs with well-separated values, so no max-pool window sits near a tie (a kink)."""
    rng = np.random.default_rng(seed)
    return (rng.permutation(int(np.prod(shape))).reshape(shape) * 0.1).astype(np.float64)


def adaptive_ref(x, OH, OW):
    N, C, H, W = x.shape
    y = np.empty((N, C, OH, OW))
    for i, j in np.ndindex(OH, OW):
        h0, h1 = int(np.floor(i * H / OH)), int(np.ceil((i + 1) * H / OH))
        w0, w1 = int(np.floor(j * W / OW)), int(np.ceil((j + 1) * W / OW))
        y[:, :, i, j] = x[:, :, h0:h1, w0:w1].mean(axis=(2, 3))
    return y


@st.composite
def pool_args(draw):
    k = draw(st.integers(1, 3))
    p = draw(st.integers(0, k // 2))
    return dict(kernel_size=k, stride=draw(st.sampled_from([None, 1, 2])), padding=p,
                shape=(draw(st.integers(1, 2)), draw(st.integers(1, 2)), draw(st.integers(k, 6)), draw(st.integers(k, 6))))


@settings(max_examples=8)
@given(pool_args())
def test_max_and_avg_pool_gradcheck(args):
    shape = args.pop("shape")
    x = distinct(shape)
    gradcheck(lambda x: Fp.max_pool2d(x, **args), [x])
    gradcheck(lambda x: Fp.avg_pool2d(x, **args), [x])
    gradcheck(lambda x: Fp.avg_pool2d(x, **args, count_include_pad=False), [x])


def test_forward_values():
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    np.testing.assert_array_equal(Fp.max_pool2d(Tensor(x), 2).data[0, 0], [[5, 7], [13, 15]])
    np.testing.assert_array_equal(Fp.avg_pool2d(Tensor(x), 2).data[0, 0], [[2.5, 4.5], [10.5, 12.5]])
    # padding 1, count_include_pad: the corner window holds x[0,0], x[0,1], x[1,0], x[1,1] = 0+1+4+5 over 9
    assert np.isclose(Fp.avg_pool2d(Tensor(x), 3, 2, 1).data[0, 0, 0, 0], 10 / 9)
    assert np.isclose(Fp.avg_pool2d(Tensor(x), 3, 2, 1, count_include_pad=False).data[0, 0, 0, 0], 10 / 4)
    assert Fp.max_pool2d(Tensor(-x - 1), 3, 2, 1).data[0, 0, 0, 0] == -1  # padding never wins


@pytest.mark.parametrize("shape,out", [((2, 3, 7, 5), (3, 2)), ((1, 2, 5, 6), (5, 4)), ((2, 2, 4, 4), 1),
                                       ((1, 1, 3, 5), (None, 2)), ((1, 1, 3, 3), (5, 4))])
def test_adaptive_avg_pool(shape, out):
    x = np.random.default_rng(1).standard_normal(shape)
    y = Fp.adaptive_avg_pool2d(Tensor(x), out)
    size = (out, out) if isinstance(out, int) else tuple(shape[2 + i] if v is None else v for i, v in enumerate(out))
    np.testing.assert_allclose(y.data, adaptive_ref(x, *size), rtol=1e-12)
    gradcheck(lambda x: Fp.adaptive_avg_pool2d(x, out), [x])


def test_global_average_pool_is_a_mean():
    x = np.random.default_rng(2).standard_normal((3, 4, 5, 6)).astype(np.float32)
    y = Fp.adaptive_avg_pool2d(Tensor(x), (1, 1))
    assert y.shape == (3, 4, 1, 1) and y.dtype == np.float32
    np.testing.assert_allclose(y.data[:, :, 0, 0], x.mean(axis=(2, 3)), rtol=1e-6)


def test_bad_input():
    x = Tensor(np.zeros((1, 2, 4, 4), np.float32))
    with pytest.raises(ValueError, match=r"max_pool2d: input must be 4-D \(N, C, H, W\), got shape \(2, 4, 4\)"):
        Fp.max_pool2d(Tensor(np.zeros((2, 4, 4))), 2)
    with pytest.raises(ValueError, match=r"avg_pool2d: padding \(2, 2\) must be at most half"):
        Fp.avg_pool2d(x, 3, padding=2)
    with pytest.raises(ValueError, match=r"max_pool2d: kernel \(5, 5\) .* larger than the input \(1, 2, 4, 4\)"):
        Fp.max_pool2d(x, 5)
    with pytest.raises(ValueError, match="adaptive_avg_pool2d: output_size must be positive"):
        Fp.adaptive_avg_pool2d(x, (0, 2))
    with pytest.raises(TypeError, match="max_pool2d: input must be a Tensor"):
        Fp.max_pool2d(np.zeros((1, 2, 4, 4)), 2)
