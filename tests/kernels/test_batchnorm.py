"""Batch-norm kernels against NumPy (statistics, normalisation, and the step-by-step chain rule)."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinycomp_kernels.batchnorm import (_batch_norm_backward_loops, _batch_norm_eval_loops,
                                        _batch_norm_train_loops, batch_norm_backward, batch_norm_backward_ref,
                                        batch_norm_eval_forward, batch_norm_train_forward,
                                        batch_norm_train_forward_ref)

shapes = st.one_of(st.tuples(st.integers(2, 6), st.integers(1, 5)),
                   st.tuples(st.integers(1, 3), st.integers(1, 4), st.integers(1, 4), st.integers(1, 5)))


@settings(max_examples=25)
@given(shapes, st.integers(0, 2**31), st.sampled_from([0.0, 100.0]))
def test_train_forward_and_backward(shape, seed, offset):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape) * 2 + offset  # offset: |mean| >> std must not cancel
    C = shape[1]
    gamma, beta = rng.standard_normal(C), rng.standard_normal(C)
    y, mean, var, inv_std = batch_norm_train_forward(x, gamma, beta, 1e-5)
    axes = (0,) + tuple(range(2, x.ndim))
    np.testing.assert_allclose(mean, x.mean(axis=axes), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(var, x.var(axis=axes), rtol=1e-8, atol=1e-10)
    bshape = (1, C) + (1,) * (x.ndim - 2)
    y_ref = (x - x.mean(axis=axes, keepdims=True)) / np.sqrt(x.var(axis=axes, keepdims=True) + 1e-5) \
        * gamma.reshape(bshape) + beta.reshape(bshape)
    np.testing.assert_allclose(y, y_ref, rtol=1e-8, atol=1e-8)
    dout = rng.standard_normal(shape)
    dx, dgamma, dbeta = batch_norm_backward(dout, x, gamma, mean, inv_std)
    x3, d3 = x.reshape(shape[0], C, -1), dout.reshape(shape[0], C, -1)
    dx_ref, dg_ref, db_ref = batch_norm_backward_ref(d3, x3, gamma, mean, inv_std)
    np.testing.assert_allclose(dx.reshape(x3.shape), dx_ref, rtol=1e-7, atol=1e-7)
    np.testing.assert_allclose(dgamma, dg_ref, rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(dbeta, db_ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("dtype,tol,shape", [(np.float64, 1e-8, (3, 4, 5, 6)), (np.float32, 1e-4, (3, 4, 5, 6)),
                                             (np.float32, 1e-4, (8, 4, 32, 32))],   # planes the sums vectorise over
                         ids=["float64", "float32", "float32-32x32"])
def test_fused_relu_equals_bn_then_relu(dtype, tol, shape):
    rng = np.random.default_rng(7)
    x = rng.standard_normal(shape).astype(dtype)
    g, b = rng.standard_normal(4), rng.standard_normal(4)
    y, mean, var, inv_std = batch_norm_train_forward(x, g, b)
    z, mean2, _, _ = batch_norm_train_forward(x, g, b, relu=True)
    np.testing.assert_array_equal(z, np.maximum(y, 0))
    assert z.dtype == dtype and (z == 0).mean() > 0.2   # the clamp really happened
    dout = rng.standard_normal(x.shape).astype(dtype)
    dx, dg, db = batch_norm_backward(dout, x, g, mean, inv_std, b, relu=True)
    x3, d3 = x.reshape(shape[0], 4, -1).astype(np.float64), (dout * (y > 0)).reshape(shape[0], 4, -1).astype(np.float64)
    for got, ref in zip((dx.reshape(x3.shape), dg, db), batch_norm_backward_ref(d3, x3, g, mean, inv_std)):
        np.testing.assert_allclose(got, ref, rtol=tol, atol=tol)
    ze = batch_norm_eval_forward(x, mean, var, g, b, relu=True)
    np.testing.assert_allclose(ze, np.maximum(batch_norm_eval_forward(x, mean, var, g, b), 0), rtol=tol, atol=tol)


def test_eval_forward_and_float32():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 3, 5, 5)).astype(np.float32)
    rm, rv, g, b = rng.standard_normal(3), rng.random(3) + 0.5, rng.standard_normal(3), rng.standard_normal(3)
    y = batch_norm_eval_forward(x, rm, rv, g, b, 1e-5)
    assert y.dtype == np.float32
    ref = (x - rm[:, None, None]) / np.sqrt(rv[:, None, None] + 1e-5) * g[:, None, None] + b[:, None, None]
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)
    y32, mean, var, _ = batch_norm_train_forward(x, None, None)
    assert y32.dtype == np.float32 and mean.dtype == np.float64
    np.testing.assert_allclose(y32.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(y32.var(axis=(0, 2, 3)), var / (var + 1e-5), rtol=1e-4)


@pytest.mark.parametrize("relu", [False, True])
def test_loops_run_as_plain_python(relu):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 2, 5))
    g, b = rng.standard_normal(2), rng.standard_normal(2)
    y, mean, var, inv_std = np.empty_like(x), np.empty(2), np.empty(2), np.empty(2)
    _batch_norm_train_loops(y, mean, var, inv_std, np.empty((2, 3)), x, g, b, 1e-5, relu)
    y_ref, m_ref, v_ref, r_ref = batch_norm_train_forward_ref(x, g, b, 1e-5, relu)
    np.testing.assert_allclose(y, y_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(var, v_ref)
    # the JIT splits the sums over vector lanes (SUM_REASSOC_NO_FMA): equal up to their rounding
    np.testing.assert_allclose(y, batch_norm_train_forward(x, g, b, relu=relu)[0], rtol=1e-13, atol=1e-14)
    assert (0 < (y == 0).mean() < 1) == relu  # the clamp really happened
    dout = rng.standard_normal(x.shape)
    dx, dg, db = np.empty_like(x), np.empty(2), np.empty(2)
    _batch_norm_backward_loops(dx, dg, db, np.empty((2, 6)), dout, x, g, b, mean, inv_std, relu)
    jit = batch_norm_backward(dout, x, g, mean, inv_std, b, relu=relu)
    for got, same, ref in zip((dx, dg, db), jit, batch_norm_backward_ref(dout, x, g, m_ref, r_ref, b, relu)):
        np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(got, same, rtol=1e-13, atol=1e-14)
    _batch_norm_eval_loops(y, x, g, b, relu)
    affine = x * g[:, None] + b[:, None]
    np.testing.assert_array_equal(y, np.maximum(affine, 0) if relu else affine)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_relu_clamps_as_numpy_nan_and_signed_zero(dtype):
    x = np.array([[[0.0, 1.0, np.nan, -2.0]], [[-1.0, 2.0, 0.5, 3.0]]], dtype)  # (2, 1, 4)
    rm, rv, g, b = np.zeros(1), np.ones(1), np.full(1, -1.0), np.zeros(1)   # y = -x (eps 0): -0 at x = 0
    for fused, plain in ((batch_norm_eval_forward(x, rm, rv, g, b, 0.0, relu=True),
                          batch_norm_eval_forward(x, rm, rv, g, b, 0.0)),
                         (batch_norm_train_forward(x[..., :2], None, None, 0.0, relu=True)[0],
                          batch_norm_train_forward(x[..., :2], None, None, 0.0)[0])):
        np.testing.assert_array_equal(fused, np.maximum(plain, 0))
        assert not np.signbit(fused).any()  # -0 clamps to +0, as np.maximum does
    np.testing.assert_array_equal(np.isnan(batch_norm_eval_forward(x, rm, rv, g, b, 0.0, relu=True)), np.isnan(x))


def test_fused_relu_same_bits_for_any_thread_count():
    import numba

    rng = np.random.default_rng(6)
    x = rng.standard_normal((16, 8, 9, 7)).astype(np.float32)
    dout = rng.standard_normal(x.shape).astype(np.float32)
    g, b = rng.standard_normal(8), rng.standard_normal(8)
    results, before = [], numba.get_num_threads()
    try:
        for threads in sorted({1, numba.config.NUMBA_NUM_THREADS}):
            numba.set_num_threads(threads)
            z, mean, _, inv_std = batch_norm_train_forward(x, g, b, relu=True)
            results.append((z, *batch_norm_backward(dout, x, g, mean, inv_std, b, relu=True)))
    finally:
        numba.set_num_threads(before)
    for first, other in zip(results[0], results[-1]):
        np.testing.assert_array_equal(first, other)


def test_bad_input():
    x = np.zeros((2, 3, 4, 4), np.float32)
    with pytest.raises(TypeError, match="batch_norm: input must be a float32 or float64 array, got int64"):
        batch_norm_train_forward(x.astype(np.int64))
    with pytest.raises(ValueError, match=r"batch_norm: input must be \(N, C\).*got shape \(3,\)"):
        batch_norm_train_forward(np.zeros(3))
    with pytest.raises(ValueError, match=r"batch_norm: weight must have shape \(3,\) for 3 channels, got \(4,\)"):
        batch_norm_train_forward(x, np.ones(4))
    with pytest.raises(ValueError, match=r"batch_norm: running_var must have shape \(3,\)"):
        batch_norm_eval_forward(x, np.zeros(3), np.ones(2))
    with pytest.raises(ValueError, match=r"batch_norm_backward: dout \(2, 3\) and input \(2, 3, 4, 4\) differ"):
        batch_norm_backward(np.zeros((2, 3)), x, None, np.zeros(3), np.ones(3))
    # the kernel reads mean and inv_std per channel without bounds checks
    with pytest.raises(ValueError, match=r"batch_norm_backward: mean must have shape \(3,\) for 3 channels, got \(2,\)"):
        batch_norm_backward(x, x, None, np.zeros(2), np.ones(3))
    with pytest.raises(ValueError, match=r"batch_norm_backward: inv_std must have shape \(3,\) for 3 channels, got \(\)"):
        batch_norm_backward(x, x, None, np.zeros(3), 1.0)
