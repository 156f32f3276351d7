"""PyTorch's spellings (dim=, keepdim=, flatten's end_dim, nn.CrossEntropyLoss) give the same numbers and
gradients as tinycomp's NumPy-style ones; both spellings at once are refused; the import-time thread
settings are defaults a user can override."""
import os
import subprocess
import sys

import numpy as np
import pytest

from tinycomp import Tensor, functional as F, nn
from tinycomp.testing import gradcheck
from tinycomp_kernels import thread_pools


def x64(*shape, seed=0):
    # distinct values (no ties for max), float64 for gradcheck
    return np.random.default_rng(seed).standard_normal(shape)


def same_value_and_grad(f_numpy, f_torch, data):
    """f_numpy and f_torch (Tensor -> Tensor) agree on value and on the gradient of a random cotangent."""
    a, b = Tensor(data, requires_grad=True), Tensor(data, requires_grad=True)
    ya, yb = f_numpy(a), f_torch(b)
    np.testing.assert_array_equal(ya.data, yb.data)
    g = np.random.default_rng(1).standard_normal(ya.shape)
    ya.backward(g), yb.backward(g)
    np.testing.assert_array_equal(a.grad, b.grad)


REDUCTIONS = ("sum", "mean", "max")


@pytest.mark.parametrize("name", REDUCTIONS)
@pytest.mark.parametrize("axis", [0, 1, -1, None])
@pytest.mark.parametrize("keep", [False, True])
def test_reductions_take_dim_and_keepdim(name, axis, keep):
    data = x64(3, 4, 2)
    method = lambda t, **kw: getattr(t, name)(**kw)   # noqa: E731
    functional = lambda t, **kw: getattr(F, name)(t, **kw)  # noqa: E731
    values = (lambda r: r.values) if name == "max" and axis is not None else (lambda r: r)
    for call in (method, functional):
        same_value_and_grad(lambda t: call(t, axis=axis, keepdims=keep),
                            lambda t: values(call(t, dim=axis, keepdim=keep)), data)
        same_value_and_grad(lambda t: call(t, axis=axis, keepdims=keep),
                            lambda t: call(t, axis=axis, keepdim=keep), data)
    gradcheck(lambda t: values(method(t, dim=axis, keepdim=keep)), [data])


@pytest.mark.parametrize("name", ("sum", "mean"))
def test_sum_and_mean_take_a_tuple_of_dims(name):
    data = x64(3, 4, 2)
    same_value_and_grad(lambda t: getattr(t, name)(axis=(0, 2)), lambda t: getattr(t, name)(dim=(0, 2)), data)
    gradcheck(lambda t: getattr(t, name)(dim=(0, -1), keepdim=True), [data])
    assert getattr(Tensor(data), name)(1, True).shape == (3, 1, 2)  # positional, as both libraries allow


def test_max_with_dim_returns_values_and_indices_as_pytorch():
    data = x64(3, 5)
    out = Tensor(data).max(dim=1)
    values, indices = out  # unpacks like torch.return_types.max
    np.testing.assert_array_equal(values.data, data.max(axis=1))
    np.testing.assert_array_equal(indices, data.argmax(axis=1))
    assert out.values is values and out.indices is indices and isinstance(indices, np.ndarray)
    kept = F.max(Tensor(data), dim=0, keepdim=True)
    assert kept.values.shape == (1, 5) and kept.indices.shape == (1, 5)
    np.testing.assert_array_equal(kept.indices, data.argmax(axis=0, keepdims=True))
    # the NumPy spellings, positional included, keep returning the values alone
    assert isinstance(Tensor(data).max(1), Tensor) and isinstance(Tensor(data).max(axis=1), Tensor)
    with pytest.raises(TypeError, match="max: dim= must be one int"):
        Tensor(data).max(dim=(0, 1))


def test_argmax_takes_dim_and_keepdim():
    data = x64(3, 5, 2)
    t = Tensor(data)
    for axis in (None, 0, -1):
        np.testing.assert_array_equal(t.argmax(dim=axis), data.argmax(axis=axis))
    np.testing.assert_array_equal(t.argmax(dim=1, keepdim=True), data.argmax(axis=1, keepdims=True))
    assert t.argmax(axis=2, keepdims=True).shape == (3, 5, 1)


def test_log_softmax_and_cat_take_dim():
    data = x64(3, 4)
    same_value_and_grad(lambda t: F.log_softmax(t, axis=0), lambda t: F.log_softmax(t, dim=0), data)
    same_value_and_grad(lambda t: F.log_softmax(t, axis=-1), lambda t: F.log_softmax(t), data)
    gradcheck(lambda t: F.log_softmax(t, dim=0), [data])
    other = x64(3, 2, seed=2)
    same_value_and_grad(lambda t: F.cat([t, Tensor(other)], axis=1), lambda t: F.cat([t, Tensor(other)], dim=1),
                        data)
    assert F.cat([Tensor(data), Tensor(data)]).shape == (6, 4)  # default still axis 0
    gradcheck(lambda a, b: F.cat([a, b], dim=-1), [data, other])


