"""Adam (Kingma & Ba) and AdamW (Loshchilov & Hutter), PyTorch's forms.

    Adam:  d = grad + weight_decay · p                    (L2 penalty inside the gradient)
    AdamW: p = p · (1 - lr · weight_decay); d = grad      (decoupled decay)
    m = β1 m + (1 - β1) d;   v = β2 v + (1 - β2) d²;   t = t + 1
    p = p - lr · (m / (1 - β1^t)) / (sqrt(v / (1 - β2^t)) + eps)
"""
import numpy as np
from tinycomp_kernels.checks import is_real

from ..autograd import no_grad
from .optimizer import Optimizer


class Adam(Optimizer):
    state_keys = {"step": "count", "exp_avg": "array", "exp_avg_sq": "array"}

    decoupled = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    def _check_group(self, i, g):
        super()._check_group(i, g)
        self._require(i, g, "eps", lambda v: 0 <= v < np.inf, ">= 0 and finite")
        betas = g["betas"]
        if (not isinstance(betas, (tuple, list)) or len(betas) != 2
                or not all(is_real(b) and 0 <= b < 1 for b in betas)):
            raise ValueError(f"{type(self).__name__}: betas must be a pair of numbers in [0, 1), got {betas!r}")
        g["betas"] = tuple(betas)

    @no_grad()
    def step(self):
        for g in self.param_groups:
            lr, (b1, b2), eps, wd = g["lr"], g["betas"], g["eps"], g["weight_decay"]
            for p in g["params"]:
                if p.grad is None:
                    continue
                d = p.grad
                if wd and self.decoupled:
                    p.data *= 1 - lr * wd
                elif wd:
                    d = d + wd * p.data
                state = self.state.setdefault(id(p), {})
                if not state:
                    state.update(step=0, exp_avg=np.zeros_like(p.data), exp_avg_sq=np.zeros_like(p.data))
                state["step"] += 1
                m, v, t = state["exp_avg"], state["exp_avg_sq"], state["step"]
                m *= b1
                m += (1 - b1) * d
                v *= b2
                v += (1 - b2) * d * d
                denom = np.sqrt(v / (1 - b2 ** t)) + eps
                p.data -= (lr / (1 - b1 ** t) * m / denom).astype(p.dtype, copy=False)


class AdamW(Adam):
    decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        super().__init__(params, lr, betas, eps, weight_decay)
