"""Fusion: a model runs BatchNorm2d → ReLU and a residual add → ReLU as one op each
(``BatchNorm2d(x, relu=True)``, i.e. F.batch_norm_relu, and F.add_relu): the same values and gradients as
the op-by-op path, with one pass over memory fewer each way and no intermediate tensor. Bit for bit, except
BatchNorm's training gradients, whose lane-split sums may round differently (kernels/batchnorm.py).

The model chooses, per block, with ``fusable(*modules)``: fusion is on and every module the fused path
would bypass is exactly a float BatchNorm2d or ReLU whose forward nobody wraps. So where a compression
method replaced one (an activation quantizer or an Identity for the ReLU, a Bi-Real block for the whole
block) the op-by-op path runs, and so it does while a tool watches the layers by wrapping their forward
on the instance (``summary``, ``compress.dependency``'s channel trace, ``tinycomp bench``): those see
every layer call and every op node (an Add the trace follows a residual's channels through) as built.
The modules, their names and their state-dict keys are the same either way.

Switch: ``with tinycomp.nn.fusion(enabled=False): ...`` runs every model op by op inside the block;
the environment variable TINYCOMP_FUSION=0 turns fusion off for the whole process (read at import).
"""
import os
from contextlib import contextmanager

from .layers import BatchNorm2d
from .simple import ReLU

_enabled = os.environ.get("TINYCOMP_FUSION", "1") != "0"


def fusion_enabled():
    return _enabled


@contextmanager
def fusion(enabled=True):
    """Context manager (and decorator) turning fusion on or off inside it, like ``no_grad``."""
    global _enabled
    previous, _enabled = _enabled, bool(enabled)
    try:
        yield
    finally:
        _enabled = previous


def fusable(*modules):
    """True when fusion is on and each module is exactly a BatchNorm2d or a ReLU, unwrapped."""
    return _enabled and all(type(m) in (BatchNorm2d, ReLU) and "forward" not in m.__dict__ for m in modules)
