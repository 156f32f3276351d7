"""Export: a trained network in its deployed form, one ``.npz`` that ``tinycomp.runtime.load`` runs.

What is stored (format ``tinycomp.runtime.format.FORMAT``; the layout is described there):
- every convolution with the BatchNorm that follows it folded in. With s = gamma / sqrt(var + eps)
  and t = beta - mean * s per output channel o:
      float conv          W'[o] = s[o] * W[o],  b'[o] = s[o] * b[o] + t[o]           (float32)
      binary-weight conv  bits of sign(W), scale[o] = alpha[o] * s[o], b'[o] as above
      XNOR conv           the same; at run time scale and b' are the kernel's epilogue
                          (binary_conv2d's alpha and bn_bias)
  alpha is BWN's mean |W| per filter (or per layer), 1 for BinaryConnect; sign(0) = +1.
- binary weights as the signs of the whole OIHW tensor flattened, packed by
  ``tinycomp_kernels.bits.pack_signs`` (element j in bit j % 64 of word j // 64, tail bits 0), so a
  layer takes ceil(O*C*KH*KW / 64) words and no padding per filter or tap; the runtime repacks them
  into each kernel's layout at load.
- all float32 tensors concatenated in one entry, all packed words in another, with offsets in the
  header, so the file is the summary's parameter memory plus a small header.
- k-bit and ternary layers (w<k>a<m> with DoReFa, PACT or LSQ, ternary) as integer weight codes in
  bit planes with their scales, and their input quantizer's parameters: ``tinycomp.export_kbit``.
- in a network with k-bit inputs (a layer of kind "kbit"), the float, kbit and kbit_weight convs keep
  their BatchNorm unfolded, as a "bn" entry {"scale", "shift"} (float32, the numbers the eval-mode
  BatchNorm applies: ``tinycomp_kernels.batchnorm.batch_norm_eval_affine``), applied after the conv
  and its bias. Every value that reaches an input quantizer is then computed with the training
  graph's roundings (the k-bit products are exact integers: ``compress/integer_form.py``), so the
  codes agree bit for bit; folding would move a value within rounding of a code boundary to the
  neighbouring code (a few images in a hundred on a random network).
- pruned layers as CSR (indices and row pointers in an int32 entry, written only when needed), SAL
  layers as tap codes and kept weights, ShiftResNet's shifts, thinned models: ``tinycomp.export_sparse``.
- the network as a list of ops (stem conv, ResNet / Bi-Real / ShiftResNet blocks, pooling, linear):
  the zoo's ResNets (resnet20/32/56, resnet18/34) and ShiftResNets (shiftresnet20/32/56) in float,
  bc, bwn, xnor, ternary and w<k>a<m>, and pruned (prune, prune+bc, prune+bwn), SAL (sal, sal+bc,
  sal+bwn) or thinned (filter-prune, alone or + any of those). Other models and methods are refused,
  naming what is supported.
"""
import json

import numpy as np
from tinycomp_kernels.batchnorm import batch_norm_eval_affine
from tinycomp_kernels.bits import pack_signs
from tinycomp_kernels.bitserial import pack_planes

from . import checkpoint, nn
from .compress.binary_blocks import BiRealBlock
from .compress.integer_form import has_integer_form
from .compress.layers import QuantConv2d, QuantLinear
from .compress.recipes import BinaryWeight, SignActivation, SignWeight
from .export_kbit import KINDS as KBIT_KINDS, kbit_fields, kbit_kind
from .export_sparse import STRUCTURED_LAYERS, check_method, shift_entry, structured_entry, thinned_record
from .models.resnet18_34 import ResNet
from .models.resnet_cifar import BasicBlock, CifarResNet
from .models.shiftresnet import ShiftBlock, ShiftResNet
from .runtime.format import FORMAT

METHODS = ("none", "bc", "bwn", "xnor", "ternary", "w<k>a<m>")
MODELS = ("resnet20", "resnet32", "resnet56", "resnet18", "resnet34",
          "shiftresnet20", "shiftresnet32", "shiftresnet56")
