"""nn.Module: registration, traversal, modes, state dicts, initialisation."""
import math

import numpy as np
import pytest

import tinycomp
from tinycomp import Tensor, nn


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.bn = nn.BatchNorm1d(4)
        self.drop = nn.Dropout(0.5)

    def forward(self, x):
        return self.drop(self.bn(self.fc(x)).relu())


def make_model():
    return nn.Sequential(Block(), nn.Linear(4, 2))


def test_names_follow_pytorch():
    m = make_model()
    assert list(m.state_dict()) == [
        "0.fc.weight", "0.fc.bias", "0.bn.weight", "0.bn.bias", "0.bn.running_mean", "0.bn.running_var",
        "0.bn.num_batches_tracked", "1.weight", "1.bias"]
    assert [n for n, _ in m.named_parameters()] == ["0.fc.weight", "0.fc.bias", "0.bn.weight", "0.bn.bias",
                                                    "1.weight", "1.bias"]
    assert [n for n, _ in m.named_buffers()] == ["0.bn.running_mean", "0.bn.running_var", "0.bn.num_batches_tracked"]
    assert [n for n, _ in m.named_modules()] == ["", "0", "0.fc", "0.bn", "0.drop", "1"]
    assert len(list(m.children())) == 2


def test_train_eval_reaches_every_module():
    m = make_model()
    m.eval()
    assert all(not mod.training for mod in m.modules())
    m.train()
    assert all(mod.training for mod in m.modules())


def test_state_dict_round_trip_gives_the_same_outputs():
    tinycomp.manual_seed(0)
    a, b = make_model(), make_model()
    a.eval(), b.eval()
    x = Tensor(np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32))
    assert not np.allclose(a(x).data, b(x).data)
    b.load_state_dict(a.state_dict())
    np.testing.assert_array_equal(a(x).data, b(x).data)


def test_state_dict_is_a_copy():
    m = nn.Linear(2, 2)
    sd = m.state_dict()
    sd["weight"][...] = 123
    assert not np.any(m.weight.data == 123)


@pytest.mark.parametrize("edit, message", [
    (lambda sd: sd.pop("1.bias"), "missing key: 1.bias"),
    (lambda sd: sd.update(extra=np.zeros(1)), "unexpected key: extra"),
    (lambda sd: sd.update({"1.weight": np.zeros((3, 4), np.float32)}), r"1.weight: shape \(3, 4\)"),
])
def test_bad_state_dict_raises_and_leaves_the_model_unchanged(edit, message):
    m = make_model()
    before = m.state_dict()
    sd = make_model().state_dict()
    edit(sd)
    with pytest.raises(ValueError, match=message):
        m.load_state_dict(sd)
    for k, v in m.state_dict().items():
        np.testing.assert_array_equal(v, before[k])


def test_non_strict_load_reports_missing_and_unexpected():
    m = nn.Linear(2, 2)
    missing, unexpected = m.load_state_dict({"weight": np.ones((2, 2), np.float32), "x": np.ones(1)}, strict=False)
    assert missing == ["bias"] and unexpected == ["x"]
    np.testing.assert_array_equal(m.weight.data, np.ones((2, 2)))


def test_replace_a_child_by_name():
    m = make_model()
    m.set_submodule("0.drop", nn.Identity())
    assert isinstance(m.get_submodule("0.drop"), nn.Identity)
    m[1] = nn.Linear(4, 3)
    assert m(Tensor(np.ones((2, 4), np.float32))).shape == (2, 3)
    with pytest.raises(AttributeError, match="no child 'nope'"):
        m.set_submodule("0.nope", nn.Identity())


def test_shared_parameter_is_listed_once():
    lin = nn.Linear(3, 3)
    m = nn.Sequential(lin, nn.ReLU(), lin)
    assert len(list(m.parameters())) == 2


def test_default_init_bounds_match_pytorch():
    tinycomp.manual_seed(0)
    conv = nn.Conv2d(16, 32, 3)
    bound = 1 / math.sqrt(16 * 9)
    w = conv.weight.data
    assert w.shape == (32, 16, 3, 3) and w.dtype == np.float32
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.95 * bound
    assert np.abs(conv.bias.data).max() <= bound
    lin = nn.Linear(100, 10)
    assert np.abs(lin.weight.data).max() <= 0.1 and np.abs(lin.weight.data).max() > 0.095


def test_zero_grad_clears_gradients():
    m = nn.Linear(2, 1)
    m(Tensor(np.ones((1, 2), np.float32))).sum().backward()
    assert m.weight.grad is not None
    m.zero_grad()
    assert all(p.grad is None for p in m.parameters())


def test_layer_argument_errors():
    with pytest.raises(ValueError, match="divisible by groups"):
        nn.Conv2d(3, 4, 3, groups=2)
    with pytest.raises(ValueError, match="kernel_size"):
        nn.Conv2d(3, 4, (3, 3, 3))
    with pytest.raises(ValueError, match="Dropout: p"):
        nn.Dropout(2.0)
