"""F.batch_norm: PyTorch semantics in training and eval, running statistics, gradients."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinycomp.functional.normalization as Fn
from tinycomp import Tensor
from tinycomp.testing import gradcheck


@settings(max_examples=6)
@given(st.sampled_from([(4, 3), (2, 3, 3, 2), (3, 2, 2, 3)]), st.integers(0, 2**31), st.booleans())
def test_gradcheck_train_and_eval(shape, seed, affine):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    C = shape[1]
    rm, rv = rng.standard_normal(C), rng.random(C) + 0.5
    params = [rng.standard_normal(C), rng.standard_normal(C)] if affine else []

    def train(x, *wb):
        return Fn.batch_norm(x, None, None, *wb, training=True)

    def evaluate(x, *wb):
        return Fn.batch_norm(x, rm, rv, *wb, training=False)

    gradcheck(train, [x] + params)
    gradcheck(evaluate, [x] + params)


@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_relu_is_relu_of_batch_norm(training):
    from tinycomp.functional.activation import relu

    rng = np.random.default_rng(4)
    x, g, b = rng.standard_normal((3, 4, 3, 2)), rng.standard_normal(4), rng.standard_normal(4)
    bufs = [(np.zeros(4), np.ones(4) * 0.7) for _ in range(2)]
    fused = Fn.batch_norm_relu(Tensor(x), *bufs[0], Tensor(g), Tensor(b), training=training)
    plain = relu(Fn.batch_norm(Tensor(x), *bufs[1], Tensor(g), Tensor(b), training=training))
    np.testing.assert_allclose(fused.data, plain.data, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(bufs[0][0], bufs[1][0])
    np.testing.assert_allclose(bufs[0][1], bufs[1][1])
    rm, rv = np.full(4, 0.1), np.full(4, 0.9)
    gradcheck(lambda x, g, b: Fn.batch_norm_relu(x, rm, rv, g, b, training=training), [x, g, b])


def test_training_forward_and_running_stats_by_hand():
    x = np.array([[1.0, 10.0], [3.0, 20.0], [5.0, 60.0]])  # (N=3, C=2)
    rm, rv = np.zeros(2), np.ones(2)
    y = Fn.batch_norm(Tensor(x), rm, rv, training=True, momentum=0.1, eps=0.0)
    # channel 0: mean 3, biased var 8/3, unbiased var 4; channel 1: mean 30, biased 1400/3, unbiased 700
    np.testing.assert_allclose(y.data[:, 0], (x[:, 0] - 3) / np.sqrt(8 / 3))
    np.testing.assert_allclose(y.data[:, 1], (x[:, 1] - 30) / np.sqrt(1400 / 3))
    np.testing.assert_allclose(rm, [0.3, 3.0])                       # 0.9*0 + 0.1*mean
    np.testing.assert_allclose(rv, [0.9 + 0.4, 0.9 + 70.0])          # 0.9*1 + 0.1*unbiased var
    Fn.batch_norm(Tensor(x), rm, rv, training=True, momentum=0.5, eps=0.0)
    np.testing.assert_allclose(rm, [0.5 * 0.3 + 1.5, 0.5 * 3.0 + 15.0])


def test_4d_statistics_and_eval_uses_running_stats():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 3, 5, 5)).astype(np.float32) * 2 + 1
    rm, rv = np.zeros(3, np.float32), np.ones(3, np.float32)
    w, b = Tensor(np.full(3, 2.0, np.float32)), Tensor(np.full(3, 0.5, np.float32))
    y = Fn.batch_norm(Tensor(x), rm, rv, w, b, training=True)
    assert y.dtype == np.float32 and rm.dtype == np.float32
    np.testing.assert_allclose(y.data.mean(axis=(0, 2, 3)), 0.5, atol=1e-5)
    M = 4 * 25
    np.testing.assert_allclose(rv, 0.9 + 0.1 * x.var(axis=(0, 2, 3)) * M / (M - 1), rtol=1e-5)
    ye = Fn.batch_norm(Tensor(x), rm, rv, w, b, training=False)
    ref = (x - rm[:, None, None]) / np.sqrt(rv[:, None, None] + 1e-5) * 2.0 + 0.5
    np.testing.assert_allclose(ye.data, ref, rtol=1e-5, atol=1e-5)
    rm_before = rm.copy()
    Fn.batch_norm(Tensor(x), rm, rv, training=False)
    np.testing.assert_array_equal(rm, rm_before)  # eval never touches the buffers


def test_bad_input():
    x = Tensor(np.zeros((2, 3, 4, 4)))
    with pytest.raises(ValueError, match=r"batch_norm: running_mean has shape \(4,\), expected \(3,\) for input "
                                         r"\(2, 3, 4, 4\)"):
        Fn.batch_norm(x, np.zeros(4), np.ones(3))
    with pytest.raises(ValueError, match=r"batch_norm: weight has shape \(2,\), expected \(3,\)"):
        Fn.batch_norm(x, np.zeros(3), np.ones(3), Tensor(np.ones(2)))
    with pytest.raises(ValueError, match="batch_norm: eval mode needs running_var"):
        Fn.batch_norm(x, np.zeros(3), None)
    with pytest.raises(ValueError, match="batch_norm: training needs more than one value per channel"):
        Fn.batch_norm(Tensor(np.zeros((1, 3))), None, None, training=True)
    with pytest.raises(TypeError, match="batch_norm: running_mean must be a float NumPy array"):
        Fn.batch_norm(x, [0, 0, 0], np.ones(3))
    with pytest.raises(ValueError, match=r"batch_norm: input must be \(N, C\)"):
        Fn.batch_norm(Tensor(np.zeros(3)), np.zeros(3), np.ones(3))
