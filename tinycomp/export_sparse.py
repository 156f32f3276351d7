"""Export of the pruned, SAL and shift layers and of thinned models, in the forms ``tinycomp.runtime``'s
``sparse.py``, ``sal.py`` and ``shift.py`` run (their docstrings give the layouts).

Every layer is stored as the summary counts it (``PrunedConv2d`` / ``SALConv2d.summary_param_bits``),
with the BatchNorm after it folded in (s, t per output channel, as ``tinycomp.export``):

- pruned conv: its effective weight W_eff (the masked weight, or M ⊙ α·sign W with bc / bwn) as CSR
  over (O, C·KH·KW) at the mask's kept positions, row-major (a kept weight that is 0 keeps its slot:
  sign(0) = +1 gives it a sign); values s[o]·W_eff, or their signs with scale[o] = s[o]·α[o].
- SAL conv after rounding: the kept tap of each (o, c) pair as a ceil(log2 k²)-bit code, in the
  index form that takes fewer bits ("codes": a code per pair, k² marking a pruned one; "mask": a bit
  per pair and a code per kept pair; "shared" attention: a code per input channel), and the kept
  weights as above (values, or signs and scale).
- shift: {"kernel_size", "dilation"}, from which the runtime derives ShiftNet's offsets; a thinned
  shift adds {"assignment": the original channel count, "kept": its kept channels' indices into it},
  the offsets being ShiftNet's assignment for "assignment" channels at those indices.
- thinned model (filter-prune): the layers are plain smaller ones, exported as any; the header's
  "thinned" records each thinned layer's channel counts [in, out], so that a reader of the header
  (``tinycomp bench``'s float side, ``channel_record``) does not take model and width for the shapes.

α is read off the effective weight: every kept |W_eff| of a filter equals its α (BWN's mean |W| over
the kept weights, 1 for BinaryConnect), which export checks, so the file holds what the training graph
multiplies. ``error`` is the exporter's exception class (``tinycomp.export.ExportError``).
"""
import re

import numpy as np
from tinycomp_kernels.csr import csr_from_dense
from tinycomp_kernels.shift import shiftnet_offsets

from . import nn
from .autograd import no_grad
from .compress.dependency import LAYER_TYPES
from .compress.pruning import PrunedConv2d
from .compress.recipes import BinaryWeight, SignWeight
from .compress.sal import SALConv2d
from .compress.thinning import FORMAT as CHANNELS_FORMAT, in_out_channels
from .runtime.sal import tap_bits

STRUCTURES = {"prune": ("none", "bc", "bwn"), "sal": ("none", "bc", "bwn"), "filter-prune": None}  # None: any
STRUCTURED_LAYERS = (PrunedConv2d, SALConv2d)


def check_method(method, dense_methods, error):
    """Refuse ``method`` unless exported: one of ``dense_methods`` (or a w<k>a<m> that ``dense_methods``
    stands for), or a structure with a quantization that composes here."""
    structure, _, quant = method.partition("+")
    if structure not in STRUCTURES:
        structure, quant = None, method
    allowed = STRUCTURES.get(structure) or dense_methods
    base = "w<k>a<m>" if re.fullmatch(r"w\d+a\d+", quant) else quant or "none"
    if base not in allowed or quant.count("+"):
        raise error(f"export: method {method!r} is not exported yet; supported: {', '.join(dense_methods)}, "
                    "prune, prune+bc, prune+bwn, sal, sal+bc, sal+bwn, filter-prune and "
                    "filter-prune+<any of the first>")


def structured_entry(pools, name, conv, s, t, error):
    """The header entry of a pruned or SAL conv ``name``, with its BatchNorm (s, t) folded in."""
    stride, padding = conv.stride, conv.padding
    if stride[0] != stride[1] or padding[0] != padding[1]:
        raise error(f"export: {type(conv).__name__} {name} has stride {stride}, padding {padding}; the sparse "
                    "kernels take one value for both axes")
    q = conv.weight_quantizer
    if q is not None and type(q) not in (SignWeight, BinaryWeight):
        raise error(f"export: {type(conv).__name__} {name} quantizes its weights with {type(q).__name__}; "
                    "supported with pruning and SAL: float, bc, bwn")
    O = conv.out_channels
    bias = t if conv.bias is None else s * conv.bias.data + t
    entry = {"name": name, "shape": list(conv.weight.shape), "stride": list(stride), "padding": list(padding)}
    with no_grad():
        if type(conv) is PrunedConv2d:
            rows, values = _pruned(pools, entry, conv)
        else:
            rows, values = _sal(pools, entry, conv)
    family = "sparse" if type(conv) is PrunedConv2d else "sal"
    entry["nnz"] = int(values.size)
    if q is None:
        entry["kind"] = family
        entry["values"] = pools.float32(values.astype(np.float64) * s[rows])
    else:
        entry["kind"] = f"{family}_binary_weight"
        alpha = _alpha(values, rows, O, name, error)
        entry["values"] = _signs(pools, values >= 0)
        entry["scale"] = pools.float32(alpha * s)
    entry["bias"] = pools.float32(bias)
    return entry


