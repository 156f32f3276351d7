"""The runtime's layers: convolutions and the linear layer of an exported model, on the kernels.

Every layer has its BatchNorm folded in (``tinycomp.export``), except in a network with k-bit inputs,
where a float conv carries it as a "bn" entry applied after the bias (y · bn.scale + bn.shift per
channel, ``read_bn``: the eval-mode BatchNorm's own rounding). With I the integer or float
product of the layer's own operands:

    float          y = conv2d(x, W') + b'                        tinycomp_kernels.conv.conv2d_forward
    binary_weight  y = scale[o] * conv2d(x, sign W) + b'          binary_weight.binary_weight_conv2d
    xnor           y = I * scale[o] + b',  I = conv2d(sign x, sign W), zero padding (a padded tap
                   counts 0)                                      xnor_conv.binary_conv2d, x packed by
                                                                  xnor_conv.pack_activations

sign(0) = +1 throughout. Weights are repacked into each kernel's layout once, at load, and what depends
on the input size too (checks, padding correction, tap offsets) at the first call of each size
(``Conv.plan``): a call then runs the kernels and little Python. The linear
layer multiplies in float (``x @ W.T``; ±1 weights times the scale for the binary kinds, sign(x)
for xnor). Each layer names the kernel it runs in ``path``: a binary-weight conv runs
binary_weight_conv2d or, where that is slower (``paths.binary_weight_path``, from the shape),
conv2d_forward on the ±1·scale weights unpacked at load. k-bit and ternary layers: ``kbit.py``.
"""
import numpy as np
from tinycomp_kernels import binary_weight, xnor_conv
from tinycomp_kernels.bits import pack_signs
from tinycomp_kernels.conv import Conv2dPlan
from tinycomp_kernels.epilogue import epilogue

from .paths import binary_weight_path

KINDS = ("float", "binary_weight", "xnor")


def layer_kind(reader, entry, where, kinds=KINDS):
    """The entry's "kind", which must be one of ``kinds``."""
    kind = reader.field(entry, "kind", str, where)
    if kind not in kinds:
        raise reader.error(f"{where}.kind", f"{kind!r} is not one of {', '.join(kinds)}")
    return kind


def read_bn(reader, entry, channels, where):
    """(scale, shift) float32 (channels,) of the entry's optional "bn", or None."""
    if "bn" not in entry:
        return None
    bn = reader.field(entry, "bn", dict, where)
    return tuple(reader.float_tensor(reader.field(bn, key, dict, f"{where}.bn"), (channels,), f"{where}.bn.{key}")
                 for key in ("scale", "shift"))


def _weights(reader, entry, kind, shape, where):
    """(weight, scale or None, bias): the float32 weight, or the ±1 one for the binary kinds."""
    if kind == "float":
        w, scale = reader.float_tensor(reader.field(entry, "weight", dict, where), shape, f"{where}.weight"), None
    else:
        w = reader.sign_tensor(reader.field(entry, "weight", dict, where), shape, f"{where}.weight")
        scale = reader.float_tensor(reader.field(entry, "scale", dict, where), (shape[0],), f"{where}.scale")
    bias = reader.float_tensor(reader.field(entry, "bias", dict, where), (shape[0],), f"{where}.bias")
    return w, scale, bias


