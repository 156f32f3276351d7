"""Misuse of the public API gets a clear error (or the right answer), never a crash or a silent wrong
result: one check per problem a fuzzing review found."""
import subprocess
import sys

import numpy as np
import pytest

from tinycomp import Tensor, functional as F, nn, optim
from tinycomp.testing import gradcheck


def t(*shape, grad=False):
    return Tensor(np.ones(shape, np.float32), requires_grad=grad)


def test_conv_geometry_that_would_overflow_int64_is_refused_not_a_crash():
    code = ("import numpy as np\nfrom tinycomp import Tensor, functional as F\n"
            "x = Tensor(np.zeros((1, 3, 4, 4), np.float32)); w = Tensor(np.zeros((3, 3, 3, 3), np.float32))\n"
            "try:\n    F.conv2d(x, w, stride=2**63 // 3, padding=2**63 - 2)\nexcept ValueError as e:\n    print(e)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "conv2d: stride must be < 2**31" in r.stdout, (r.returncode, r.stderr[-500:])
    with pytest.raises(ValueError, match="avg_pool2d: kernel_size must be < 2"):
        F.avg_pool2d(t(1, 1, 2, 2), 2**32, 1, 2**31)


def test_repeated_indices_in_a_tuple_accumulate_their_gradient():
    x = t(3, 2, grad=True)
    x[(1, 1), :].sum().backward()
    np.testing.assert_array_equal(x.grad, [[0, 0], [2, 2], [0, 0]])
    y = t(3, 3, grad=True)
    y[(0, 0), (2, 2)].sum().backward()
    assert y.grad[0, 2] == 2 and y.grad.sum() == 2


def test_arithmetic_needs_a_float_tensor_and_a_numeric_constant():
    with pytest.raises(TypeError, match="add: first operand must be floating point"):
        Tensor(np.array([1, 2])) + 2.5
    for other in (None, "1", object()):
        with pytest.raises(TypeError, match="mul: the other operand must be a number"):
            t(2) * other
    np.testing.assert_array_equal((0.5 * t(2)).data, [0.5, 0.5])


def test_zeroth_power_and_relu_of_a_scalar_have_gradients():
    x = Tensor(np.array([0.0, 1.0], np.float32), requires_grad=True)
    (x ** 0).sum().backward()
    np.testing.assert_array_equal(x.grad, [0, 0])
    y = Tensor(np.array([1.0, -3.0], np.float32), requires_grad=True)
    F.relu(y.sum()).backward()
    np.testing.assert_array_equal(y.grad, [0, 0])


def test_pooling_an_empty_plane_is_refused():
    x = Tensor(np.ones((1, 1, 0, 4), np.float32))
    for call in (lambda: F.max_pool2d(x, 2, 2, 1), lambda: F.avg_pool2d(x, 2, 2, 1),
                 lambda: F.adaptive_avg_pool2d(x, 2)):
        with pytest.raises(ValueError, match="height and width must be positive"):
            call()
    with pytest.raises(ValueError, match="output_size must be an int or a pair of ints"):
        F.adaptive_avg_pool2d(t(1, 1, 4, 4), (2.5, 3))


def test_optimizer_hyperparameters_checked_in_every_group():
    lin = nn.Linear(2, 2)
    with pytest.raises(TypeError, match="SGD: params must be an iterable .* got a single Parameter"):
        optim.SGD(lin.weight, lr=0.1)
    bad = [dict(lr=float("nan")), dict(lr=0.1, momentum=1.0), dict(lr=0.1, weight_decay=float("inf")),
           dict(lr=0.1, dampening=2.0)]
    for kw in bad:
        with pytest.raises(ValueError, match="SGD: .* must be"):
            optim.SGD(lin.parameters(), **kw)
    with pytest.raises(ValueError, match=r"SGD: lr must be >= 0 and finite, got -1.0 \(parameter group 1\)"):
        optim.SGD([{"params": [lin.weight]}, {"params": [lin.bias], "lr": -1.0}], lr=0.1)
    for betas in ((1.5, 2.0), (0.9,), (0.9, 0.99, 0.999)):
        with pytest.raises(ValueError, match="Adam: betas must be a pair"):
            optim.Adam([{"params": lin.parameters(), "betas": betas}])
    with pytest.raises(ValueError, match="has no 'params'"):
        optim.SGD([{"lr": 0.1}], lr=0.1)


def test_one_cycle_needs_one_max_lr_per_group_and_sane_factors():
    lin = nn.Linear(2, 2)
    opt = optim.SGD([{"params": [lin.weight]}, {"params": [lin.bias]}], lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match="OneCycleLR: 1 max_lr values for 2 parameter groups"):
        optim.OneCycleLR(opt, [1.0], 10)
    for kw in (dict(max_lr=-1.0), dict(max_lr=1.0, div_factor=0), dict(max_lr=1.0, max_momentum=1.5)):
        with pytest.raises(ValueError, match="OneCycleLR: need max_lr > 0"):
            optim.OneCycleLR(opt, total_steps=10, **kw)


def test_batch_norm_arguments():
    with pytest.raises(ValueError, match="BatchNorm2d: num_features must be a positive int"):
        nn.BatchNorm2d(0)
    with pytest.raises(ValueError, match="BatchNorm2d: eps must be >= 0"):
        nn.BatchNorm2d(2, eps=-1)
    with pytest.raises(ValueError, match="BatchNorm1d: momentum must be in"):
        nn.BatchNorm1d(2, momentum=5)
    x = t(4, 2)
    with pytest.raises(ValueError, match="batch_norm: eps must be >= 0 and finite, got nan"):
        F.batch_norm(x, None, None, training=True, eps=float("nan"))
    with pytest.raises(ValueError, match="batch_norm: momentum must be in"):
        F.batch_norm(x, np.zeros(2, np.float32), np.ones(2, np.float32), training=True, momentum=-1)


def test_scheduler_state_stays_loadable():
    lin = nn.Linear(2, 2)
    opt = optim.SGD(lin.parameters(), lr=0.1, momentum=0.9)
    sched = optim.OneCycleLR(opt, 1.0, total_steps=3)
    sched.step()
    sched.step()
    with pytest.raises(ValueError, match="stepped 3 times"):
        sched.step()
    assert sched.last_step == 2
    sched.load_state_dict(sched.state_dict())
    for bad in ({"last_step": -5}, {"last_step": 1.5}, {}, {"last_step": 7}):
        with pytest.raises(ValueError):
            sched.load_state_dict(bad)
        assert sched.last_step == 2


def test_shapes_and_axes_must_be_ints_not_truncated_floats():
    x = t(2, 3)
    for call in (lambda: F.reshape(x, (2.7, 3.2)), lambda: F.permute(x, (1.9, 0)), lambda: x.sum(axis=(0.5,)),
                 lambda: F.transpose(x, 0, 1.0)):
        with pytest.raises(TypeError, match="must be ints"):
            call()
    with pytest.raises(ValueError, match="transpose: dims .* out of range"):
        F.transpose(x, 0, 5)
    with pytest.raises(ValueError, match="repeated axis"):
        x.sum(axis=(0, 0))
    assert F.reshape(x, (np.int64(3), -1)).shape == (3, 2) and F.reshape(x, 6).shape == (6,)


def test_flatten_range_and_module_list_contents():
    x = t(2, 3)
    assert nn.Flatten(-1)(x).shape == (2, 3) and x.flatten().shape == (6,)
    for dim in (5, -5, 1.0):
        with pytest.raises(ValueError, match="flatten: start_dim"):
            nn.Flatten(dim)(x)
    layers = nn.ModuleList([nn.ReLU()])
    with pytest.raises(TypeError, match="ModuleList: only Modules"):
        layers[0] = "relu"


def test_optimizer_state_is_validated_on_load_and_nothing_changes_on_refusal():
    lin = nn.Linear(2, 2)
    sgd = optim.SGD(lin.parameters(), lr=0.1, momentum=0.9)
    adam = optim.Adam(lin.parameters())
    for p in lin.parameters():
        p.grad = np.ones_like(p.data)
    sgd.step()
    adam.step()
    good_sgd, good_adam = sgd.state_dict(), adam.state_dict()
    zero_d = {**good_sgd, "state": {0: {"momentum_buffer": np.float32(1.0) * np.ones(())}}}
    negative_lr = {**good_sgd, "param_groups": [dict(good_sgd["param_groups"][0], lr=-1.0)]}
    before = sgd.state_dict()
    for bad, match in ((zero_d, "must be an array of the parameter's shape"), (negative_lr, "lr must be >= 0")):
        with pytest.raises(ValueError, match=match):
            sgd.load_state_dict(bad)
    assert sgd.param_groups[0]["lr"] == before["param_groups"][0]["lr"]
    np.testing.assert_array_equal(sgd.state_dict()["state"][0]["momentum_buffer"], before["state"][0]["momentum_buffer"])
    with pytest.raises(ValueError, match="Adam keeps"):
        adam.load_state_dict(good_sgd)
    missing = {**good_adam, "state": {i: {k: v for k, v in e.items() if k != "exp_avg"}
                                      for i, e in good_adam["state"].items()}}
    with pytest.raises(ValueError, match="Adam keeps"):
        adam.load_state_dict(missing)
    adam.load_state_dict(good_adam)


def test_hardtanh_bounds_and_float16_relu_backward():
    with pytest.raises(ValueError, match="hardtanh: need min_val <= max_val"):
        F.hardtanh(t(2), min_val=float("nan"))
    x = Tensor(np.array([-1.0, 2.0], np.float16), requires_grad=True)
    F.relu(x).sum().backward()
    np.testing.assert_array_equal(x.grad, [0, 1])


def test_schedulers_refuse_nan_infinite_and_fractional_arguments():
    opt = optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1)
    nan, inf = float("nan"), float("inf")
    bad = [(optim.StepLR, dict(step_size=nan), "StepLR: step_size must be an int >= 1, got nan"),
           (optim.StepLR, dict(step_size=2.0), "StepLR: step_size must be an int >= 1, got 2.0"),
           (optim.StepLR, dict(step_size=2, gamma=nan), "StepLR: gamma must be a finite number > 0, got nan"),
           (optim.StepLR, dict(step_size=2, gamma=-0.5), "StepLR: gamma must be a finite number > 0"),
           (optim.MultiStepLR, dict(milestones=[2, nan]), r"MultiStepLR: milestones must be ints >= 1, got \[2, nan\]"),
           (optim.MultiStepLR, dict(milestones=[2.5]), "MultiStepLR: milestones must be ints >= 1"),
           (optim.MultiStepLR, dict(milestones=[3, -1]), "MultiStepLR: milestones must be ints >= 1"),
           (optim.MultiStepLR, dict(milestones=[3], gamma=inf), "MultiStepLR: gamma must be a finite number > 0"),
           (optim.CosineAnnealingLR, dict(T_max=nan), "CosineAnnealingLR: T_max must be an int >= 1, got nan"),
           (optim.CosineAnnealingLR, dict(T_max=0), "CosineAnnealingLR: T_max must be an int >= 1, got 0"),
           (optim.CosineAnnealingLR, dict(T_max=-3), "CosineAnnealingLR: T_max must be an int >= 1"),
           (optim.CosineAnnealingLR, dict(T_max=4, eta_min=nan),
            "CosineAnnealingLR: eta_min must be a finite number >= 0"),
           (optim.CosineAnnealingLR, dict(T_max=4, eta_min=-1e-3), "CosineAnnealingLR: eta_min must be"),
           (optim.LinearWarmup, dict(warmup_steps=nan), "LinearWarmup: warmup_steps must be an int >= 1"),
           (optim.LinearWarmup, dict(warmup_steps=3, start_factor=nan),
            r"LinearWarmup: start_factor must be in \(0, 1\]"),
           (optim.OneCycleLR, dict(max_lr=1.0, total_steps=nan),
            "OneCycleLR: total_steps must be an int >= 2, got nan"),
           (optim.OneCycleLR, dict(max_lr=1.0, total_steps=10.0), "OneCycleLR: total_steps must be an int >= 2"),
           (optim.OneCycleLR, dict(max_lr=1.0, total_steps=10, pct_start=nan), "OneCycleLR: pct_start must be in"),
           (optim.OneCycleLR, dict(max_lr=1.0, total_steps=10, final_div_factor=nan), "OneCycleLR: need max_lr > 0"),
           (optim.OneCycleLR, dict(max_lr=1.0, total_steps=10, base_momentum=nan), "OneCycleLR: need max_lr > 0")]
    for cls, kw, match in bad:
        with pytest.raises(ValueError, match=match):
            cls(opt, **kw)
    with pytest.raises(TypeError, match="MultiStepLR: milestones must be a list of ints, got 5"):
        optim.MultiStepLR(opt, 5)
    assert optim.MultiStepLR(opt, (np.int64(3), 1)).milestones == [1, 3]
    assert optim.StepLR(opt, np.int32(2), gamma=1).get_last_lr() == [0.1]


