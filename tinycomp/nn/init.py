"""Weight initialisation, drawn from tinycomp's seeded generator (``tinycomp.manual_seed``).

PyTorch's defaults for Linear and Conv2d: weight ~ U(-b, b) with b = 1/sqrt(fan_in) (this is
``kaiming_uniform_(a=sqrt(5))``), bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)); fan_in = in_features or
(C / groups)·KH·KW.
"""
import math

import numpy as np

from ..random import generator


def fan_in(shape):
    return int(np.prod(shape[1:])) if len(shape) > 1 else int(shape[0])


def uniform_(tensor, lo, hi):
    tensor.data[...] = generator().uniform(lo, hi, tensor.shape)
    return tensor


def normal_(tensor, mean=0.0, std=1.0):
    tensor.data[...] = generator().normal(mean, std, tensor.shape)
    return tensor


def zeros_(tensor):
    tensor.data[...] = 0
    return tensor


def ones_(tensor):
    tensor.data[...] = 1
    return tensor


def kaiming_uniform_(tensor, a=0.0, nonlinearity="leaky_relu"):
    if tensor.data.size == 0:  # nothing to draw, and fan_in may be 0 (e.g. Linear(0, n))
        return tensor
    gain = math.sqrt(2.0 / (1 + a * a)) if nonlinearity == "leaky_relu" else math.sqrt(2.0)
    bound = gain * math.sqrt(3.0 / fan_in(tensor.shape))
    return uniform_(tensor, -bound, bound)


def kaiming_normal_(tensor, mode="fan_out", nonlinearity="relu"):
    fan = fan_in(tensor.shape) if mode == "fan_in" else tensor.shape[0] * int(np.prod(tensor.shape[2:]))
    return normal_(tensor, 0.0, math.sqrt(2.0) / math.sqrt(fan))


def default_init_(weight, bias):
    """PyTorch's default init for Linear and Conv2d."""
    kaiming_uniform_(weight, a=math.sqrt(5))
    if bias is not None:
        fan = fan_in(weight.shape)
        if fan == 0:  # no inputs (Linear(0, n)): PyTorch's bound is 0, so the bias starts at 0
            zeros_(bias)
        else:
            uniform_(bias, -1.0 / math.sqrt(fan), 1.0 / math.sqrt(fan))
