"""The autograd engine: accumulation, graph order, no_grad, broadcasting, errors."""
import numpy as np
import pytest

import tinycomp
from tinycomp import Function, Tensor, functional as F, no_grad


def test_diamond_graph_gets_both_contributions():
    x = Tensor(np.array([2.0, -1.0]), requires_grad=True)
    a = x * 3.0          # da/dx = 3
    b = x * x            # db/dx = 2x
    y = (a + b).sum()    # dy/dx = 3 + 2x
    y.backward()
    np.testing.assert_allclose(x.grad, 3 + 2 * x.data)


def test_tensor_used_twice_in_one_op():
    x = Tensor(np.array([1.5, 2.0]), requires_grad=True)
    (x * x).sum().backward()
    np.testing.assert_allclose(x.grad, 2 * x.data)


def test_long_chain_has_no_recursion_limit():
    x = Tensor(np.array([1.0]), requires_grad=True)
    y = x
    for _ in range(10_000):
        y = y * 1.0001
    y.sum().backward()
    np.testing.assert_allclose(x.grad, [1.0001 ** 10_000], rtol=1e-9)


def test_grad_accumulates_across_backward_calls_until_reset():
    x = Tensor(np.ones(3), requires_grad=True)
    (x * 2.0).sum().backward()
    (x * 3.0).sum().backward()
    np.testing.assert_allclose(x.grad, np.full(3, 5.0))
    x.grad = None
    (x * 4.0).sum().backward()
    np.testing.assert_allclose(x.grad, np.full(3, 4.0))


def test_no_grad_records_nothing():
    x = Tensor(np.ones(3), requires_grad=True)
    with no_grad():
        y = x * 2.0
    assert not y.requires_grad and y.is_leaf
    assert tinycomp.is_grad_enabled()

    @no_grad()
    def double(t):
        return t * 2.0

    assert not double(x).requires_grad


def test_detach_shares_data_and_cuts_the_graph():
    x = Tensor(np.ones(3), requires_grad=True)
    d = (x * 2.0).detach()
    assert not d.requires_grad
    y = (d * x).sum()
    y.backward()
    np.testing.assert_allclose(x.grad, d.data)


def test_broadcast_gradients_are_summed_to_the_input_shape():
    a = Tensor(np.ones((4, 3)), requires_grad=True)
    b = Tensor(np.ones((3,)), requires_grad=True)
    c = Tensor(np.ones((4, 1)), requires_grad=True)
    (a * b + c).sum().backward()
    np.testing.assert_allclose(b.grad, np.full(3, 4.0))
    np.testing.assert_allclose(c.grad, np.full((4, 1), 3.0))
    assert a.grad.shape == (4, 3)


def test_inputs_without_requires_grad_get_no_grad():
    a = Tensor(np.ones(3), requires_grad=True)
    b = Tensor(np.ones(3))
    (a * b).sum().backward()
    assert b.grad is None and a.grad is not None


def test_backward_on_non_scalar_needs_a_gradient():
    x = Tensor(np.ones(3), requires_grad=True)
    with pytest.raises(RuntimeError, match="non-scalar tensor of shape \\(3,\\)"):
        (x * 2.0).backward()
    with pytest.raises(ValueError, match="gradient shape"):
        (x * 2.0).backward(np.ones(4))
    with pytest.raises(RuntimeError, match="does not require grad"):
        Tensor(np.ones(1)).backward()


def test_custom_function_with_wrong_gradient_shape_is_reported():
    class Bad(Function):
        @staticmethod
        def forward(ctx, x):
            return x * 2

        @staticmethod
        def backward(ctx, dout):
            return dout[:1]

    x = Tensor(np.ones(3), requires_grad=True)
    with pytest.raises(RuntimeError, match="Bad.backward gave a gradient of shape"):
        Bad.apply(x).sum().backward()


def test_default_dtype_is_float32_and_float64_is_kept():
    assert Tensor([1.0, 2.0]).dtype == np.float32
    assert Tensor(np.zeros(2)).dtype == np.float64
    assert (Tensor(np.zeros(2)) + 1.0).dtype == np.float64
    with pytest.raises(TypeError, match="only floating-point tensors"):
        Tensor(np.arange(3), requires_grad=True)


def test_manual_seed_makes_init_reproducible():
    from tinycomp import nn

    tinycomp.manual_seed(5)
    a = nn.Linear(4, 3).weight.data.copy()
    tinycomp.manual_seed(5)
    b = nn.Linear(4, 3).weight.data.copy()
    np.testing.assert_array_equal(a, b)


def test_set_num_threads():
    import numba

    tinycomp.set_num_threads(1)
    assert numba.get_num_threads() == 1
    tinycomp.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    with pytest.raises(ValueError):
        tinycomp.set_num_threads(0)


def test_profile_counts_forward_and_backward_by_op():
    from tinycomp.autograd import profile

    x = Tensor(np.ones((3, 3)), requires_grad=True)
    with profile() as prof:
        (F.relu(x) * 2.0).sum().backward()
    table = prof.table()
    assert table[("ReLU", "forward")][0] == 1 and table[("ReLU", "backward")][0] == 1
    assert table[("Mul", "backward")][0] == 1 and all(s >= 0 for _, s in table.values())
    y = F.relu(x)  # outside the block nothing is recorded
    assert ("ReLU", "forward") in table and table[("ReLU", "forward")][0] == 1
    assert y.shape == (3, 3)


def test_scalar_results_keep_float64():
    # 0-d + 0-d gives a NumPy scalar, not an array: it must not fall back to the float32 default
    a = Tensor(np.float64(1.5), requires_grad=True)
    b = Tensor(np.ones(3), requires_grad=True).sum()
    c = a + b
    assert c.dtype == np.float64 and (c * c).dtype == np.float64
    assert Tensor(np.float64(2.0)).dtype == np.float64 and Tensor(2.0).dtype == np.float32


def test_second_backward_through_a_freed_graph_raises():
    x = Tensor(np.ones(3), requires_grad=True)
    y = (x * 2.0).sum()
    y.backward()
    with pytest.raises(RuntimeError, match="a second time"):
        y.backward()
    z = (x * 3.0).sum()
    z.backward(retain_graph=True)
    z.backward()
    np.testing.assert_allclose(x.grad, np.full(3, 2.0 + 3.0 + 3.0))