def test_linear_with_a_zero_size_dimension_has_pytorch_shapes_and_gradients():
    with pytest.raises(ValueError, match="Linear: in_features must be an int >= 0, got 2.0"):
        nn.Linear(2.0, 3)
    with pytest.raises(ValueError, match="Linear: out_features must be an int >= 0, got -1"):
        nn.Linear(2, -1)
    lin = nn.Linear(0, 3)
    np.testing.assert_array_equal(lin.bias.data, [0, 0, 0])  # PyTorch's bias bound 1/sqrt(fan_in) is 0 here
    lin.bias.data[...] = [1, 2, 3]
    x = Tensor(np.ones((4, 0), np.float32), requires_grad=True)
    c = np.arange(12, dtype=np.float32).reshape(4, 3)
    y = lin(x)
    np.testing.assert_array_equal(y.data, np.tile([1, 2, 3], (4, 1)))  # the bias, broadcast
    (y * c).sum().backward()
    assert x.grad.shape == (4, 0) and lin.weight.grad.shape == (3, 0)
    np.testing.assert_array_equal(lin.bias.grad, c.sum(axis=0))
    rng = np.random.default_rng(0)
    for n, k, m in ((2, 0, 3), (2, 3, 0), (0, 3, 2), (5, 0, 0)):
        x, w, b = rng.standard_normal((n, k)), rng.standard_normal((m, k)), rng.standard_normal(m)
        assert gradcheck(F.linear, [x, w, b])
    out = nn.Linear(3, 0)(t(2, 3, grad=True))
    assert out.shape == (2, 0)