class Conv:
    """A folded convolution of one of the three kinds above; ``x`` (N, C, H, W) float32."""

    def __init__(self, reader, entry, where):
        self.name = reader.field(entry, "name", str, where)
        self.kind = layer_kind(reader, entry, where)
        self.shape = reader.ints(entry, "shape", 4, 1, where)  # (O, C, KH, KW)
        self.stride = reader.ints(entry, "stride", 2, 1, where)
        self.padding = reader.ints(entry, "padding", 2, 0, where)
        self.where = where
        O, C, KH, KW = self.shape
        if self.kind == "xnor" and C * KH * KW >= 2 ** 24:
            raise reader.error(f"{where}.shape", f"C*KH*KW = {C * KH * KW}: too large for binary_conv2d's exact "
                               "float32 accumulator (< 2^24)")
        w, self.scale, self.bias = _weights(reader, entry, self.kind, self.shape, where)
        self.bn = read_bn(reader, entry, O, where) if self.kind == "float" else None
        if self.kind == "float":
            self.weight, self.path = np.ascontiguousarray(w), "conv2d_forward"
        elif self.kind == "binary_weight":
            self.path = binary_weight_path(self.shape)
            if self.path == "conv2d_forward":
                self.weight = np.ascontiguousarray(w * self.scale[:, None, None, None])  # ±1·scale, (O, C, KH, KW)
            else:
                self.weight = pack_signs(w.reshape(O, C * KH * KW), axis=-1)  # (O, ceil(C*KH*KW/64))
        else:
            self.weight = xnor_conv.pack_weights_per_tap(w)  # (O, KH, KW, ceil(C/64))
            self.path = "binary_conv2d"
        self.signs = w if self.kind != "float" else None  # (O, C, KH, KW) ±1, for integer_part's checks
        self._plans = {}  # (H, W) -> kernel plan (``plan``)

    @property
    def in_channels(self):
        return self.shape[1]

    @property
    def out_channels(self):
        return self.shape[0]

    def output_size(self, H, W):
        """(OH, OW) for an H x W input, or None when the kernel does not fit."""
        _, _, KH, KW = self.shape
        OH = (H + 2 * self.padding[0] - KH) // self.stride[0] + 1
        OW = (W + 2 * self.padding[1] - KW) // self.stride[1] + 1
        return (OH, OW) if OH >= 1 and OW >= 1 else None

    def plan(self, x):
        """The kernel plan of this layer for x's (H, W), made at the first call of that size (the checks,
        the weight layout, the padding correction or tap offsets: ``Conv2dPlan``, ``BinaryConv2dPlan``)."""
        hw = x.shape[2:]
        plan = self._plans.get(hw)
        if plan is None:
            plan = self._plans[hw] = self._make_plan(hw)
        return plan

    def _make_plan(self, hw):
        if self.kind == "xnor":
            return xnor_conv.BinaryConv2dPlan(self.weight, self.shape[1], hw, self.stride, self.padding,
                                              alpha=self.scale, bn_bias=self.bias, pad_mode="zero")
        return Conv2dPlan(self.weight, hw, self.stride, self.padding)

    def __call__(self, x, residual=None, relu=False):
        """The layer on x, then + ``residual`` (the block's shortcut) and ReLU if asked, all in the
        output's one epilogue pass (``tinycomp_kernels.epilogue``: the same bits as separate passes)."""
        if self.kind == "xnor":  # alpha, the bias and the residual are binary_conv2d's own epilogue
            y = self.plan(x)(xnor_conv.pack_activations(x), residual)
            return epilogue(y, relu=True) if relu else y
        if self.path == "conv2d_forward":
            y = self.plan(x)(x)
        else:
            y = binary_weight.binary_weight_conv2d(x, self.weight, self.scale, tuple(self.shape[2:]), self.stride,
                                                   self.padding)
        return epilogue(np.ascontiguousarray(y), bias=self.bias, bn=self.bn, residual=residual, relu=relu)

    def integer_part(self, x):
        """An XNOR layer's accumulator conv2d(sign x, sign W) (zero padding), before its epilogue:
        exact integers in float32."""
        if self.kind != "xnor":
            raise ValueError(f"integer_part: layer {self.name} is {self.kind}, not xnor")
        return xnor_conv.binary_conv2d(xnor_conv.pack_activations(x), self.weight, self.shape[1], self.stride,
                                       self.padding, pad_mode="zero")


class Linear:
    """y = x W.T + b (float), x (±1 W).T * scale + b (binary_weight), sign(x) (±1 W).T * scale + b (xnor)."""

    def __init__(self, reader, entry, where):
        self.name = reader.field(entry, "name", str, where)
        self.kind = layer_kind(reader, entry, where)
        self.shape = reader.ints(entry, "shape", 2, 1, where)  # (out_features, in_features)
        self.where = where
        w, self.scale, self.bias = _weights(reader, entry, self.kind, self.shape, where)
        self.weight_t = np.ascontiguousarray(w.T)  # (in_features, out_features)
        self.path = "matmul"

    @property
    def in_features(self):
        return self.shape[1]

    def __call__(self, x):
        if self.kind == "xnor":
            x = np.where(x >= 0, np.float32(1), np.float32(-1))  # sign(0) = +1
        y = x @ self.weight_t  # (N, out_features)
        if self.scale is not None:
            y *= self.scale
        y += self.bias
        return y
