"""PyTorch side of tests/test_torch_parity.py, run in its own process (PyTorch is never imported by
tinycomp or by the test process). Reads inputs from an .npz, writes PyTorch's results to another."""
import sys

import numpy as np
import torch
import torch.nn.functional as TF


def t(a, grad=True):
    return torch.tensor(a, dtype=torch.float64, requires_grad=grad)


def main(inp, outp):
    d = dict(np.load(inp, allow_pickle=False))
    r = {}
    # conv2d with groups, stride, padding, dilation
    x, w, b = t(d["conv_x"]), t(d["conv_w"]), t(d["conv_b"])
    y = TF.conv2d(x, w, b, stride=2, padding=1, dilation=2, groups=2)
    y.backward(torch.tensor(d["conv_g"]))
    r.update(conv_y=y.detach().numpy(), conv_dx=x.grad.numpy(), conv_dw=w.grad.numpy(), conv_db=b.grad.numpy())
    # batch norm in training mode: output, gradients, running statistics
    x, gamma, beta = t(d["bn_x"]), t(d["bn_gamma"]), t(d["bn_beta"])
    rm, rv = torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
    y = TF.batch_norm(x, rm, rv, gamma, beta, training=True, momentum=0.1, eps=1e-5)
    y.backward(torch.tensor(d["bn_g"]))
    r.update(bn_y=y.detach().numpy(), bn_dx=x.grad.numpy(), bn_dgamma=gamma.grad.numpy(),
             bn_dbeta=beta.grad.numpy(), bn_rm=rm.numpy(), bn_rv=rv.numpy())
    # the fused pairs of a residual block: relu(batch_norm(x)) and relu(a + b)
    x, gamma, beta = t(d["bn_x"]), t(d["bn_gamma"]), t(d["bn_beta"])
    y = TF.relu(TF.batch_norm(x, None, None, gamma, beta, training=True, eps=1e-5))
    y.backward(torch.tensor(d["bn_g"]))
    r.update(bnr_y=y.detach().numpy(), bnr_dx=x.grad.numpy(), bnr_dgamma=gamma.grad.numpy(),
             bnr_dbeta=beta.grad.numpy())
    a, b = t(d["bn_x"]), t(d["res_x"])
    y = TF.relu(a + b)
    y.backward(torch.tensor(d["bn_g"]))
    r.update(addr_y=y.detach().numpy(), addr_da=a.grad.numpy(), addr_db=b.grad.numpy())
    # pooling
    x = t(d["pool_x"])
    y = TF.max_pool2d(x, 3, 2, 1) .sum() + (TF.avg_pool2d(x, 2) * 2).sum() + (TF.adaptive_avg_pool2d(x, (2, 3)) ** 2).sum()
    y.backward()
    r.update(pool_y=y.detach().numpy(), pool_dx=x.grad.numpy())
    # cross-entropy with label smoothing
    z = t(d["ce_logits"])
    loss = TF.cross_entropy(z, torch.tensor(d["ce_target"]), label_smoothing=0.1)
    loss.backward()
    r.update(ce_loss=loss.detach().numpy(), ce_dz=z.grad.numpy())
    # optimizers: five steps with fixed gradients
    for name, make in (("sgd", lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)),
                       ("adam", lambda p: torch.optim.Adam(p, lr=0.01, weight_decay=0.01)),
                       ("adamw", lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.1))):
        p = torch.nn.Parameter(torch.tensor(d["opt_p"]))
        opt = make([p])
        for g in d["opt_grads"]:
            p.grad = torch.tensor(g)
            opt.step()
        r[f"opt_{name}"] = p.detach().numpy()
    # one-cycle schedule: lr and momentum at every step
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.1, momentum=0.9, nesterov=True)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.2, total_steps=40, pct_start=0.25)
    lrs, moms = [], []
    for _ in range(40):
        lrs.append(opt.param_groups[0]["lr"])
        moms.append(opt.param_groups[0]["momentum"])
        opt.step()
        if len(lrs) < 40:
            sched.step()
    r.update(onecycle_lr=np.array(lrs), onecycle_momentum=np.array(moms))
    np.savez(outp, **r)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
