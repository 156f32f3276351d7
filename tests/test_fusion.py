"""Fused BatchNorm + ReLU and add + ReLU (nn.fused): the ops against their op-by-op composition, and
the models' choice of path (fused only where the modules are the plain float layers nobody watches)."""
import os
import subprocess
import sys

import numpy as np
import pytest

import tinycomp
from tinycomp import Tensor, functional as F, models, nn, optim
from tinycomp.autograd import profile
from tinycomp.testing import gradcheck


def _grads(fn, arrays, dout):
    tensors = [Tensor(a, requires_grad=True) for a in arrays]
    out = fn(*tensors)
    out.backward(dout)
    return [out.data] + [t.grad for t in tensors]


def test_add_relu_gradcheck_float64():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((2, 3, 4, 4)), rng.standard_normal((2, 3, 4, 4))
    b += np.where(np.abs(a + b) < 0.05, 0.2, 0.0)  # keep a + b off the kink at 0
    gradcheck(F.add_relu, [a, b])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_add_relu_equals_relu_of_add(dtype):
    rng = np.random.default_rng(1)
    a, b, dout = (rng.standard_normal((4, 8, 5, 5)).astype(dtype) for _ in range(3))
    fused = _grads(F.add_relu, [a, b], dout)
    plain = _grads(lambda a, b: (a + b).relu(), [a, b], dout)
    for got, want in zip(fused, plain):
        assert got.dtype == dtype
        np.testing.assert_array_equal(got, want)


def test_add_relu_falls_back_to_two_ops_for_broadcasts_and_constants():
    rng = np.random.default_rng(2)
    a, c = rng.standard_normal((2, 3, 4)), rng.standard_normal((3, 1))
    for b in (c, 0.5, Tensor(c)):
        np.testing.assert_array_equal(F.add_relu(Tensor(a), b).data, np.maximum(a + np.asarray(b.data if
                                                                                  isinstance(b, Tensor) else b), 0))
    fused, plain = _grads(F.add_relu, [a, c], np.ones_like(a)), _grads(lambda a, b: (a + b).relu(), [a, c],
                                                                        np.ones_like(a))
    for got, want in zip(fused, plain):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_batch_norm_relu_equals_relu_of_batch_norm_bit_for_bit(training, dtype):
    rng = np.random.default_rng(3)
    x, dout = (rng.standard_normal((4, 6, 5, 5)).astype(dtype) for _ in range(2))
    g, b = rng.standard_normal(6).astype(dtype), rng.standard_normal(6).astype(dtype)
    bufs = [(np.zeros(6, dtype), np.ones(6, dtype)) for _ in range(2)]
    fused = _grads(lambda x, g, b: F.batch_norm_relu(x, *bufs[0], g, b, training=training), [x, g, b], dout)
    plain = _grads(lambda x, g, b: F.batch_norm(x, *bufs[1], g, b, training=training).relu(), [x, g, b], dout)
    for i, (got, want) in enumerate(zip(fused, plain)):
        assert got.dtype == dtype
        if training and i > 0:
            # the training backward's per-channel sums are split over vector lanes (SUM_REASSOC_NO_FMA), and
            # LLVM may vectorise the masked loop in another order than the plain one: equal up to the sums'
            # rounding (bit for bit on AVX-512, not in float64 on AMD Zen 3's AVX2)
            np.testing.assert_allclose(got, want, rtol=1e-5 if dtype == np.float32 else 1e-13,
                                       atol=1e-6 if dtype == np.float32 else 1e-14)
        else:
            np.testing.assert_array_equal(got, want)
    for got, want in zip(bufs[0], bufs[1]):
        np.testing.assert_array_equal(got, want)
    assert 0.1 < (fused[0] == 0).mean() < 0.9  # the clamp really happened


def test_batch_norm_module_relu_updates_what_forward_does():
    rng = np.random.default_rng(4)
    x = Tensor(rng.standard_normal((4, 3, 2, 2)).astype(np.float32))
    fused, plain = nn.BatchNorm2d(3), nn.BatchNorm2d(3)
    np.testing.assert_array_equal(fused(x, relu=True).data, plain(x).relu().data)
    for (k, v), w in zip(fused.state_dict().items(), plain.state_dict().values()):
        np.testing.assert_array_equal(v, w, err_msg=k)
    assert int(fused.num_batches_tracked) == 1