def test_shape_mismatches_in_arithmetic_name_the_op_and_both_shapes():
    a, b = t(2, 3), t(4)
    for op, call in (("add", lambda: a + b), ("sub", lambda: a - b), ("mul", lambda: a * b),
                     ("div", lambda: a / b), ("add", lambda: np.ones(4, np.float32) + a)):
        with pytest.raises(ValueError, match=rf"{op}: shapes \((2, 3|4,)\) and \((4,|2, 3)\) do not broadcast"):
            call()
    with pytest.raises(ValueError, match=r"div: shapes \(2, 3\) and \(4,\) do not broadcast"):
        F.div(a, np.ones(4))
    with pytest.raises(ValueError, match=r"matmul: inner dimensions differ, \(2, 3\) @ \(4, 5\)"):
        a @ t(4, 5)
    with pytest.raises(ValueError, match=r"matmul: shapes \(2, 2, 3\) and \(3, 3, 5\) do not broadcast "
                                         r"\(batch axes \(2,\) and \(3,\)\)"):
        t(2, 2, 3) @ t(3, 3, 5)
    assert (t(2, 1, 1, 3) @ t(4, 3, 5)).shape == (2, 4, 1, 5) and (t(2, 3) * t(3)).shape == (2, 3)


def test_padding_that_would_need_a_huge_array_is_refused_before_allocating():
    x, w = t(1, 1, 4, 4), t(1, 1, 3, 3)
    with pytest.raises(ValueError, match=r"conv2d: padding \(1048576, 1048576\) \(stride \(1, 1\)\) on input "
                                         r"\(1, 1, 4, 4\) with weight \(1, 1, 3, 3\) would need a padded input of "
                                         r"shape \(1, 1, 2097156, 2097156\) \(4,398,063,288,336 elements\), more "
                                         r"than MAX_ELEMENTS = 2\*\*31"):
        F.conv2d(x, w, padding=2**20)
    with pytest.raises(ValueError, match=r"conv2d: padding \(0, 1073741824\) .* would need a padded input"):
        F.conv2d(x, w, padding=(0, 2**30))
    with pytest.raises(ValueError, match=r"conv2d: padding \(0, 0\) .* would need an output of shape "
                                         r"\(1, 1073741824, 2, 2\)"):
        F.conv2d(x, Tensor(np.broadcast_to(np.ones((1, 1, 3, 3), np.float32), (2**30, 1, 3, 3))))  # no copy
    with pytest.raises(ValueError, match=r"pad: pad_width \(\(0, 0\), \(1073741824, 1\)\) on shape \(2, 3\) would "
                                         r"need an output of shape \(2, 1073741828\)"):
        F.pad(t(2, 3), ((0, 0), (2**30, 1)))
    assert F.conv2d(x, w, padding=1).shape == (1, 1, 4, 4) and F.pad(t(2, 3), ((1, 1), (0, 2))).shape == (4, 5)
    # pooling pads by at most half its kernel and never allocates the padded input: huge windows just work
    x = Tensor(np.arange(30, dtype=np.float32).reshape(1, 1, 5, 6))
    np.testing.assert_array_equal(F.max_pool2d(x, 2**31 - 1, 1, 2**30 - 1).data, np.full((1, 1, 5, 6), 29))
    np.testing.assert_allclose(F.avg_pool2d(x, 2**31 - 1, 1, 2**30 - 1, count_include_pad=False).data, 14.5)