EXACT_KINDS = ("float", "kbit", "kbit_weight")  # the kinds that keep their BatchNorm apart in a k-bit network
BLOCK_OPS = {BasicBlock: "basic_block", BiRealBlock: "bireal_block", ShiftBlock: "shift_block"}


class ExportError(ValueError):
    """A model, method or layer that this export does not support."""


class _Pools:
    """The concatenated tensors of the file (float32, bits, int32) and the references into them."""

    def __init__(self, exact=False):
        self.flat, self.sizes = {"float32": [], "int32": []}, {"float32": 0, "int32": 0}
        self.words, self.n_words = [], 0
        self.exact = exact  # BatchNorm kept as its own affine map (a network with k-bit inputs)

    def float32(self, a):
        return self._flat("float32", a)

    def int32(self, a):
        """CSR row pointers and indices, into the int32 entry."""
        return self._flat("int32", a)

    def _flat(self, entry, a):
        a = np.ascontiguousarray(a, dtype=entry).reshape(-1)
        ref = {"offset": self.sizes[entry], "size": int(a.size)}
        self.flat[entry].append(a)
        self.sizes[entry] += a.size
        return ref

    def signs(self, w):
        words = pack_signs(np.ascontiguousarray(w).reshape(1, -1), axis=-1).reshape(-1)  # (ceil(n/64),)
        return self._words(words, bits=int(w.size))

    def codes(self, c, planes, signed):
        words = pack_planes(c.reshape(1, -1), planes, signed).reshape(-1)  # (planes * ceil(n/64),)
        return self._words(words, count=int(c.size), planes=planes, signed=signed)

    def _words(self, words, **fields):
        ref = {"offset": self.n_words, "size": int(words.size), **fields}
        self.words.append(words)
        self.n_words += words.size
        return ref

    def arrays(self):
        return (np.concatenate(self.flat["float32"]) if self.flat["float32"] else np.zeros(0, np.float32),
                np.concatenate(self.words) if self.words else np.zeros(0, np.uint64))

    def entries(self):
        """{entry: array} of the file: float32 and bits always, int32 when some layer has indices."""
        floats, words = self.arrays()
        ints = {"int32": np.concatenate(self.flat["int32"])} if self.flat["int32"] else {}
        return {"float32": floats, "bits": words, **ints}


def _bn_fold(bn, out_channels, name):
    """(s, t) float64 (O,): the eval-mode BatchNorm y = s * x + t (identity without a BatchNorm)."""
    if bn is None:
        return np.ones(out_channels), np.zeros(out_channels)
    if type(bn) is not nn.BatchNorm2d or bn.num_features != out_channels:
        raise ExportError(f"export: {name} is followed by {type(bn).__name__}, expected BatchNorm2d({out_channels})")
    s = 1.0 / np.sqrt(bn.running_var.astype(np.float64) + bn.eps)
    if bn.weight is not None:
        s = s * bn.weight.data
    t = -bn.running_mean.astype(np.float64) * s
    if bn.bias is not None:
        t = t + bn.bias.data
    return s, t


def _bn_affine(pools, bn, out_channels, name):
    """The "bn" entry: BatchNorm ``bn`` as the float32 scale and shift its eval forward applies."""
    _bn_fold(bn, out_channels, name)  # the same checks
    scale, shift = batch_norm_eval_affine(out_channels, bn.running_mean, bn.running_var,
                                          None if bn.weight is None else bn.weight.data,
                                          None if bn.bias is None else bn.bias.data, bn.eps, np.float32)
    return {"scale": pools.float32(scale), "shift": pools.float32(shift)}


