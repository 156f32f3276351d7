"""Channel dependencies for structured pruning, found by tracing one forward pass.

``trace_channels(model)`` runs the model once, in eval mode, on a zero image that requires a gradient,
so that every op records its node on its output (``Tensor._node = (Function class, ctx, inputs)``);
the forwards of the Conv2d, Linear and BatchNorm layers are wrapped meanwhile to learn which node
each layer made. Walking the graph from the input, the channel axis (axis 1) of every tensor gets a
vector of labels, one per channel, and the op that made the tensor decides them:

    Conv2d (groups 1), Linear on (N, F)   its input channels join the labels that come in; its output
                                          channels (its filters) get labels of their own
    depthwise Conv2d (groups = C = O),    channel c out is channel c in: the layer's channel c joins it
    BatchNorm1d / BatchNorm2d
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
    pad along axis 1                      the padded channels get fixed labels (see below)

Labels that are joined form one *channel class* (union-find): the slots of every layer that hold
that channel, removed together or not at all. A class is *fixed* (never removed) when it holds the
model input's channels (the first conv's input), the model output's (the classifier's outputs),
padded channels, a channel combined with a constant or a parameter of no traced layer, or any
channel an op outside the list above touches (other grouped convs, slicing or indexing the channel
axis, reductions over it, matmul, ...): unknown ops cost pruning freedom, never correctness.
A class is *prunable* when it is not fixed and holds at least one filter (a Conv2d / Linear output).

Option-A shortcuts (``PadShortcut``: subsample, then zero channels before and after): the channels
passing through are prunable, joined with the channels they are added to, so the stages they link
form one group; the zero channels are fixed, because the module pads a fixed number of channels
(``extra``) split evenly, and that split would no longer line up once some were removed.

A *group* is the set of classes linked by a common filter layer (every output channel of a layer is
in its group): a residual stage with all its adds, one DenseNet conv with every later layer that
reads it, a MobileNetV2 expansion with its depthwise conv. Pruning applies a ratio per group.

Layers must be the float nn layers (``type`` exactly Conv2d, Linear, BatchNorm1d/2d): compressed
layers are refused (prune the float model, then convert). Layers not reached by the traced forward
are left as they are.
"""
from collections import OrderedDict
from contextlib import contextmanager

import numpy as np

from .. import autograd, nn
from ..functional import activation, elementwise, pooling, reduction, shape
from ..functional.dropout import Dropout  # the package's name `dropout` is the function
from ..tensor import Tensor

LAYER_TYPES = (nn.Conv2d, nn.Linear, nn.BatchNorm2d, nn.BatchNorm1d)

# ops that act on each channel alone: the output's channel c is the input's channel c
_CHANNELWISE = (activation.ReLU, activation.LeakyReLU, activation.Sigmoid, activation.Tanh, activation.Hardtanh,
                Dropout, elementwise.Neg, elementwise.Pow, elementwise.Exp, elementwise.Log, elementwise.Cast,
                pooling.MaxPool2d, pooling.AvgPool2d, pooling.AdaptiveAvgPool2d)
_BINARY = (elementwise.Add, elementwise.Sub, elementwise.Mul, elementwise.Div)
_REDUCTIONS = (reduction.Sum, reduction.Mean, reduction.Max)


class _Labels:
    """Union-find over channel labels; a root carries the reason its class is fixed (None if not)."""

    def __init__(self):
        self.parent, self.reason = [], []

    def new(self, n, reason=None):
        start = len(self.parent)
        self.parent.extend(range(start, start + n))
        self.reason.extend([reason] * n)
        return np.arange(start, start + n)

    def find(self, i):
        parent = self.parent
        while parent[i] != i:
            parent[i] = parent[parent[i]]  # path halving keeps the trees flat
            i = parent[i]
        return i

    def join(self, a, b):
        for i, j in zip(a.tolist(), b.tolist()):
            ri, rj = self.find(i), self.find(j)
            if ri != rj:
                self.parent[rj] = ri
                self.reason[ri] = self.reason[ri] or self.reason[rj]

    def fix(self, labels, reason):
        for i in labels.tolist():
            r = self.find(i)
            self.reason[r] = self.reason[r] or reason