def test_pad_widths_must_be_integer_pairs():
    """A float, bool, negative or missing pad width was truncated or misread; now refused, naming pad."""
    x = Tensor(np.ones((2, 3), np.float32))
    for bad in (((0, 0), (1.5, 0)), ((0, 0), (True, 0)), ((0, -1), (0, 0)), ((0, 0),), (1, 2), None,
                ((0, 0), (1, 2, 3))):
        with pytest.raises(ValueError, match=r"pad: need one \(before, after\) pair of integers"):
            F.pad(x, bad)
    assert F.pad(x, ((np.int64(1), 0), (0, np.uint8(2)))).shape == (3, 5)


def test_bools_and_floats_are_not_taken_for_integer_arguments():
    """True would pass an isinstance(int) test and 2.0 would truncate silently: both are refused with
    a TypeError wherever an integer is meant (a pair of the wrong length gets a ValueError)."""
    from tinycomp.data.loader import BatchLoader, train_val_split
    from tinycomp_kernels.bits import pack_signs, unpack_signs
    from tinycomp_kernels.conv import conv2d_forward
    from tinycomp_kernels.im2col import im2col

    x = np.zeros((1, 2, 4, 4), np.float32)
    for stride in (True, (1, True), (1.0, 1.0), 2.0, (1, np.bool_(True))):
        with pytest.raises(TypeError, match="im2col: stride must be an int or a pair of ints"):
            im2col(x, 3, 3, stride=stride)
    with pytest.raises(ValueError, match="im2col: stride must be an int or a pair of ints"):
        im2col(x, 3, 3, stride=(1, 1, 1))
    with pytest.raises(ValueError, match="conv2d: groups must be a positive int, got True"):
        F.conv2d(t(1, 2, 4, 4), t(2, 2, 3, 3), groups=True)
    with pytest.raises(ValueError, match="conv2d_forward: groups must be a positive int, got True"):
        conv2d_forward(x, np.zeros((2, 2, 3, 3), np.float32), groups=True)
    for size, exc in ((True, TypeError), ((3, 2.0), TypeError), ((3, 3, 3), ValueError)):
        with pytest.raises(exc, match="Conv2d: kernel_size must be an int or a pair of ints"):
            nn.Conv2d(2, 2, size)
    with pytest.raises(TypeError, match="Conv2d: stride must be an int or a pair of ints"):
        nn.Conv2d(2, 2, 3, stride=(1, 2.0))
    with pytest.raises(ValueError, match="adaptive_avg_pool2d: output_size must be an int or a pair of ints"):
        F.adaptive_avg_pool2d(t(1, 1, 4, 4), True)
    with pytest.raises(ValueError, match="train_val_split: seed must be a non-negative int, got True"):
        train_val_split(10, val=2, seed=True)
    with pytest.raises(ValueError, match="BatchLoader: batch_size must be a positive int, got True"):
        BatchLoader(np.zeros((4, 3, 8, 8), np.uint8), np.zeros(4, np.int64), batch_size=True)
    with pytest.raises(TypeError, match="unpack_signs: n must be an int, got bool"):
        unpack_signs(pack_signs(np.ones((2, 3), np.float32)), True)