def _kind(layer, name):
    """("float" | "binary_weight" | "xnor" | "kbit" | "kbit_weight", alpha (O,) float64 or None) of a
    conv or linear layer."""
    if type(layer) in (nn.Conv2d, nn.Linear):
        return "float", None
    kbit = kbit_kind(layer, name, ExportError)
    if kbit:
        return kbit, None
    if type(layer) not in (QuantConv2d, QuantLinear):
        raise ExportError(f"export: layer {name} is a {type(layer).__name__}; supported: Conv2d, Linear and "
                          "their bc / bwn / xnor forms")
    wq, iq = layer.weight_quantizer, layer.input_quantizer
    if getattr(layer, "act_scale", False):
        raise ExportError(f"export: layer {name} uses XNOR-Net's activation scale (--xnor-act-scale), not exported yet")
    unsupported_input = iq is not None and type(iq) is not SignActivation
    if unsupported_input or wq is not None and type(wq) not in (SignWeight, BinaryWeight):
        raise ExportError(f"export: layer {name} has quantizers {type(wq).__name__} / {type(iq).__name__}; supported: "
                          "float, BinaryConnect, BWN and XNOR layers")
    if wq is None:
        if iq is not None:
            raise ExportError(f"export: layer {name} signs its input but keeps float weights; not supported")
        return "float", None
    w = layer.weight.data.astype(np.float64)
    O = w.shape[0]
    if type(wq) is SignWeight or wq.scale is None:
        alpha = np.ones(O)
    elif wq.scale == "filter":
        alpha = np.abs(w.reshape(O, -1)).mean(axis=1)
    else:
        alpha = np.full(O, np.abs(w).mean())
    return ("xnor" if iq is not None else "binary_weight"), alpha


def _conv(pools, name, conv, bn=None):
    """The header entry of conv ``name`` with ``bn`` folded into it (see the module docstring)."""
    if not isinstance(conv, nn.Conv2d):
        raise ExportError(f"export: {name} is a {type(conv).__name__}, expected a convolution")
    if conv.groups != 1 or conv.dilation != (1, 1):
        raise ExportError(f"export: conv {name} has groups={conv.groups}, dilation={conv.dilation}; only groups=1, "
                          "dilation 1 are exported")
    if isinstance(conv, STRUCTURED_LAYERS):  # pruned and SAL layers: export_sparse.py
        return structured_entry(pools, name, conv, *_bn_fold(bn, conv.out_channels, name), ExportError)
    kind, alpha = _kind(conv, name)
    w = conv.weight.data
    O = w.shape[0]
    exact = pools.exact and kind in EXACT_KINDS
    s, t = (np.ones(O), np.zeros(O)) if exact else _bn_fold(bn, O, name)
    bias = t if conv.bias is None else s * conv.bias.data + t
    entry = {"name": name, "kind": kind, "shape": list(w.shape), "stride": list(conv.stride),
             "padding": list(conv.padding)}
    if exact and bn is not None:
        entry["bn"] = _bn_affine(pools, bn, O, name)
    if kind == "float":
        entry["weight"] = pools.float32(w.astype(np.float64) * s[:, None, None, None])
    elif kind in KBIT_KINDS:
        entry.update(kbit_fields(pools, conv, kind, s, name, ExportError))
    else:
        entry["weight"] = pools.signs(w)
        entry["scale"] = pools.float32(alpha * s)
    entry["bias"] = pools.float32(bias)
    return entry


def _linear(pools, name, linear):
    kind, alpha = _kind(linear, name)
    w = linear.weight.data
    entry = {"name": name, "kind": kind, "shape": list(w.shape)}
    if kind == "float":
        entry["weight"] = pools.float32(w)
    elif kind in KBIT_KINDS:
        entry.update(kbit_fields(pools, linear, kind, np.ones(w.shape[0]), name, ExportError))
    else:
        entry["weight"] = pools.signs(w)
        entry["scale"] = pools.float32(alpha)
    bias = np.zeros(w.shape[0]) if linear.bias is None else linear.bias.data
    entry["bias"] = pools.float32(bias)
    return entry


def _shortcut(pools, name, shortcut):
    """None for an identity shortcut, else the folded 1x1 projection conv."""
    children = list(shortcut._modules.values()) if type(shortcut) is nn.Sequential else None
    if children == []:
        return None
    if children is None or len(children) != 2:
        raise ExportError(f"export: shortcut {name} is a {type(shortcut).__name__}; supported: identity and "
                          "1x1 conv + BatchNorm (option B), not option A's zero padding")
    return _conv(pools, f"{name}.0", children[0], children[1])


