"""The walk of ``dependency.trace_channels``: the channel labels of every tensor of a traced forward,
op by op, and the rules that give them.

Walking the graph from the input, the channel axis (axis 1) of every tensor gets a vector of labels
(``channel_graph.ChannelLabels``), one per channel, and the op that made the tensor decides them:

    Conv2d (groups 1), Linear on (N, F)   its input channels join the labels that come in; its output
                                          channels (its filters) get labels of their own
    depthwise Conv2d (groups = C = O),    channel c out is channel c in: the layer's channel c joins it
    BatchNorm1d / BatchNorm2d, Shift
    relu, hardtanh, sigmoid, ..., pow,    pass through
    dropout, pooling, a basic getitem
    that keeps axes 0 and 1 whole,
    permute keeping them, a reduction
    over other axes
    add, sub, mul, div of two traced      channel c of one joins channel c of the other (residual adds);
    tensors                               an operand broadcast along the channels (size 1) joins nothing
    concatenate along axis 1              the labels side by side (DenseNet); along another axis: joined
    reshape (N, C, H, W) -> (N, C·H·W)    each channel's label repeated H·W times (a flatten before Linear)
    Linear on (N, C, ..., F)              axis 1 passes through; the layer's own features are fixed
    pad along axis 1                      the padded channels get fixed labels (the padded count is fixed)

A Shift layer (``nn.Shift``) is channelwise, channel c moved by its own offsets, so thinning can cut
its channels as it cuts a depthwise conv's (keeping each kept channel's offsets); a bare
``F.shift2d`` is an unknown op, since no layer holds the offsets that thinning would have to cut.
Any op outside the list fixes every channel it touches, and so does a channel count a rule got wrong.
"""
from collections import OrderedDict

import numpy as np

from .. import autograd, nn
from ..functional import activation, elementwise, pooling, reduction, shape
from ..functional.dropout import Dropout  # the package's name `dropout` is the function
from ..tensor import Tensor
from .channel_graph import ChannelGraph, ChannelLabels, LayerChannels

LAYER_TYPES = (nn.Conv2d, nn.Linear, nn.BatchNorm2d, nn.BatchNorm1d, nn.Shift)

# ops that act on each channel alone: the output's channel c is the input's channel c
_CHANNELWISE = (activation.ReLU, activation.LeakyReLU, activation.Sigmoid, activation.Tanh, activation.Hardtanh,
                Dropout, elementwise.Neg, elementwise.Pow, elementwise.Exp, elementwise.Log, elementwise.Cast,
                pooling.MaxPool2d, pooling.AvgPool2d, pooling.AdaptiveAvgPool2d)
_BINARY = (elementwise.Add, elementwise.Sub, elementwise.Mul, elementwise.Div)
_REDUCTIONS = (reduction.Sum, reduction.Mean, reduction.Max)
_ONE_SLOT = ("depthwise", "batchnorm", "shift")  # layer kinds whose output channel c is input channel c