def _op_counts(model, x):
    with profile() as prof:
        model(Tensor(x, requires_grad=True)).sum().backward()
    return {name: calls for (name, phase), (calls, _) in prof.table().items() if phase == "forward"}


def _step_results(model, x, y, steps=2):
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(model(Tensor(x)), y).backward()
        opt.step()
    grads = [p.grad for p in model.parameters()]
    model.eval()
    with tinycomp.no_grad():
        logits = model(Tensor(x)).data
    return model.state_dict(), grads, logits


@pytest.mark.parametrize("name, width, blocks", [("resnet20", 0.25, 9), ("resnet18", 0.125, 8), ("shiftresnet20", 0.25, 9)])
def test_models_fused_and_op_by_op_give_the_same_bits(name, width, blocks):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((4, 3, 16, 16)).astype(np.float32)
    y = rng.integers(0, 10, 4)
    results = []
    for enabled in (True, False):
        tinycomp.manual_seed(0)
        with nn.fusion(enabled):
            model = models.get(name, width=width)
            counts = _op_counts(model, x)
            results.append(_step_results(model, x, y))
        if enabled:  # the stem and each block's first BN with their ReLUs, each block's end
            assert counts["BatchNormReLUTrain"] == blocks + 1 and counts["AddReLU"] == blocks
            assert "ReLU" not in counts and "Add" not in counts
        else:
            assert "BatchNormReLUTrain" not in counts and "AddReLU" not in counts
            assert counts["ReLU"] == 2 * blocks + 1
    (s1, g1, l1), (s2, g2, l2) = results
    assert list(s1) == list(s2)
    for key in s1:
        np.testing.assert_array_equal(s1[key], s2[key], err_msg=key)
    for a, b in zip(g1, g2):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(l1, l2)


def test_replaced_or_watched_modules_run_op_by_op():
    x = np.random.default_rng(6).standard_normal((2, 3, 8, 8)).astype(np.float32)
    tinycomp.manual_seed(0)
    model = models.get("resnet20", width=0.25)
    model.stem_act = nn.Identity()  # as the binary methods do: the stem's BN output feeds a sign
    counts = _op_counts(model, x)
    assert counts["BatchNormReLUTrain"] == 9 and counts["BatchNormTrain"] == 21 - 9
    block = model.layer2[1]
    block.bn2.__dict__["forward"] = block.bn2.forward  # a watcher's wrapper, as summary and tracing install
    counts = _op_counts(model, x)
    assert counts["BatchNormReLUTrain"] == 8 and counts["AddReLU"] == 8 and counts["Add"] == 1
    del block.bn2.__dict__["forward"]
    block.bn1 = type("MyBN", (nn.BatchNorm2d,), {})(block.bn1.num_features)  # a subclass is not the plain layer
    assert _op_counts(model, x)["BatchNormReLUTrain"] == 8


def test_channel_trace_and_summary_see_the_op_by_op_model():
    from tinycomp.compress.dependency import trace_channels
    from tinycomp.summary import summarize

    tinycomp.manual_seed(0)
    model = models.get("resnet20", width=0.25)
    with nn.fusion(False):
        trace, summary = trace_channels(model), summarize(model)
    fused_trace = trace_channels(model)
    assert fused_trace.fixed_reason == trace.fixed_reason
    assert [g.n_prunable for g in fused_trace.groups] == [g.n_prunable for g in trace.groups]
    assert summarize(model) == summary


def test_switch_context_decorator_and_environment():
    assert nn.fusion_enabled()
    with pytest.raises(RuntimeError):
        with nn.fusion(enabled=False):
            assert not nn.fusion_enabled() and not nn.fusable(nn.BatchNorm2d(2), nn.ReLU())
            raise RuntimeError
    assert nn.fusion_enabled() and nn.fusable(nn.BatchNorm2d(2), nn.ReLU())
    assert nn.fusion(False)(nn.fusion_enabled)() is False
    assert not nn.fusable(nn.BatchNorm1d(2)) and not nn.fusable(nn.Identity())
    env = dict(os.environ, TINYCOMP_FUSION="0")
    out = subprocess.run([sys.executable, "-c", "from tinycomp import nn; print(nn.fusion_enabled())"],
                         env=env, capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "False"
