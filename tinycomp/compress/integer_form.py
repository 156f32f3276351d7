"""The integer form of a k-bit layer: what the deployed layer multiplies, shared by the eval-mode
training graph, the exporter and (through the file) ``tinycomp.runtime``.

A k-bit recipe's output is an integer code times a scale (docs/methods.md, "Exact integer
evaluation"): weights w_q[o] = s_w[o] · n[o] with n = a·c - z, inputs x_q = s_x · q_x with q_x the
unsigned m-bit code. The conv of the quantized operands is therefore

    conv2d(x_q, w_q)[o] = (s_w[o] · s_x) · conv2d(q_x, n)[o] = scale[o] · I[o]

where I is a sum of integer products: exact in float32 while every partial sum stays below 2^24, in
float64 beyond (``tinycomp_kernels.bitserial.exact_float_dtype`` checks the bound from the codes),
so its value does not depend on the order of the sum. In eval mode without autograd a QuantConv2d / QuantLinear computes
this form (``conv2d``, ``linear``), rounding once, at ``scale[o] · I``; the runtime computes I on its
own kernels (bit-serial AND-popcount or a float conv of the codes), multiplies by the same float32
scale and applies the next BatchNorm as the graph does, so both give the same bits and the next
layer's input quantizer meets the same values: no code flips between the two at a rounding boundary.

    recipe              codes c                                   a   z   s_w
    DorefaWeight k >= 2 round(L_w·(tanh(W)/(2m) + 1/2)), 0..L_w   2   L_w 1/L_w     (L_w = 2^k - 1)
    DorefaWeight k = 1  1{W >= 0}, 0..1                           2   1   mean|W|
    LSQ (signed)        round(clip(W/s, Qn, Qp)), Qn..Qp          1   0   s
    TernaryWeight       sign(W) where kept, else 0, -1..1         1   0   alpha[o]

    input recipe        s_x
    DorefaActivation    1/L                (L = 2^m - 1)
    PACT                alpha / L          (rounded to float32, as the graph's step)
    LSQ (unsigned)      step

Codes are read off the recipe's own output, so they are exactly what the graph multiplies.
"""
import numpy as np
from tinycomp_kernels.bitserial import exact_float_dtype
from tinycomp_kernels.conv import conv2d_forward

from ..autograd import is_grad_enabled, no_grad
from ..tensor import Tensor
from . import quantizers as Q
from .recipes import LSQ, PACT, DorefaActivation, DorefaWeight, TernaryWeight

WEIGHT_RECIPES = (DorefaWeight, LSQ, TernaryWeight)
INPUT_RECIPES = (DorefaActivation, PACT, LSQ)


def has_integer_form(layer):
    """Whether ``layer`` (a QuantConv2d / QuantLinear) multiplies k-bit weight codes by k-bit input
    codes with one scale per output: the layers export writes as kind "kbit"."""
    wq, iq = layer.weight_quantizer, layer.input_quantizer
    if type(wq) not in WEIGHT_RECIPES or type(iq) not in INPUT_RECIPES or type(iq) is LSQ and iq.signed:
        return False
    return all(p.data.size == 1 for q in (wq, iq) for p in q.parameters())


@no_grad()
def weight_integers(wq, w):
    """(codes int64 of w's shape, lo, hi, a, z, s_w (O,) float64) of recipe ``wq`` on the float weight
    ``w`` (an array); ValueError when the recipe's output is off its integer grid."""
    O = w.shape[0]
    axes = tuple(range(1, w.ndim))
    if type(wq) is LSQ:
        step = wq.step.data
        q = Q.lsq(Tensor(w), Tensor(step), wq.bits, signed=True).data
        lo, hi = Q.lsq_bounds(wq.bits, signed=True)
        codes, a, z, s_w = np.rint(q / step), 1, 0, np.full(O, float(step))
    elif type(wq) is TernaryWeight:
        q = Q.ternarize_weight(Tensor(w)).data
        lo, hi, a, z = -1, 1, 1, 0
        codes, s_w = np.sign(q), np.abs(q).max(axis=axes).astype(np.float64)
    elif wq.bits == 1:
        q = Q.dorefa_weight(Tensor(w), 1).data
        lo, hi, a, z = 0, 1, 2, 1
        codes, s_w = (w >= 0).astype(np.float64), np.full(O, float(np.abs(q).max()))
    else:
        q = Q.dorefa_weight(Tensor(w), wq.bits).data
        L = 2 ** wq.bits - 1
        lo, hi, a, z = 0, L, 2, L
        codes, s_w = np.rint((q.astype(np.float64) + 1) * L / 2), np.full(O, 1.0 / L)
    codes = codes.astype(np.int64)
    back = s_w.reshape((O,) + (1,) * (w.ndim - 1)) * (a * codes - z)
    if codes.min() < lo or codes.max() > hi or not np.allclose(back, q, rtol=1e-6, atol=1e-6 * np.abs(q).max()):
        raise ValueError(f"{type(wq).__name__}'s weights are not on its {lo}..{hi} integer grid")
    return codes, lo, hi, a, z, s_w


def input_scale(iq):
    """s_x (a float holding a float32) of input recipe ``iq``: x_q = s_x · q_x."""
    levels = 2 ** iq.bits - 1
    if type(iq) is DorefaActivation:
        return 1.0 / levels
    if type(iq) is PACT:
        return float(np.float32(iq.alpha.data.reshape(())) / np.float32(levels))
    return float(np.float32(iq.step.data.reshape(())))


def product_scale(s_w, s_x):
    """scale (O,) float32 = s_w[o] · s_x, rounded once: what multiplies the integer product I."""
    return (np.asarray(s_w, np.float64) * s_x).astype(np.float32)


@no_grad()
def _operands(layer, x):
    """(q_x codes, n integers, scale (O,) float32, accumulator dtype) of ``layer`` on input array x."""
    wq, iq = layer.weight_quantizer, layer.input_quantizer
    codes, _, _, a, z, s_w = weight_integers(wq, layer.weight.data)
    s_x = input_scale(iq)
    q = np.rint(iq(Tensor(x)).data.astype(np.float64) / s_x)  # the recipe's own codes, 0..L
    dtype = exact_float_dtype(a * codes - z, 2 ** iq.bits - 1)
    return q.astype(dtype), (a * codes - z).astype(dtype), product_scale(s_w, s_x), dtype


def use_integer_form(layer):
    """Eval mode, no autograd, and a layer with an integer form: then the layer computes it."""
    return not layer.training and not is_grad_enabled() and has_integer_form(layer)


def conv2d(layer, x):
    """scale[o] · conv2d(q_x, n)[o] (+ bias), float32 (N, O, OH, OW), of QuantConv2d ``layer``."""
    q, n, scale, _ = _operands(layer, x)
    acc = conv2d_forward(q, n, layer.stride, layer.padding, layer.dilation, layer.groups)
    y = acc.astype(np.float32)
    y *= scale[:, None, None]  # (O, 1, 1) over (N, O, OH, OW)
    if layer.bias is not None:
        y += layer.bias.data[:, None, None]
    return y


def linear(layer, x):
    """scale[o] · (q_x @ n.T)[o] (+ bias), float32 (N, O), of QuantLinear ``layer``."""
    q, n, scale, _ = _operands(layer, x)
    y = (q @ n.T).astype(np.float32)
    y *= scale
    if layer.bias is not None:
        y += layer.bias.data
    return y
