"""One table drives every elementwise/shape/reduction/loss op: forward against NumPy, and a float64
gradient check with hypothesis-drawn shapes (inputs kept off kinks)."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from tinycomp import Tensor, functional as F
from tinycomp.testing import arrays, gradcheck


def _off_kinks(x, kinks=(0.0,), margin=0.05):
    """Move values within ``margin`` of a kink away from it (finite differences straddle no kink)."""
    x = np.array(x, copy=True)
    for k in kinks:
        near = np.abs(x - k) < margin
        x[near] = k + np.where(x[near] >= k, margin, -margin) * 2
    return x


def _positive(x):
    return np.abs(x) + 0.5


def _log_softmax_ref(x):
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


# name: (tinycomp fn, numpy reference, input preparation per input, number of inputs)
UNARY = {
    "neg": (F.neg, np.negative, None),
    "exp": (F.exp, np.exp, None),
    "log": (F.log, np.log, _positive),
    "pow3": (lambda x: F.pow(x, 3), lambda x: x ** 3, None),
    "pow_half": (lambda x: F.pow(x, 0.5), np.sqrt, _positive),
    "relu": (F.relu, lambda x: np.maximum(x, 0), _off_kinks),
    "leaky_relu": (lambda x: F.leaky_relu(x, 0.1), lambda x: np.where(x > 0, x, 0.1 * x), _off_kinks),
    "sigmoid": (F.sigmoid, lambda x: 1 / (1 + np.exp(-x)), None),
    "tanh": (F.tanh, np.tanh, None),
    "hardtanh": (F.hardtanh, lambda x: np.clip(x, -1, 1), lambda x: _off_kinks(x, (-1.0, 1.0))),
    "sum_all": (lambda x: F.sum(x), np.sum, None),
    "sum_0_keep": (lambda x: F.sum(x, 0, keepdims=True), lambda x: x.sum(0, keepdims=True), None),
    "mean_last": (lambda x: F.mean(x, -1), lambda x: x.mean(-1), None),
    "max_last": (lambda x: F.max(x, -1), lambda x: x.max(-1), None),
    "max_all": (lambda x: F.max(x), np.max, None),
    "reshape_flat": (lambda x: F.reshape(x, (-1,)), lambda x: x.reshape(-1), None),
    "permute_rev": (lambda x: F.permute(x, tuple(reversed(range(x.ndim)))), lambda x: x.T, None),
    "getitem_slice": (lambda x: x[::2], lambda x: x[::2], None),
    "getitem_repeat": (lambda x: x[np.array([0, 0, -1])], lambda x: x[np.array([0, 0, -1])], None),
    "pad": (lambda x: F.pad(x, [(1, 2)] + [(0, 1)] * (x.ndim - 1), 0.5),
            lambda x: np.pad(x, [(1, 2)] + [(0, 1)] * (x.ndim - 1), constant_values=0.5), None),
    "log_softmax": (F.log_softmax, _log_softmax_ref, None),
}

BINARY = {
    "add": (F.add, np.add, None),
    "sub": (F.sub, np.subtract, None),
    "mul": (F.mul, np.multiply, None),
    "div": (F.div, np.divide, _positive),
    "matmul": (F.matmul, np.matmul, None),
}


@pytest.mark.parametrize("name", sorted(UNARY))
@settings(max_examples=12)
@given(data=st.data())
def test_unary_forward_and_grad(name, data):
    fn, ref, prep = UNARY[name]
    x = data.draw(arrays(min_dims=1, max_dims=3, max_side=4))
    if name == "max_last" or name == "max_all":  # distinct values: a tie's subgradient is not differentiable
        x = x + np.arange(x.size).reshape(x.shape) * 1e-2
    x = prep(x) if prep else x
    out = fn(Tensor(x.astype(np.float32)))
    np.testing.assert_allclose(out.data, ref(x.astype(np.float32)), rtol=1e-5, atol=1e-6)
    assert out.dtype == np.float32
    gradcheck(fn, [np.ascontiguousarray(x)])


def _broadcast_pair(data, name):
    if name == "matmul":
        m, k, n = (data.draw(st.integers(1, 4)) for _ in range(3))
        batch = data.draw(st.sampled_from([(), (2,), (3, 1)]))
        shape_a = batch + (m, k)
        shape_b = data.draw(st.sampled_from([(k, n), (k,), (1, k, n)]))
        if len(shape_a) == 2 and data.draw(st.booleans()):
            shape_a = (k,)
        return shape_a, shape_b
    shape = tuple(data.draw(st.lists(st.integers(1, 4), min_size=1, max_size=3)))
    other = tuple(1 if data.draw(st.booleans()) else s for s in shape)
    other = other[data.draw(st.integers(0, len(other))):]  # fewer leading axes
    return (shape, other) if data.draw(st.booleans()) else (other, shape)


@pytest.mark.parametrize("name", sorted(BINARY))
@settings(max_examples=15)
@given(data=st.data())
def test_binary_forward_and_broadcast_grad(name, data):
    fn, ref, prep = BINARY[name]
    sa, sb = _broadcast_pair(data, name)
    a = data.draw(arrays(shape=sa, noncontiguous=False))
    b = data.draw(arrays(shape=sb, noncontiguous=False))
    b = prep(b) if prep else b
    out = fn(Tensor(a.astype(np.float32)), Tensor(b.astype(np.float32)))
    np.testing.assert_allclose(out.data, ref(a.astype(np.float32), b.astype(np.float32)), rtol=1e-5, atol=1e-5)
    gradcheck(fn, [a, b])


def test_ops_with_scalar_outputs_keep_float64():
    # np.matmul of two vectors and ** on a 0-d array return NumPy scalars, not arrays
    a, b = np.array([0.5, 2.0]), np.array([1.5, -1.0])
    assert F.matmul(Tensor(a), Tensor(b)).dtype == np.float64
    gradcheck(F.matmul, [a, b])
    gradcheck(lambda x: F.pow(F.sum(x), 3), [a])


def test_scalar_operands_keep_the_tensor_dtype():
    x = Tensor(np.ones(3), requires_grad=True)  # float64
    y = 2 * x + 1 - x / 4
    assert y.dtype == np.float64
    y.sum().backward()
    np.testing.assert_allclose(x.grad, np.full(3, 1.75))


@settings(max_examples=10)
@given(data=st.data())
def test_concatenate(data):
    axis = data.draw(st.integers(0, 1))
    shapes = [(2, 3), (2, 3), (2, 3)]
    sizes = data.draw(st.lists(st.integers(1, 3), min_size=2, max_size=3))
    arrs = [np.random.default_rng(i).standard_normal(tuple(s if d != axis else n for d, s in enumerate(shapes[0])))
            for i, n in enumerate(sizes)]
    out = F.concatenate([Tensor(a) for a in arrs], axis)
    np.testing.assert_array_equal(out.data, np.concatenate(arrs, axis))
    gradcheck(lambda *t: F.concatenate(t, axis), arrs)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_cross_entropy_forward_and_grad(smoothing):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 4)) * 3
    t = np.array([0, 3, 1, 1, 2])
    out = F.cross_entropy(Tensor(x), t, label_smoothing=smoothing)
    logp = _log_softmax_ref(x)
    q = np.full((5, 4), smoothing / 4)
    q[np.arange(5), t] += 1 - smoothing
    np.testing.assert_allclose(out.item(), -(q * logp).sum() / 5, rtol=1e-12)
    gradcheck(lambda z: F.cross_entropy(z, t, smoothing), [x])


def test_cross_entropy_is_stable_for_huge_logits():
    x = Tensor(np.array([[1000.0, -1000.0], [-1000.0, 1000.0]], np.float32), requires_grad=True)
    loss = F.cross_entropy(x, np.array([0, 0]))
    assert np.isfinite(loss.item()) and abs(loss.item() - 1000.0) < 1e-3
    loss.backward()
    assert np.all(np.isfinite(x.grad))


def test_linear_matches_numpy_and_grad():
    rng = np.random.default_rng(1)
    x, w, b = rng.standard_normal((2, 3, 4)), rng.standard_normal((5, 4)), rng.standard_normal(5)
    np.testing.assert_allclose(F.linear(Tensor(x), Tensor(w), Tensor(b)).data, x @ w.T + b)
    gradcheck(F.linear, [x, w, b])


def test_dropout_scales_and_masks():
    import tinycomp

    tinycomp.manual_seed(0)
    x = Tensor(np.ones((200, 50)), requires_grad=True)
    y = F.dropout(x, 0.3, training=True)
    kept = y.data != 0
    assert 0.65 < kept.mean() < 0.75
    np.testing.assert_allclose(y.data[kept], 1 / 0.7)
    y.backward(np.ones_like(y.data))
    np.testing.assert_allclose(x.grad, y.data)
    assert F.dropout(x, 0.3, training=False) is x


@pytest.mark.parametrize("call, message", [
    (lambda: F.matmul(Tensor(np.ones((2, 3))), Tensor(np.ones((4, 2)))), "matmul: inner dimensions"),
    (lambda: F.add(Tensor(np.ones(2, np.float32)), Tensor(np.ones(2))), "add: dtypes differ"),
    (lambda: F.reshape(Tensor(np.ones(6)), (4, 2)), "reshape: cannot reshape"),
    (lambda: F.permute(Tensor(np.ones((2, 3))), (0, 0)), "permute:"),
    (lambda: F.permute(Tensor(np.ones((2, 3))), (0, 3)), "permute: axes \\(0, 3\\) out of range"),
    (lambda: F.concatenate([Tensor(np.ones((2, 3)))] * 2, axis=2), "concatenate: axis 2 is out of range"),
    (lambda: F.log_softmax(Tensor(np.ones((2, 3))), axis=-3), "log_softmax: axis -3 is out of range"),
    (lambda: F.linear(Tensor(np.ones((2, 3))), Tensor(np.ones((4, 3))), Tensor(np.ones(4, np.float32))),
     "linear: bias is float32 but input is float64"),
    (lambda: F.linear(Tensor(np.ones((2, 3))), Tensor(np.ones((4, 2)))), "linear: input"),
    (lambda: F.cross_entropy(Tensor(np.ones((2, 3))), np.array([0, 3])), "cross_entropy: target values"),
    (lambda: F.cross_entropy(Tensor(np.ones((2, 3))), np.array([0.0, 1.0])), "cross_entropy: target must"),
    (lambda: F.sum(Tensor(np.ones((2, 3))), axis=2), "sum: axis 2 is out of range"),
    (lambda: F.concatenate([Tensor(np.ones((2, 3))), Tensor(np.ones((3, 2)))]), "concatenate:"),
    (lambda: F.relu(np.ones(3)), "relu: input must be a Tensor"),
    (lambda: F.dropout(Tensor(np.ones(3)), 1.5), "dropout: p"),
])
def test_bad_input_names_the_op(call, message):
    with pytest.raises((ValueError, TypeError), match=message):
        call()
