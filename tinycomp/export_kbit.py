"""Export of the k-bit and ternary layers: weight codes, the input quantizer, and the folded epilogue
that ``tinycomp.runtime.kbit`` runs.

A quantized weight is written as integer codes c with a per-output scale s_w and an affine map
(a, z), so that the training graph's weight is w_q[o] = s_w[o] · (a·c - z):

    recipe              codes c                                   a   z   s_w
    DorefaWeight k >= 2 round(L_w·(tanh(W)/(2m) + 1/2)), 0..L_w   2   L_w 1/L_w     (L_w = 2^k - 1)
    DorefaWeight k = 1  1{W >= 0}, 0..1                           2   1   mean|W|
    LSQ (signed)        round(clip(W/s, Qn, Qp)), Qn..Qp          1   0   s
    TernaryWeight       sign(W) where kept, else 0, -1..1         1   0   alpha[o]

The codes are read off the recipe's own output (eval mode, no gradient), so the file holds exactly
what the training graph multiplies; export refuses a recipe whose output is off its grid. An input
quantizer gives unsigned m-bit codes q_x with x_q = s_x · q_x: DoReFa s_x = 1/L, PACT alpha/L
(rounded to float32, as the graph's step), LSQ its step; the file stores PACT's alpha or LSQ's step.
With the BatchNorm after the layer folded (y = s_o·conv + t_o) and I, S the integer product and the
patch sums of q_x:

    kbit         y[o] = scale[o] · (a·I - z·S) + bias[o],  scale[o] = s_o · s_w[o] · s_x
    kbit_weight  (float input: ternary, w<k>a32)  scale[o] = s_o · s_w[o]
"""
import numpy as np

from .autograd import no_grad
from .compress import quantizers as Q
from .compress.layers import QuantConv2d, QuantLinear
from .compress.recipes import LSQ, PACT, DorefaActivation, DorefaWeight, TernaryWeight
from .runtime.kbit import planes_for
from .tensor import Tensor

KINDS = ("kbit", "kbit_weight")
WEIGHT_RECIPES = (DorefaWeight, LSQ, TernaryWeight)
INPUT_RECIPES = (DorefaActivation, PACT, LSQ)


def kbit_kind(layer, name, error):
    """"kbit", "kbit_weight", or None for a layer that is not a k-bit / ternary one; ``error`` (the
    exporter's exception class) for a combination the runtime does not run."""
    if type(layer) not in (QuantConv2d, QuantLinear):
        return None
    wq, iq = layer.weight_quantizer, layer.input_quantizer
    if type(wq) not in WEIGHT_RECIPES and type(iq) not in INPUT_RECIPES:
        return None
    if type(wq) not in WEIGHT_RECIPES or iq is not None and type(iq) not in INPUT_RECIPES:
        raise error(f"export: layer {name} has quantizers {type(wq).__name__} / {type(iq).__name__}; a k-bit layer "
                    "takes DoReFa, LSQ or TWN weights with DoReFa, PACT, LSQ or float inputs")
    if type(iq) is LSQ and iq.signed:
        raise error(f"export: layer {name} quantizes its input with signed LSQ; exported inputs are unsigned codes")
    for q in (wq, iq):
        for p in () if q is None else q.parameters():
            if p.data.size != 1:
                raise error(f"export: layer {name}: {type(q).__name__} has a parameter of shape {p.data.shape}; only "
                            "one alpha / step per layer is exported")
    return "kbit" if iq is not None else "kbit_weight"


@no_grad()
def _weight_codes(wq, w, name, error):
    """(codes int64 of w's shape, lo, hi, a, z, s_w (O,) float64) of recipe ``wq`` on weight ``w``."""
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
        raise error(f"export: layer {name}: {type(wq).__name__}'s weights are not on its {lo}..{hi} integer grid")
    return codes, lo, hi, a, z, s_w


def _input_spec(pools, iq):
    """(the header's "input" entry, s_x) of input recipe ``iq``."""
    levels = 2 ** iq.bits - 1
    if type(iq) is DorefaActivation:
        return {"quantizer": "dorefa", "bits": iq.bits}, 1.0 / levels
    if type(iq) is PACT:
        alpha = np.float32(iq.alpha.data.reshape(()))
        return {"quantizer": "pact", "bits": iq.bits, "alpha": pools.float32(alpha)}, float(alpha / np.float32(levels))
    step = np.float32(iq.step.data.reshape(()))
    return {"quantizer": "lsq", "bits": iq.bits, "step": pools.float32(step)}, float(step)


def kbit_fields(pools, layer, kind, out_scale, name, error):
    """The header fields of k-bit / ternary ``layer`` (besides name, kind, geometry and bias), its
    BatchNorm's per-channel scale ``out_scale`` (O,) folded in."""
    codes, lo, hi, a, z, s_w = _weight_codes(layer.weight_quantizer, layer.weight.data, name, error)
    planes, signed = planes_for(lo, hi)
    fields = {"weight": pools.codes(codes, planes, signed), "codes": [lo, hi], "affine": [a, z]}
    s_x = 1.0
    if kind == "kbit":
        fields["input"], s_x = _input_spec(pools, layer.input_quantizer)
    fields["scale"] = pools.float32(out_scale * s_w * s_x)
    return fields