CONFLICTS = [
    (lambda t: t.sum(axis=0, dim=0), "sum: got both axis= and dim="),
    (lambda t: t.mean(0, dim=1), "mean: got both axis= and dim="),
    (lambda t: t.max(axis=1, dim=1), "max: got both axis= and dim="),
    (lambda t: F.sum(t, keepdims=True, keepdim=True), "sum: got both keepdims= and keepdim="),
    (lambda t: F.mean(t, 1, False, keepdim=True), "mean: got both keepdims= and keepdim="),
    (lambda t: F.max(t, dim=1, keepdims=True, keepdim=False), "max: got both keepdims= and keepdim="),
    (lambda t: t.argmax(axis=0, dim=0), "argmax: got both axis= and dim="),
    (lambda t: t.argmax(dim=0, keepdims=True, keepdim=True), "argmax: got both keepdims= and keepdim="),
    (lambda t: F.log_softmax(t, axis=1, dim=1), "log_softmax: got both axis= and dim="),
    (lambda t: F.cat([t, t], 0, dim=0), "concatenate: got both axis= and dim="),
]


@pytest.mark.parametrize("call, message", CONFLICTS)
def test_both_spellings_at_once_are_refused(call, message):
    with pytest.raises(TypeError, match=message):
        call(Tensor(x64(2, 3)))


def test_flatten_takes_end_dim():
    data = x64(2, 3, 4, 5)
    for start, end in ((0, -1), (1, 2), (1, -2), (-3, 2), (2, 2), (0, 0), (3, 3)):
        want = data.reshape(data.shape[:start % 4] + (-1,) + data.shape[end % 4 + 1:])
        np.testing.assert_array_equal(Tensor(data).flatten(start, end).data, want)
    gradcheck(lambda t: t.flatten(1, 2), [data])
    assert nn.Flatten(0, 1)(Tensor(data)).shape == (6, 4, 5) and nn.Flatten()(Tensor(data)).shape == (2, 60)
    assert Tensor(np.zeros((3, 0, 2))).flatten(0, 0).shape == (3, 0, 2)  # -1 would be ambiguous here
    assert Tensor(np.float64(2.0)).flatten().shape == (1,)
    with pytest.raises(ValueError, match="flatten: start_dim 2 comes after end_dim 1"):
        Tensor(data).flatten(2, 1)
    with pytest.raises(ValueError, match="flatten: end_dim 4 out of range"):
        Tensor(data).flatten(0, 4)


def test_cross_entropy_loss_module_equals_the_functional():
    logits, target = x64(6, 5) * 3, np.random.default_rng(3).integers(0, 5, 6)
    for smoothing in (0.0, 0.1):
        loss = nn.CrossEntropyLoss(label_smoothing=smoothing)
        same_value_and_grad(lambda z: F.cross_entropy(z, target, label_smoothing=smoothing),
                            lambda z: loss(z, target), logits)
    gradcheck(lambda z: nn.CrossEntropyLoss(reduction="mean", label_smoothing=0.2)(z, target), [logits])
    assert repr(nn.CrossEntropyLoss()) == "CrossEntropyLoss(reduction='mean', label_smoothing=0.0)"


def test_cross_entropy_loss_refuses_what_it_does_not_do():
    for reduction in ("sum", "none", "Mean"):
        with pytest.raises(ValueError, match=f"reduction={reduction!r} is not supported; only 'mean'"):
            nn.CrossEntropyLoss(reduction=reduction)
    with pytest.raises(ValueError, match=r"label_smoothing must be in \[0, 1\)"):
        nn.CrossEntropyLoss(label_smoothing=1.0)
    with pytest.raises(TypeError):  # PyTorch's first positional argument is a class weight, which tinycomp lacks
        nn.CrossEntropyLoss(np.ones(5))


def test_grad_is_a_numpy_array_not_a_tensor():
    t = Tensor(x64(2, 3), requires_grad=True)
    t.sum(dim=1).sum().backward()
    assert type(t.grad) is np.ndarray and t.grad.shape == (2, 3)


def test_import_sets_thread_wait_defaults_that_the_environment_overrides():
    code = "import os, tinycomp; print(os.environ['OMP_WAIT_POLICY'], os.environ['OPENBLAS_THREAD_TIMEOUT'])"
    env = {k: v for k, v in os.environ.items() if k not in thread_pools.SETTINGS}
    run = lambda extra: subprocess.run([sys.executable, "-c", code], env={**env, **extra}, check=True,  # noqa: E731
                                       capture_output=True, text=True, timeout=120).stdout.split()
    assert run({}) == ["passive", "4"]
    assert run({"OMP_WAIT_POLICY": "active", "OPENBLAS_THREAD_TIMEOUT": "1"}) == ["active", "1"]
