"""Quantized layers: a Conv2d / Linear whose weight and input pass through quantizer recipes.

    y = conv2d(q_in(x), q_w(W)) + b          (QuantConv2d; QuantLinear likewise with linear)

The layer keeps the float layer's Parameters (``weight``, ``bias``: the latent float weights the
optimizer updates) and state-dict keys, plus the recipes' own parameters under
``weight_quantizer.`` and ``input_quantizer.`` (PACT's ``alpha``, LSQ's ``step``), so a float
checkpoint loads as is and only those are new.

XNOR (binary input and binary weights, docs/methods.md "XNOR"): with zero padding the layer computes
conv2d(sign(x), α·sign(W)), so its integer part conv2d(sign(x), sign(W)) is exactly what
``tinycomp_kernels.xnor_conv.binary_conv2d`` computes on the packed bits with ``pad_mode="zero"``
(padded taps count 0). The optional activation scale β (XNOR-Net's K, ``act_scale=True``)
multiplies the output by the mean over channels of |x| averaged over each output's window,
treated as a constant in backward.

k-bit layers (k-bit weights times k-bit inputs) evaluated in eval mode without autograd compute the
same product in its integer form, scale[o] · conv2d(q_x, n)[o], exactly (``integer_form``): the
form the exported runtime computes, so both round at the same places. With autograd on, or in
training, they compute conv2d(q_in(x), q_w(W)) with the recipes' gradients.
"""
import numpy as np

from .. import functional as F
from .. import nn
from ..tensor import Tensor
from . import integer_form


class _Quantized:
    """What QuantConv2d and QuantLinear share: the two recipes and their step hook."""

    def _set_quantizers(self, weight_quantizer, input_quantizer, dtype):
        self.weight_quantizer = weight_quantizer  # None: weights stay float
        self.input_quantizer = input_quantizer    # None: inputs stay float
        for q in (weight_quantizer, input_quantizer):
            for p in () if q is None else q.parameters():
                p.data = p.data.astype(dtype, copy=False)  # PACT's alpha, LSQ's step in the layer's dtype

    @property
    def weight_bits(self):
        return 32 if self.weight_quantizer is None else self.weight_quantizer.bits

    @property
    def input_bits(self):
        return 32 if self.input_quantizer is None else self.input_quantizer.bits

    def quantized_weight(self):
        w = self.weight
        return w if self.weight_quantizer is None else self.weight_quantizer(w)

    def quantized_input(self, x):
        return x if self.input_quantizer is None else self.input_quantizer(x)

    def after_step(self):
        for q in (self.weight_quantizer, self.input_quantizer):
            if q is not None:
                q.after_weight_step(self.weight)

    def _share(self, layer):
        """Take ``layer``'s Parameters (the same objects) as this layer's latent weights."""
        self.weight = layer.weight
        self.bias = layer.bias
        self.training = layer.training


class QuantConv2d(_Quantized, nn.Conv2d):
    """A Conv2d with a weight quantizer and an input quantizer (see the module docstring)."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, weight_quantizer=None, input_quantizer=None, act_scale=False, dtype=np.float32):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, dtype)
        self._set_quantizers(weight_quantizer, input_quantizer, dtype)
        self.act_scale = bool(act_scale)

    @classmethod
    def from_float(cls, conv, weight_quantizer=None, input_quantizer=None, act_scale=False):
        """A QuantConv2d sharing ``conv``'s Parameters (no copy)."""
        q = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                conv.groups, conv.bias is not None, weight_quantizer, input_quantizer, act_scale,
                conv.weight.dtype)
        q._share(conv)
        return q

    def forward(self, x):
        if integer_form.use_integer_form(self):  # eval without autograd: the exact form that deploys
            return Tensor(integer_form.conv2d(self, x.data))
        y = F.conv2d(self.quantized_input(x), self.quantized_weight(), self.bias, self.stride, self.padding,
                     self.dilation, self.groups)
        if self.act_scale:
            y = y * Tensor(self._input_scale(x.data))
        return y

    def _input_scale(self, x):
        """K (N, 1, OH, OW): mean over channels of |x|, averaged over each output's KH x KW window
        (zero padding counts as 0, like the conv)."""
        kh, kw = self.kernel_size
        mean_abs = np.abs(x).mean(axis=1, keepdims=True)  # (N, 1, H, W)
        box = np.full((1, 1, kh, kw), 1.0 / (kh * kw), x.dtype)
        return F.conv2d(Tensor(mean_abs), Tensor(box), None, self.stride, self.padding, self.dilation).data

    def extra_repr(self):
        return (super().extra_repr() + f", weight_bits={self.weight_bits}, input_bits={self.input_bits}"
                + (", act_scale=True" if self.act_scale else ""))


class QuantLinear(_Quantized, nn.Linear):
    """A Linear with a weight quantizer and an input quantizer."""

    def __init__(self, in_features, out_features, bias=True, weight_quantizer=None, input_quantizer=None,
                 dtype=np.float32):
        super().__init__(in_features, out_features, bias, dtype)
        self._set_quantizers(weight_quantizer, input_quantizer, dtype)

    @classmethod
    def from_float(cls, linear, weight_quantizer=None, input_quantizer=None):
        """A QuantLinear sharing ``linear``'s Parameters (no copy)."""
        q = cls(linear.in_features, linear.out_features, linear.bias is not None, weight_quantizer,
                input_quantizer, linear.weight.dtype)
        q._share(linear)
        return q

    def forward(self, x):
        if integer_form.use_integer_form(self):
            return Tensor(integer_form.linear(self, x.data))
        return F.linear(self.quantized_input(x), self.quantized_weight(), self.bias)

    def extra_repr(self):
        return super().extra_repr() + f", weight_bits={self.weight_bits}, input_bits={self.input_bits}"