class ChannelWalk:
    """One pass over the traced graph giving every tensor its channel labels (see the module docstring).
    ``modules``: name -> traced layer; ``calls``: id(output tensor) -> the name of the layer that made it."""

    def __init__(self, modules, calls):
        self.modules, self.calls = modules, calls
        self.uf = ChannelLabels()
        self.labels = {}  # id(tensor) -> label array along axis 1, or None (a constant or parameter)
        self.layers = OrderedDict((name, None) for name in modules)

    def run(self, x, outputs, input_shape):
        """The ChannelGraph of the forward from input ``x`` to the Tensors ``outputs``."""
        self.labels[id(x)] = self.uf.new(x.shape[1], "the model input")
        # the graph's own order, inputs before users; tensors that need no gradient (constants) are
        # not in it and count as constants
        for t in (t for root in outputs for t in autograd._topological_order(root)):
            if id(t) in self.labels:
                continue
            if t._node is None:
                self.labels[id(t)] = None  # a parameter or a constant
            elif id(t) in self.calls:
                self.labels[id(t)] = self._layer(self.calls[id(t)], t)
            else:
                self.labels[id(t)] = self._op(t)
            labels = self.labels[id(t)]
            if labels is not None and (t.ndim < 2 or len(labels) != t.shape[1]):  # a rule's slip must not
                inputs = [p for p in t._node[2] if isinstance(p, Tensor)]  # cut channels it cannot follow
                self.labels[id(t)] = self._unknown(t, inputs, "a channel count the rules got wrong")
        for t in outputs:
            self._fix_all([t], "the model output")
        layers = OrderedDict((n, layer) for n, layer in self.layers.items() if layer is not None)
        return ChannelGraph.from_labels(layers, self.uf, input_shape)

    # --- the traced layers ----------------------------------------------------------------------
    def _layer(self, name, out):
        module = self.modules[name]
        inputs = out._node[2]
        x = inputs[0]  # the layer's one op: conv2d / linear / batch_norm / shift2d of its input
        labels = self._labels_of(x, "a constant layer input")
        layer = self.layers[name]
        if layer is None:
            layer = self.layers[name] = self._new_layer(name, module)
        if isinstance(module, nn.Conv2d):  # the summary's MACs: OH·OW·KH·KW per (C/groups)·O
            layer.calls.append(int(np.prod(out.shape[2:])) * int(np.prod(module.kernel_size)))
        elif isinstance(module, nn.Linear):  # rows per image times in·out
            layer.calls.append(int(np.prod(out.shape[1:-1])))
            if x.ndim != 2:  # features on the last axis, not axis 1: those are fixed, axis 1 passes through
                self._make_fixed(layer, f"{name} applied to {x.ndim} axes")
                return labels if x.ndim > 2 else None
        if labels is None or len(labels) != len(layer.in_slots):
            self._fix_all(inputs[:1], f"{name}'s input")
            self._make_fixed(layer, f"{name}'s input")
        else:
            self.uf.join(layer.in_slots, labels)
        return layer.out_slots

    def _new_layer(self, name, module):
        if isinstance(module, nn.Conv2d):
            g, c, o = module.groups, module.in_channels, module.out_channels
            kind = "conv" if g == 1 else "depthwise" if g == c == o else "fixed"
            n_in, n_out = c, o
        elif isinstance(module, nn.Linear):
            kind, n_in, n_out = "linear", module.in_features, module.out_features
        elif isinstance(module, nn.Shift):
            kind, n_in, n_out = "shift", module.channels, module.channels
        else:
            kind, n_in, n_out = "batchnorm", module.num_features, module.num_features
        layer = LayerChannels(name, module, kind)
        layer.in_slots = self.uf.new(n_in)
        layer.out_slots = layer.in_slots if kind in _ONE_SLOT else self.uf.new(n_out)
        if kind == "fixed":
            self._make_fixed(layer, f"{name} is a grouped convolution (groups={module.groups})")
        return layer

    def _make_fixed(self, layer, reason):
        layer.kind = "fixed" if layer.kind in ("conv", "linear") else layer.kind
        self.uf.fix(layer.in_slots, reason)
        self.uf.fix(layer.out_slots, reason)

    # --- every other op -------------------------------------------------------------------------
    def _op(self, out):
        fn, ctx, inputs = out._node
        tensors = [t for t in inputs if isinstance(t, Tensor)]
        if all(self.labels.get(id(t)) is None for t in tensors):
            return None  # made from parameters and constants only: not an activation
        if out.ndim < 2:
            return self._unknown(out, tensors, f"{fn.__name__} to fewer than 2 axes")
        x = inputs[0]
        if fn in _CHANNELWISE and out.shape[1] == x.shape[1]:
            return self.labels[id(x)]
        if fn in _BINARY:
            return self._binary(out, fn, tensors)
        if fn is shape.Concatenate:
            return self._concatenate(out, ctx.axis, tensors)
        if fn is shape.Pad:
            (lo, hi) = inputs[1][1]
            return np.concatenate([self.uf.new(lo, "zero padding of channels"), self.labels[id(x)],
                                   self.uf.new(hi, "zero padding of channels")])
        if fn is shape.GetItem and _keeps_channels(inputs[1], x.ndim):
            return self.labels[id(x)]
        if fn is shape.Permute and tuple(inputs[1][:2]) == (0, 1):
            return self.labels[id(x)]
        if fn is shape.Reshape:
            return self._reshape(out, x, tensors)
        if fn in _REDUCTIONS and 0 not in inputs[1] and 1 not in inputs[1]:
            return self.labels[id(x)]
        return self._unknown(out, tensors, f"op {fn.__name__}")

    def _binary(self, out, fn, tensors):
        c, result = out.shape[1], None
        for t in tensors:
            axis = 1 - (out.ndim - t.ndim)  # t's axis aligned with the output's channel axis
            if axis < 0 or t.shape[axis] == 1:
                continue  # broadcast along the channels: joins nothing
            labels = self.labels.get(id(t))
            if labels is None or t.ndim != out.ndim:
                return self._unknown(out, tensors, f"{fn.__name__} with a per-channel constant or parameter")
            if result is None:
                result = labels
            else:
                self.uf.join(result, labels)
        return result if result is not None else self.uf.new(c, f"{fn.__name__} of broadcast operands")

    def _concatenate(self, out, axis, tensors):
        parts = [self._labels_of(t, "a constant in a concatenation") for t in tensors]
        if axis == 1:
            return np.concatenate(parts)
        for p in parts[1:]:
            self.uf.join(parts[0], p)
        return parts[0]

    def _reshape(self, out, x, tensors):
        labels = self.labels[id(x)]
        if x.ndim >= 2 and out.shape[:2] == x.shape[:2]:
            return labels
        for k in range(2, x.ndim + 1):  # merge axes 1 .. k-1 into one: (N, C, H, W) -> (N, C·H·W)
            if (out.shape[0] == x.shape[0] and out.shape[1] == int(np.prod(x.shape[1:k]))
                    and out.shape[2:] == x.shape[k:]):
                return np.repeat(labels, int(np.prod(x.shape[2:k])))  # feature f came from channel f // (H·W)
        return self._unknown(out, tensors, "a reshape that splits or moves the channel axis")

    def _labels_of(self, t, reason):
        labels = self.labels.get(id(t)) if isinstance(t, Tensor) else None
        if labels is None and isinstance(t, Tensor) and t.ndim >= 2:
            labels = self.uf.new(t.shape[1], reason)
        return labels

    def _unknown(self, out, tensors, reason):
        self._fix_all(tensors, reason)
        return self.uf.new(out.shape[1], reason) if out.ndim >= 2 else None

    def _fix_all(self, tensors, reason):
        for t in tensors:
            labels = self.labels.get(id(t))
            if labels is not None:
                self.uf.fix(labels, reason)


def _keeps_channels(index, ndim):
    """A basic index (slices only) that takes axes 0 and 1 whole-or-sliced on axis 0 and whole on axis 1."""
    parts = index if isinstance(index, tuple) else (index,)
    if not all(isinstance(p, slice) for p in parts) or ndim < 2:
        return False
    return len(parts) < 2 or parts[1] == slice(None)