class LayerChannels:
    """One traced layer. ``kind``: "conv" / "linear" (in and out slots), "depthwise" / "batchnorm"
    (one slot per channel: ``in_classes`` is ``out_classes``), "fixed" (a grouped conv or a Linear on
    more than 2 axes: every channel fixed). ``in_classes`` / ``out_classes``: the class of each input
    / output channel. ``calls``: per call, the MACs per (input channel / groups) x output channel."""

    def __init__(self, name, module, kind):
        self.name, self.module, self.kind = name, module, kind
        self.in_slots = self.out_slots = None
        self.in_classes = self.out_classes = None
        self.calls = []

    def macs(self, n_in, n_out):
        """MACs per image of all this layer's calls with ``n_in`` input and ``n_out`` output channels."""
        groups = n_in if self.kind == "depthwise" else getattr(self.module, "groups", 1)
        return sum(c * n_out * (n_in // groups) for c in self.calls)

    def __repr__(self):
        return f"LayerChannels({self.name!r}, {self.kind}, in={len(self.in_classes)}, out={len(self.out_classes)})"


class ChannelGroup:
    """Classes pruned together under one ratio: ``layers`` the filter layers whose output channels
    they are, ``classes`` the class ids (ordered by layer, then channel), ``prunable`` a bool per class."""

    def __init__(self, index, layers, classes, prunable):
        self.index, self.layers, self.classes, self.prunable = index, layers, classes, prunable

    @property
    def n_prunable(self):
        return int(self.prunable.sum())

    def __repr__(self):
        return (f"ChannelGroup({self.index}: {len(self.classes)} channels, {self.n_prunable} prunable; "
                f"filters of {', '.join(self.layers)})")


class ChannelGraph:
    """What ``trace_channels`` found: ``layers`` (name -> LayerChannels, in module order), ``groups``,
    ``fixed_reason`` (per class: why it is fixed, or None), ``input_shape``."""

    def __init__(self, layers, groups, fixed_reason, filters, input_shape):
        self.layers, self.groups, self.fixed_reason = layers, groups, fixed_reason
        self.filters = filters  # per class: [(layer name, output channel)]
        self.input_shape = tuple(input_shape)

    @property
    def n_classes(self):
        return len(self.fixed_reason)

    def prunable(self):
        """A bool per class: not fixed and holding a filter."""
        return np.array([r is None and bool(f) for r, f in zip(self.fixed_reason, self.filters)], bool)

    def macs(self, removed=None):
        """MACs per image of the traced Conv2d and Linear calls once the classes in ``removed`` (a bool
        per class) are cut out; the model's own MACs without ``removed``."""
        removed = np.zeros(self.n_classes, bool) if removed is None else removed
        total = 0
        for layer in self.layers.values():
            if layer.calls:
                total += layer.macs(int((~removed[layer.in_classes]).sum()), int((~removed[layer.out_classes]).sum()))
        return total

    def describe(self):
        return "\n".join(map(repr, self.groups))


def trace_channels(model, input_shape=(3, 32, 32)):
    """Trace ``model`` on one zero input of ``input_shape`` (C, H, W) and return its ChannelGraph."""
    names = _layer_names(model)
    calls = {}  # id(output tensor) -> layer name, for the wrapped layers' outputs
    kept = []  # the outputs themselves: their ids must stay unique while the graph is walked

    def wrap(name, module):
        original = module.forward

        def traced(x, *args, **kwargs):
            out = original(x, *args, **kwargs)
            calls[id(out)] = name
            kept.append(out)
            return out

        module.__dict__["forward"] = traced  # an instance attribute shadows the class's forward

    for name, m in names.items():
        wrap(name, m)
    dtype = next((p.dtype for p in model.parameters()), np.float32)
    x = Tensor(np.zeros((1,) + tuple(input_shape), dtype), requires_grad=True)
    was_training = model.training
    model.eval()
    try:
        with _recording():
            out = model(x)
    finally:
        for m in names.values():
            m.__dict__.pop("forward", None)
        model.train(was_training)
    outputs = _tensors(out)
    if not outputs:
        raise ValueError(f"trace_channels: {type(model).__name__}'s forward returned no Tensor")
    return _Walk(names, calls).run(x, outputs, input_shape)


@contextmanager
def _recording():
    """Record the graph even inside a caller's no_grad (the trace needs the nodes, not gradients)."""
    previous = autograd._grad_enabled
    autograd._grad_enabled = True
    try:
        yield
    finally:
        autograd._grad_enabled = previous


def _layer_names(model):
    """name -> module for every float layer; a layer at two paths keeps its first name."""
    names, seen = OrderedDict(), set()
    for name, m in model.named_modules():
        if isinstance(m, LAYER_TYPES) and type(m) not in LAYER_TYPES or hasattr(m, "summary_param_bits"):
            raise ValueError(f"structured pruning works on float layers (Conv2d, Linear, BatchNorm): "
                             f"{name or type(model).__name__} is a {type(m).__name__}; prune the float model, "
                             f"then convert it")
        if type(m) in LAYER_TYPES and id(m) not in seen:
            seen.add(id(m))
            names[name] = m
    return names


def _tensors(out):
    if isinstance(out, Tensor):
        return [out]
    if isinstance(out, dict):
        out = list(out.values())
    return [t for t in out if isinstance(t, Tensor)] if isinstance(out, (tuple, list)) else []


class _Walk:
    """One pass over the traced graph giving every tensor its channel labels (see the module docstring)."""

    def __init__(self, modules, calls):
        self.modules, self.calls = modules, calls
        self.uf = _Labels()
        self.labels = {}  # id(tensor) -> label array along axis 1, or None (a constant or parameter)
        self.layers = OrderedDict((name, None) for name in modules)

    def run(self, x, outputs, input_shape):
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
        return self._graph(input_shape)

    # --- the traced layers ----------------------------------------------------------------------
    def _layer(self, name, out):
        module = self.modules[name]
        inputs = out._node[2]
        x = inputs[0]  # the layer's one op: conv2d / linear / batch_norm of its input
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
        else:
            kind, n_in, n_out = "batchnorm", module.num_features, module.num_features
        layer = LayerChannels(name, module, kind)
        layer.in_slots = self.uf.new(n_in)
        layer.out_slots = layer.in_slots if kind in ("depthwise", "batchnorm") else self.uf.new(n_out)
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

    # --- classes and groups ---------------------------------------------------------------------
    def _graph(self, input_shape):
        layers = OrderedDict((n, layer) for n, layer in self.layers.items() if layer is not None)
        roots = np.array([self.uf.find(i) for i in range(len(self.uf.parent))], dtype=np.int64)
        # classes numbered in order of first appearance in module order: stable and readable
        seen = OrderedDict()
        for layer in layers.values():
            for slots in (layer.in_slots, layer.out_slots):
                for r in roots[slots].tolist():
                    seen.setdefault(r, len(seen))
        number = np.full(len(roots), -1, np.int64)  # root label -> class id
        number[list(seen)] = list(seen.values())
        class_of = number[roots]
        fixed_reason = [self.uf.reason[r] for r in seen]
        filters = [[] for _ in seen]
        for layer in layers.values():
            layer.in_classes, layer.out_classes = class_of[layer.in_slots], class_of[layer.out_slots]
            if layer.kind in ("conv", "linear"):
                for j, k in enumerate(layer.out_classes.tolist()):
                    filters[k].append((layer.name, j))
        return ChannelGraph(layers, _groups(layers, filters, fixed_reason), fixed_reason, filters, input_shape)


def _groups(layers, filters, fixed_reason):
    """Classes linked by a common filter layer, as ChannelGroups in module order."""
    producers = [n for n, layer in layers.items() if layer.kind in ("conv", "linear")]
    owner = {n: i for i, n in enumerate(producers)}
    parent = list(range(len(producers)))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for f in filters:  # every filter layer holding one class belongs to one group
        for (a, _), (b, _) in zip(f, f[1:]):
            ra, rb = find(owner[a]), find(owner[b])
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)
    groups = OrderedDict()
    for n in producers:
        groups.setdefault(find(owner[n]), []).append(n)
    out = []
    for names in groups.values():
        classes = list(OrderedDict.fromkeys(k for n in names for k in layers[n].out_classes.tolist()))
        prunable = np.array([fixed_reason[k] is None for k in classes], bool)
        out.append(ChannelGroup(len(out), names, np.array(classes, np.int64), prunable))
    return out


def _keeps_channels(index, ndim):
    """A basic index (slices only) that takes axes 0 and 1 whole-or-sliced on axis 0 and whole on axis 1."""
    parts = index if isinstance(index, tuple) else (index,)
    if not all(isinstance(p, slice) for p in parts) or ndim < 2:
        return False
    return len(parts) < 2 or parts[1] == slice(None)