def _ops(model, pools):
    """The network as the runtime's list of ops (stem, blocks, pooling, linear)."""
    if type(model) not in (CifarResNet, ResNet, ShiftResNet):
        raise ExportError(f"export: {type(model).__name__} is not supported yet; supported models: {', '.join(MODELS)}")
    if type(model.stem_act) not in (nn.ReLU, nn.Identity):
        raise ExportError(f"export: the stem activation is {type(model.stem_act).__name__}, expected ReLU or Identity")
    ops = [{"op": "conv", "layer": _conv(pools, "conv1", model.conv1, model.bn1),
            "relu": type(model.stem_act) is nn.ReLU}]
    stage = 1
    while hasattr(model, f"layer{stage}"):
        for j, block in enumerate(getattr(model, f"layer{stage}")):
            name = f"layer{stage}.{j}"
            if type(block) not in BLOCK_OPS:
                raise ExportError(f"export: block {name} is a {type(block).__name__}; supported: BasicBlock, "
                                  "BiRealBlock, ShiftBlock")
            op = {"op": BLOCK_OPS[type(block)], "conv1": _conv(pools, f"{name}.conv1", block.conv1, block.bn1),
                  "conv2": _conv(pools, f"{name}.conv2", block.conv2, block.bn2),
                  "shortcut": _shortcut(pools, f"{name}.shortcut", block.shortcut)}
            if type(block) is ShiftBlock:
                op["shift"] = shift_entry(f"{name}.shift", block.shift, block.conv1.out_channels, ExportError)
            ops.append(op)
        stage += 1
    ops.append({"op": "global_avg_pool"})
    ops.append({"op": "linear", "layer": _linear(pools, "linear", model.linear)})
    return ops


def export(model, path, meta):
    """Write ``model`` (a zoo ResNet or ShiftResNet, float or compressed by one of the methods in the
    module docstring) to ``path`` (a ``.npz``).

    ``meta``: {"model": zoo name, "width": float, "num_classes": int, "normalize": {"mean": [...],
    "std": [...]}, optionally "dataset"}, as a checkpoint's metadata gives them (``export_checkpoint``).
    Returns the header written (a dict)."""
    method = (getattr(model, "compression", None) or {}).get("method", "none")
    check_method(method, METHODS, ExportError)
    for key in ("model", "width", "num_classes", "normalize"):
        if key not in meta:
            raise ExportError(f"export: meta has no {key!r}")
    if meta["model"] not in MODELS:
        raise ExportError(f"export: model {meta['model']!r} is not supported yet; supported models: {', '.join(MODELS)}")
    norm = meta["normalize"]
    if not isinstance(norm, dict) or len(norm.get("mean", ())) != 3 or len(norm.get("std", ())) != 3:
        raise ExportError(f"export: meta's normalize must be {{'mean': [3 values], 'std': [3 values]}}, got {norm!r}")
    pools = _Pools(exact=any(isinstance(m, (QuantConv2d, QuantLinear)) and has_integer_form(m)
                             for m in model.modules()))
    ops = _ops(model, pools)
    pooled = pools.entries()
    header = {"format": FORMAT, "method": method, "model": meta["model"], "width": float(meta["width"]),
              "num_classes": int(meta["num_classes"]), "dataset": meta.get("dataset"),
              "normalize": {"mean": [float(v) for v in norm["mean"]], "std": [float(v) for v in norm["std"]]},
              "input_shape": [3, 32, 32], "entries": {name: int(a.size) for name, a in pooled.items()},
              "thinned": thinned_record(model), "ops": ops}
    text = json.dumps(header, separators=(",", ":"))
    arrays = {"header": np.frombuffer(text.encode("utf-8"), np.uint8), **pooled}
    checkpoint.write_atomic(path, lambda f: np.savez(f, **arrays), suffix=".npz")
    return header


def export_checkpoint(checkpoint_path, out_path):
    """Export the model saved in a ``tinycomp train`` checkpoint; returns the header written."""
    from .evaluate import model_of_checkpoint

    model, meta = model_of_checkpoint(checkpoint_path)
    cfg = meta["config"]
    with checkpoint.reading_metadata(checkpoint_path):
        info = {"model": cfg["model"], "width": cfg["width"], "num_classes": meta["num_classes"],
                "normalize": meta["normalize"], "dataset": cfg.get("dataset")}
    model.eval()
    return export(model, out_path, info)
