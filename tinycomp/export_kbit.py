"""Export of the k-bit and ternary layers: weight codes, the input quantizer, and the scales that
``tinycomp.runtime.kbit`` applies.

A quantized weight is written as integer codes c with a per-output scale s_w and an affine map
(a, z), so that the training graph's weight is w_q[o] = s_w[o] · (a·c - z); an input quantizer gives
unsigned m-bit codes q_x with x_q = s_x · q_x. The recipes' codes, a, z, s_w and s_x:
``tinycomp/compress/integer_form.py``, read off the recipes' own outputs (eval mode, no gradient), so
the file holds exactly what the training graph multiplies; export refuses a recipe whose output is off
its grid. The file stores PACT's alpha or LSQ's step. With I, S the integer product and the patch
sums of q_x:

    kbit         y[o] = scale[o] · (a·I - z·S) + bias[o],  scale[o] = s_w[o] · s_x  (float32, rounded
                 once, as the eval-mode graph's integer form), then the "bn" entry (``tinycomp.export``)
    kbit_weight  (float input: ternary, w<k>a32)  scale[o] = s_o · s_w[o], s_o the BatchNorm's scale
                 folded in (1 in a network with k-bit inputs, whose BatchNorms stay unfolded)
"""
import numpy as np

from .compress.integer_form import INPUT_RECIPES, WEIGHT_RECIPES, input_scale, product_scale, weight_integers
from .compress.layers import QuantConv2d, QuantLinear
from .compress.recipes import LSQ, PACT, DorefaActivation
from .runtime.kbit import planes_for

KINDS = ("kbit", "kbit_weight")


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


def _input_spec(pools, iq):
    """The header's "input" entry of input recipe ``iq``."""
    if type(iq) is DorefaActivation:
        return {"quantizer": "dorefa", "bits": iq.bits}
    if type(iq) is PACT:
        return {"quantizer": "pact", "bits": iq.bits, "alpha": pools.float32(np.float32(iq.alpha.data.reshape(())))}
    return {"quantizer": "lsq", "bits": iq.bits, "step": pools.float32(np.float32(iq.step.data.reshape(())))}


def kbit_fields(pools, layer, kind, out_scale, name, error):
    """The header fields of k-bit / ternary ``layer`` (besides name, kind, geometry and bias), its
    BatchNorm's per-channel scale ``out_scale`` (O,) folded in."""
    try:
        codes, lo, hi, a, z, s_w = weight_integers(layer.weight_quantizer, layer.weight.data)
    except ValueError as exc:
        raise error(f"export: layer {name}: {exc}") from None
    planes, signed = planes_for(lo, hi)
    fields = {"weight": pools.codes(codes, planes, signed), "codes": [lo, hi], "affine": [a, z]}
    s_x = 1.0
    if kind == "kbit":
        fields["input"], s_x = _input_spec(pools, layer.input_quantizer), input_scale(layer.input_quantizer)
    fields["scale"] = pools.float32(product_scale(out_scale * s_w, s_x))
    return fields