def _pruned(pools, entry, conv):
    """CSR of the effective weight at the kept positions into ``entry``; (rows, values) of the kept weights."""
    O = conv.out_channels
    w_eff = conv.masked_weight().data.reshape(O, -1)  # (O, C*KH*KW)
    indptr, indices, values = csr_from_dense(w_eff, mask=conv.weight_mask.reshape(O, -1) != 0)
    entry["indptr"] = pools.int32(indptr)
    entry["indices"] = pools.int32(indices)
    return np.repeat(np.arange(O), np.diff(indptr)), values


def _sal(pools, entry, conv):
    """The kept taps into ``entry`` (the smaller index form); (rows, values) of the kept pairs."""
    O, C, k, _ = conv.weight.shape
    taps = conv.tap_index()  # (O, C), -1 = pruned
    rows, chans = np.nonzero(taps >= 0)  # (o, c) row-major
    kept = taps[rows, chans]
    values = conv.rounded_weight()[rows, chans, kept // k, kept % k]
    bits = tap_bits(k)
    codes = np.where(taps < 0, k * k, taps)  # k²: pruned
    if conv.shared:
        entry["index"], entry["taps"] = "shared", pools.codes(codes[0], bits, False)
    elif O * C * bits <= O * C + rows.size * bits:
        entry["index"], entry["taps"] = "codes", pools.codes(codes, bits, False)
    else:
        entry["index"], entry["mask"] = "mask", _signs(pools, taps >= 0)
        entry["taps"] = pools.codes(kept, bits, False) if rows.size else {"offset": 0, "size": 0, "count": 0,
                                                                           "planes": bits, "signed": False}
    return rows, values


def _alpha(values, rows, O, name, error):
    """α (O,) float64 of binary kept weights ``values`` (filter rows[q]): the largest |value| of each
    filter (0 with none kept), refused unless every kept |value| equals its filter's α."""
    alpha = np.zeros(O)
    np.maximum.at(alpha, rows, np.abs(values.astype(np.float64)))
    if not np.allclose(np.abs(values), alpha[rows], rtol=1e-6, atol=0):
        raise error(f"export: layer {name}'s kept weights are not ±alpha per filter; a bc / bwn layer was expected")
    return alpha


def _signs(pools, flags):
    """``flags`` (bool, any shape) as sign bits (True = +1); an empty one takes no words."""
    if not flags.size:
        return {"offset": 0, "size": 0, "bits": 0}
    return pools.signs(np.where(flags.reshape(-1), 1.0, -1.0))


def shift_entry(name, shift, channels, error):
    """The header entry of ShiftNet's shift ``shift`` (an nn.Shift, thinned or not) after a conv of
    ``channels`` outputs."""
    if type(shift) is not nn.Shift or shift.channels != channels:
        raise error(f"export: {name} is a {type(shift).__name__}, expected the Shift of {channels} channels")
    y, x = shiftnet_offsets(shift.assignment, shift.kernel_size, shift.dilation)
    if not (np.array_equal(shift.shift_y, y[shift.kept]) and np.array_equal(shift.shift_x, x[shift.kept])):
        raise error(f"export: {name} has offsets other than ShiftNet's assignment; only that one is exported")
    entry = {"kernel_size": shift.kernel_size, "dilation": shift.dilation}
    if shift.channels < shift.assignment:
        entry.update(assignment=shift.assignment, kept=shift.kept.tolist())
    return entry


def thinned_record(model):
    """{"layers": {name: [in, out]}} of a thinned model's changed layers (``model.channel_counts``), or None."""
    counts = getattr(model, "channel_counts", None)
    if not counts:
        return None
    return {"layers": {name: [e["in"], e["out"]] for name, e in counts["layers"].items()}}


def channel_record(net, thinned):
    """A ``thin_to_shapes`` record that gives fresh float ``net`` the channel counts of a header's
    "thinned" (the first channels of each layer kept: the weights are not the file's)."""
    modules = dict(net.named_modules())
    layers = {}
    for name, (n_in, n_out) in thinned["layers"].items():
        m = modules.get(name)
        original = in_out_channels(m) if type(m) in LAYER_TYPES else (None, None)  # else thin_to_shapes names it
        layers[name] = {"type": type(m).__name__, "in": n_in, "out": n_out, "original_in": original[0],
                        "original_out": original[1], "kept_in": list(range(n_in)), "kept_out": list(range(n_out))}
    return {"format": CHANNELS_FORMAT, "input_shape": [3, 32, 32], "layers": layers, "history": []}
