"""Stochastic gradient descent with momentum, Nesterov momentum and L2 weight decay (PyTorch's form).

    d = grad + weight_decay · p
    buf = d (first step), then buf = momentum · buf + (1 - dampening) · d
    d = d + momentum · buf  (Nesterov)   or   d = buf
    p = p - lr · d
"""
import numpy as np

from ..autograd import no_grad
from .optimizer import Optimizer


class SGD(Optimizer):
    state_keys = {"momentum_buffer": "array"}

    def __init__(self, params, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False):
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov))

    def _check_group(self, i, g):
        super()._check_group(i, g)
        self._require(i, g, "momentum", lambda v: 0 <= v < 1, "in [0, 1)")
        self._require(i, g, "dampening", lambda v: 0 <= v <= 1, "in [0, 1]")
        if g["nesterov"] and (g["momentum"] <= 0 or g["dampening"] != 0):
            raise ValueError("SGD: Nesterov momentum needs momentum > 0 and dampening = 0")

    @no_grad()
    def step(self):
        for g in self.param_groups:
            lr, mom, wd = g["lr"], g["momentum"], g["weight_decay"]
            for p in g["params"]:
                if p.grad is None:
                    continue
                d = p.grad if wd == 0 else p.grad + wd * p.data
                if mom != 0:
                    state = self.state.setdefault(id(p), {})
                    buf = state.get("momentum_buffer")
                    if buf is None:
                        buf = state["momentum_buffer"] = np.array(d, dtype=p.dtype, copy=True)
                    else:
                        buf *= mom
                        buf += (1 - g["dampening"]) * d
                    d = d + mom * buf if g["nesterov"] else buf
                p.data -= (lr * d).astype(p.dtype, copy=False)
