"""Same numbers as PyTorch for the ops, optimizers and schedules whose semantics the issues pin to
PyTorch's. PyTorch runs in a separate process (it is never a dependency); the test skips without it."""
import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

from tinycomp import Tensor, functional as F, optim
from tinycomp.nn import Parameter
from tinycomp_kernels import thread_pools

pytestmark = pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="PyTorch is not installed")


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    rng = np.random.default_rng(0)
    d = {"conv_x": rng.standard_normal((2, 4, 9, 8)), "conv_w": rng.standard_normal((6, 2, 3, 2)),
         "conv_b": rng.standard_normal(6), "bn_x": rng.standard_normal((5, 3, 4, 4)) * 2 + 1,
         "bn_gamma": rng.standard_normal(3), "bn_beta": rng.standard_normal(3),
         "pool_x": rng.standard_normal((2, 3, 7, 9)), "ce_logits": rng.standard_normal((6, 5)) * 3,
         "ce_target": rng.integers(0, 5, 6), "opt_p": rng.standard_normal(4),
         "opt_grads": rng.standard_normal((5, 4))}
    d["conv_g"] = rng.standard_normal((2, 6, 4, 4))
    d["bn_g"] = rng.standard_normal((5, 3, 4, 4))
    d["res_x"] = rng.standard_normal((5, 3, 4, 4)) - 1
    folder = tmp_path_factory.mktemp("parity")
    np.savez(folder / "in.npz", **d)
    script = os.path.join(os.path.dirname(__file__), "torch_side", "parity.py")
    subprocess.run([sys.executable, script, str(folder / "in.npz"), str(folder / "out.npz")], check=True,
                   env={k: v for k, v in os.environ.items() if k not in thread_pools.SETTINGS}, timeout=300)
    return d, dict(np.load(folder / "out.npz"))


def close(a, b):
    np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-10)


def test_conv2d_matches(both):
    d, ref = both
    x, w, b = (Tensor(d[k], requires_grad=True) for k in ("conv_x", "conv_w", "conv_b"))
    y = F.conv2d(x, w, b, stride=2, padding=1, dilation=2, groups=2)
    y.backward(d["conv_g"])
    close(y.data, ref["conv_y"]), close(x.grad, ref["conv_dx"]), close(w.grad, ref["conv_dw"])
    close(b.grad, ref["conv_db"])


def test_batch_norm_training_matches(both):
    d, ref = both
    x, g, b = (Tensor(d[k], requires_grad=True) for k in ("bn_x", "bn_gamma", "bn_beta"))
    rm, rv = np.zeros(3), np.ones(3)
    y = F.batch_norm(x, rm, rv, g, b, training=True, momentum=0.1, eps=1e-5)
    y.backward(d["bn_g"])
    close(y.data, ref["bn_y"]), close(x.grad, ref["bn_dx"]), close(g.grad, ref["bn_dgamma"])
    close(b.grad, ref["bn_dbeta"]), close(rm, ref["bn_rm"]), close(rv, ref["bn_rv"])


def test_fused_batch_norm_relu_and_add_relu_match(both):
    d, ref = both
    x, g, b = (Tensor(d[k], requires_grad=True) for k in ("bn_x", "bn_gamma", "bn_beta"))
    y = F.batch_norm_relu(x, None, None, g, b, training=True, eps=1e-5)
    y.backward(d["bn_g"])
    close(y.data, ref["bnr_y"]), close(x.grad, ref["bnr_dx"]), close(g.grad, ref["bnr_dgamma"])
    close(b.grad, ref["bnr_dbeta"])
    a, b = Tensor(d["bn_x"], requires_grad=True), Tensor(d["res_x"], requires_grad=True)
    y = F.add_relu(a, b)
    y.backward(d["bn_g"])
    close(y.data, ref["addr_y"]), close(a.grad, ref["addr_da"]), close(b.grad, ref["addr_db"])


def test_pooling_matches(both):
    d, ref = both
    x = Tensor(d["pool_x"], requires_grad=True)

    y = (F.max_pool2d(x, 3, 2, 1).sum() + (F.avg_pool2d(x, 2) * 2.0).sum()
         + (F.adaptive_avg_pool2d(x, (2, 3)) ** 2).sum())
    y.backward()
    close(y.data, ref["pool_y"]), close(x.grad, ref["pool_dx"])


def test_cross_entropy_with_label_smoothing_matches(both):
    d, ref = both
    z = Tensor(d["ce_logits"], requires_grad=True)
    loss = F.cross_entropy(z, d["ce_target"], label_smoothing=0.1)
    loss.backward()
    close(loss.data, ref["ce_loss"]), close(z.grad, ref["ce_dz"])


@pytest.mark.parametrize("name, make", [
    ("sgd", lambda p: optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)),
    ("adam", lambda p: optim.Adam(p, lr=0.01, weight_decay=0.01)),
    ("adamw", lambda p: optim.AdamW(p, lr=0.01, weight_decay=0.1)),
])
def test_optimizer_steps_match(both, name, make):
    d, ref = both
    p = Parameter(d["opt_p"].copy())
    opt = make([p])
    for g in d["opt_grads"]:
        p.grad = g.copy()
        opt.step()
    close(p.data, ref[f"opt_{name}"])


def test_one_cycle_schedule_matches(both):
    _, ref = both
    p = Parameter(np.zeros(1))
    opt = optim.SGD([p], lr=0.1, momentum=0.9, nesterov=True)
    sched = optim.OneCycleLR(opt, max_lr=0.2, total_steps=40, pct_start=0.25)
    lrs, moms = [], []
    for i in range(40):
        lrs.append(opt.param_groups[0]["lr"])
        moms.append(opt.param_groups[0]["momentum"])
        if i < 39:
            sched.step()
    np.testing.assert_allclose(lrs, ref["onecycle_lr"], rtol=1e-12)
    np.testing.assert_allclose(moms, ref["onecycle_momentum"], rtol=1e-12)
