"""Re-assigning a registered name keeps its position: the basic step of every model conversion."""
import numpy as np
import pytest

from tinycomp import Tensor, nn, optim


def test_sequential_setattr_keeps_order_and_forward():
    seq = nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 3))
    new = nn.Linear(3, 3)
    setattr(seq, "0", new)
    assert list(seq._modules) == ["0", "1", "2"]
    assert seq[0] is new
    x = Tensor(np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32))
    expected = seq[2](seq[1](new(x))).data
    np.testing.assert_array_equal(seq(x).data, expected)


def test_modulelist_and_named_children_keep_order():
    ml = nn.ModuleList([nn.Linear(2, 2), nn.Linear(2, 2), nn.Linear(2, 2)])
    setattr(ml, "1", nn.Identity())
    assert list(ml._modules) == ["0", "1", "2"] and isinstance(ml[1], nn.Identity)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c = nn.Linear(2, 2), nn.Linear(2, 2), nn.Linear(2, 2)

    net = Net()
    net.a = nn.Linear(2, 2)
    assert [n for n, _ in net.named_children()] == ["a", "b", "c"]
    net.set_submodule("b", nn.Identity())
    assert [n for n, _ in net.named_children()] == ["a", "b", "c"]


def test_reassigned_parameter_keeps_its_place_for_the_optimizer():
    lin = nn.Linear(2, 2)
    names_before = [n for n, _ in lin.named_parameters()]
    lin.weight = nn.Parameter(np.zeros((2, 2), np.float32))
    assert [n for n, _ in lin.named_parameters()] == names_before == ["weight", "bias"]
    opt = optim.SGD(lin.parameters(), lr=0.1)
    assert opt.param_groups[0]["params"][0] is lin.weight


def test_reassigned_buffer_keeps_its_place():
    bn = nn.BatchNorm2d(3)
    before = list(bn.state_dict())
    bn.running_mean = np.ones(3, np.float32)
    assert list(bn.state_dict()) == before
    np.testing.assert_array_equal(bn.state_dict()["running_mean"], 1)


def test_plain_tensor_to_a_parameter_name_is_refused():
    lin = nn.Linear(2, 2)
    with pytest.raises(TypeError, match=r"Linear\.weight is a Parameter.*Tensor"):
        lin.weight = Tensor(np.zeros((2, 2), np.float32))
    with pytest.raises(TypeError, match=r"Linear\.weight is a Parameter.*ndarray"):
        lin.weight = np.zeros((2, 2), np.float32)
    assert isinstance(lin.weight, nn.Parameter)


def test_non_module_to_a_child_name_is_refused_and_none_keeps_the_slot():
    seq = nn.Sequential(nn.Linear(2, 2), nn.ReLU())
    with pytest.raises(TypeError, match="child module"):
        setattr(seq, "0", 3)
    setattr(seq, "0", None)
    assert list(seq._modules) == ["0", "1"] and seq._modules["0"] is None
    lin = nn.Linear(2, 2)
    lin.bias = None
    assert [n for n, _ in lin.named_parameters()] == ["weight"]
    lin.bias = nn.Parameter(np.zeros(2, np.float32))
    assert [n for n, _ in lin.named_parameters()] == ["weight", "bias"]


def test_plain_attribute_does_not_shadow_a_later_module():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.head = 3

    net = Net()
    net.head = nn.Linear(2, 2)
    assert isinstance(net.head, nn.Linear) and "head" in net._modules
