"""What ``dependency.trace_channels`` finds: channel labels joined into classes, and the classes
grouped for pruning.

``ChannelLabels`` is the union-find the walk (``channel_walk``) fills: every channel slot of a
traced tensor or layer gets a label, labels that must be removed together are joined, and a class's
root carries the reason it is fixed (None if not). ``ChannelGraph.from_labels`` numbers the classes
(in order of first appearance in module order) and forms the groups: the classes linked by a common
filter layer (a Conv2d / Linear output), pruned under one ratio.
"""
from collections import OrderedDict

import numpy as np


class ChannelLabels:
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
    """One traced layer. ``kind``: "conv" / "linear" (in and out slots), "depthwise" / "batchnorm" /
    "shift" (one slot per channel: ``in_classes`` is ``out_classes``), "fixed" (a grouped conv or a
    Linear on more than 2 axes: every channel fixed). ``in_classes`` / ``out_classes``: the class of
    each input / output channel. ``calls``: per call, the MACs per (input channel / groups) x output
    channel (none for BatchNorm and Shift)."""

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

    @classmethod
    def from_labels(cls, layers, labels, input_shape):
        """The graph of ``layers`` (name -> LayerChannels with their slots) whose labels ``labels``
        (a ChannelLabels) joined: the slots become class ids, the classes are grouped."""
        roots = np.array([labels.find(i) for i in range(len(labels.parent))], dtype=np.int64)
        # classes numbered in order of first appearance in module order: stable and readable
        seen = OrderedDict()
        for layer in layers.values():
            for slots in (layer.in_slots, layer.out_slots):
                for r in roots[slots].tolist():
                    seen.setdefault(r, len(seen))
        number = np.full(len(roots), -1, np.int64)  # root label -> class id
        number[list(seen)] = list(seen.values())
        class_of = number[roots]
        fixed_reason = [labels.reason[r] for r in seen]
        filters = [[] for _ in seen]
        for layer in layers.values():
            layer.in_classes, layer.out_classes = class_of[layer.in_slots], class_of[layer.out_slots]
            if layer.kind in ("conv", "linear"):
                for j, k in enumerate(layer.out_classes.tolist()):
                    filters[k].append((layer.name, j))
        return cls(layers, _groups(layers, filters, fixed_reason), fixed_reason, filters, input_shape)

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


def _groups(layers, filters, fixed_reason):
    """Classes linked by a common filter layer, as ChannelGroups in module order."""
    producers = [n for n, layer in layers.items() if layer.kind in ("conv", "linear")]
    owner = {n: i for i, n in enumerate(producers)}
    linked = ChannelLabels()  # here a label per filter layer
    linked.new(len(producers))
    for f in filters:  # every filter layer holding one class belongs to one group
        owners = np.array([owner[name] for name, _ in f], np.int64)
        linked.join(owners[:-1], owners[1:])
    groups = OrderedDict()
    for n in producers:
        groups.setdefault(linked.find(owner[n]), []).append(n)
    out = []
    for names in groups.values():
        classes = list(OrderedDict.fromkeys(k for n in names for k in layers[n].out_classes.tolist()))
        prunable = np.array([fixed_reason[k] is None for k in classes], bool)
        out.append(ChannelGroup(len(out), names, np.array(classes, np.int64), prunable))
    return out
