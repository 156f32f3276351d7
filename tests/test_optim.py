"""Optimizers and schedules against hand-computed values; state dicts."""
import math

import numpy as np
import pytest

from tinycomp import nn, optim
from tinycomp.nn import Parameter


def param(values, grad):
    p = Parameter(np.array(values, dtype=np.float64))
    p.grad = np.array(grad, dtype=np.float64)
    return p


def test_sgd_plain_and_weight_decay():
    p = param([1.0, -2.0], [0.5, 0.5])
    optim.SGD([p], lr=0.1, weight_decay=0.01).step()
    np.testing.assert_allclose(p.data, [1.0 - 0.1 * (0.5 + 0.01), -2.0 - 0.1 * (0.5 - 0.02)])


def test_sgd_momentum_two_steps():
    p = param([1.0], [1.0])
    opt = optim.SGD([p], lr=0.1, momentum=0.9)
    opt.step()                     # buf = 1      -> p = 0.9
    p.grad = np.array([2.0])
    opt.step()                     # buf = 0.9 + 2 = 2.9 -> p = 0.9 - 0.29
    np.testing.assert_allclose(p.data, [0.61])


def test_sgd_nesterov_two_steps():
    p = param([1.0], [1.0])
    opt = optim.SGD([p], lr=0.1, momentum=0.9, nesterov=True)
    opt.step()                     # buf = 1, d = 1 + 0.9 = 1.9 -> p = 0.81
    p.grad = np.array([2.0])
    opt.step()                     # buf = 2.9, d = 2 + 2.61 = 4.61 -> p = 0.81 - 0.461
    np.testing.assert_allclose(p.data, [0.349])


def test_adam_first_step_moves_by_lr():
    p = param([1.0, 1.0], [3.0, -0.001])
    optim.Adam([p], lr=0.01).step()
    # after bias correction m̂ = g, v̂ = g², so the step is lr · sign(g) (up to eps)
    np.testing.assert_allclose(p.data, [0.99, 1.01], rtol=1e-6)


def test_adam_two_steps_by_hand():
    p = param([0.5], [1.0])
    opt = optim.Adam([p], lr=0.1, betas=(0.9, 0.99), eps=0.0)
    opt.step()
    p.grad = np.array([-2.0])
    opt.step()
    m = 0.9 * 0.1 * 1.0 + 0.1 * -2.0
    v = 0.99 * 0.01 * 1.0 + 0.01 * 4.0
    expected = 0.5 - 0.1 - 0.1 * (m / (1 - 0.81)) / math.sqrt(v / (1 - 0.99 ** 2))
    np.testing.assert_allclose(p.data, [expected])


def test_adamw_decays_decoupled_and_adam_couples():
    p, q = param([2.0], [0.0]), param([2.0], [0.0])
    optim.AdamW([p], lr=0.1, weight_decay=0.5).step()
    np.testing.assert_allclose(p.data, [2.0 * (1 - 0.05)])   # gradient 0: only the decay moves it
    optim.Adam([q], lr=0.1, weight_decay=0.5).step()
    np.testing.assert_allclose(q.data, [1.9], rtol=1e-6)       # L2 in the gradient: Adam step of lr


def test_parameter_groups_get_their_own_options():
    a, b = param([1.0], [1.0]), param([1.0], [1.0])
    opt = optim.SGD([{"params": [a]}, {"params": [b], "weight_decay": 0.0, "lr": 0.5}], lr=0.1, weight_decay=1.0)
    opt.step()
    np.testing.assert_allclose(a.data, [1.0 - 0.1 * 2.0])
    np.testing.assert_allclose(b.data, [0.5])
    with pytest.raises(ValueError, match="unknown options"):
        optim.SGD([{"params": [a], "lrr": 1}], lr=0.1)
    with pytest.raises(ValueError, match="more than one group"):
        optim.SGD([{"params": [a]}, {"params": [a]}], lr=0.1)


def test_optimizer_state_dict_round_trip_continues_identically():
    def run(split):
        p = param([1.0, 2.0], [0.0, 0.0])
        opt = optim.Adam([p], lr=0.1)
        for i in range(4):
            if i == split:
                saved = opt.state_dict()
                p2 = Parameter(p.data.copy())
                opt = optim.Adam([p2], lr=0.1)
                opt.load_state_dict(saved)
                p = p2
            p.grad = np.array([np.sin(i), np.cos(i)])
            opt.step()
        return p.data

    np.testing.assert_array_equal(run(split=None), run(split=2))


def test_optimizer_state_dict_mismatch_is_reported():
    opt = optim.SGD([param([1.0], [1.0])], lr=0.1, momentum=0.9)
    opt.step()
    other = optim.SGD([param([1.0], [1.0]), param([1.0], [1.0])], lr=0.1)
    with pytest.raises(ValueError, match="parameter groups"):
        other.load_state_dict(opt.state_dict())
    saved = opt.state_dict()
    saved["state"][5] = saved["state"].pop(0)
    with pytest.raises(ValueError, match="state for parameter 5, but the optimizer has 1 parameters"):
        opt.load_state_dict(saved)


def test_optimizer_state_is_loaded_in_the_parameter_dtype():
    p = Parameter(np.ones(2, np.float32))
    p.grad = np.ones(2, np.float32)
    opt = optim.SGD([p], lr=0.1, momentum=0.9)
    saved = opt.state_dict()
    saved["state"][0] = {"momentum_buffer": np.full(2, 0.5)}  # float64, e.g. written by another tool
    opt.load_state_dict(saved)
    assert opt.state[id(p)]["momentum_buffer"].dtype == np.float32
    opt.step()
    np.testing.assert_allclose(p.data, 1 - 0.1 * (0.9 * 0.5 + 1.0), rtol=1e-6)
    saved["state"][0] = {"momentum_buffer": np.full(2, 1 + 2j)}
    with pytest.raises(ValueError, match="momentum_buffer' of parameter 0 is complex128"):
        opt.load_state_dict(saved)


def _opt(lr=1.0, momentum=0.9):
    return optim.SGD([param([0.0], [0.0])], lr=lr, momentum=momentum)


def test_step_and_cosine_schedules():
    opt = _opt()
    s = optim.StepLR(opt, step_size=2, gamma=0.5)
    lrs = [opt.param_groups[0]["lr"]] + [(s.step(), opt.param_groups[0]["lr"])[1] for _ in range(4)]
    assert lrs == [1.0, 1.0, 0.5, 0.5, 0.25]
    opt = _opt()
    s = optim.CosineAnnealingLR(opt, T_max=4, eta_min=0.0)
    lrs = [opt.param_groups[0]["lr"]] + [(s.step(), opt.param_groups[0]["lr"])[1] for _ in range(4)]
    np.testing.assert_allclose(lrs, [1.0, (1 + math.cos(math.pi / 4)) / 2, 0.5, (1 + math.cos(3 * math.pi / 4)) / 2, 0.0],
                               atol=1e-12)


def test_linear_warmup_then_cosine():
    opt = _opt()
    s = optim.LinearWarmup(opt, warmup_steps=4, start_factor=0.2,
                           after=lambda o: optim.CosineAnnealingLR(o, T_max=2))
    lrs = [opt.param_groups[0]["lr"]] + [(s.step(), opt.param_groups[0]["lr"])[1] for _ in range(6)]
    np.testing.assert_allclose(lrs, [0.2, 0.4, 0.6, 0.8, 1.0, 0.5, 0.0], atol=1e-12)


def test_one_cycle_matches_pytorch_defaults():
    # The recipe: peak 0.2, 25 % warm-up -> lr 0.008 up to 0.2, then down to 8e-7;
    # momentum cycled inversely 0.95 -> 0.85 -> 0.95.
    total = 100
    opt = _opt()
    s = optim.OneCycleLR(opt, max_lr=0.2, total_steps=total, pct_start=0.25)
    lrs, moms = [], []
    for i in range(total):
        lrs.append(opt.param_groups[0]["lr"])
        moms.append(opt.param_groups[0]["momentum"])
        if i < total - 1:
            s.step()
    np.testing.assert_allclose(lrs[0], 0.008)
    np.testing.assert_allclose(lrs[24], 0.2)          # phase 1 ends at pct_start·total - 1
    np.testing.assert_allclose(lrs[-1], 0.2 / 25 / 1e4)
    np.testing.assert_allclose(moms[0], 0.95)
    np.testing.assert_allclose(moms[24], 0.85)
    np.testing.assert_allclose(moms[-1], 0.95)
    pct = (60 - 24) / (99 - 24)                        # a point in phase 2, by the cosine formula
    np.testing.assert_allclose(lrs[60], 8e-7 + (0.2 - 8e-7) / 2 * (1 + math.cos(math.pi * pct)))
    assert np.all(np.diff(lrs[:25]) > 0) and np.all(np.diff(lrs[24:]) < 0)
    with pytest.raises(ValueError, match="total_steps"):
        s.step()


def test_one_cycle_with_a_one_step_warm_up():
    # pct_start·total_steps = 1 puts phase 1's end at step 0 (PyTorch divides by zero there):
    # step 0 is the peak, then the cosine descent
    opt = _opt()
    s = optim.OneCycleLR(opt, max_lr=0.2, total_steps=4, pct_start=0.25)
    lrs = [opt.param_groups[0]["lr"]] + [(s.step(), opt.param_groups[0]["lr"])[1] for _ in range(3)]
    np.testing.assert_allclose(lrs[0], 0.2)
    np.testing.assert_allclose(lrs[-1], 0.2 / 25 / 1e4)
    assert np.all(np.diff(lrs) < 0)


def test_scheduler_state_dict_resumes():
    opt = _opt()
    s = optim.OneCycleLR(opt, max_lr=0.2, total_steps=50)
    for _ in range(17):
        s.step()
    lr = opt.param_groups[0]["lr"]
    opt2 = _opt()
    s2 = optim.OneCycleLR(opt2, max_lr=0.2, total_steps=50)
    s2.load_state_dict(s.state_dict())
    assert opt2.param_groups[0]["lr"] == lr


def test_sgd_trains_a_tiny_regression():
    import tinycomp
    from tinycomp import Tensor

    tinycomp.manual_seed(0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 3)).astype(np.float32)
    y = x @ np.array([[1.0], [-2.0], [0.5]], np.float32) + 0.3
    model = nn.Linear(3, 1)
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for _ in range(100):
        opt.zero_grad()
        loss = ((model(Tensor(x)) - Tensor(y)) ** 2).mean()
        loss.backward()
        opt.step()
    assert loss.item() < 1e-4


def test_multistep_schedule():
    opt = _opt()
    s = optim.MultiStepLR(opt, milestones=[2, 3], gamma=0.1)
    lrs = [opt.param_groups[0]["lr"]] + [(s.step(), opt.param_groups[0]["lr"])[1] for _ in range(4)]
    np.testing.assert_allclose(lrs, [1.0, 1.0, 0.1, 0.01, 0.01])
