"""Channel dependencies for structured pruning, found by tracing one forward pass.

``trace_channels(model)`` runs the model once, in eval mode, on a zero image that requires a gradient,
so that every op records its node on its output (``Tensor._node = (Function class, ctx, inputs)``);
the forwards of the Conv2d, Linear, BatchNorm and Shift layers are wrapped meanwhile to learn which
node each layer made. Walking the graph from the input (``channel_walk``, which holds the table of
rules per op), the channel axis (axis 1) of every tensor gets a vector of labels, one per channel.

Labels that are joined form one *channel class* (union-find, ``channel_graph``): the slots of every
layer that hold that channel, removed together or not at all. A class is *fixed* (never removed)
when it holds the model input's channels (the first conv's input), the model output's (the
classifier's outputs), padded channels, a channel combined with a constant or a parameter of no
traced layer, or any channel an op outside the rules touches (other grouped convs, slicing or
indexing the channel axis, reductions over it, matmul, ...): unknown ops cost pruning freedom, never
correctness. A class is *prunable* when it is not fixed and holds at least one filter (a Conv2d /
Linear output).

Option-A shortcuts (``PadShortcut``: subsample, then zero channels before and after): the channels
passing through are prunable, joined with the channels they are added to, so the stages they link
form one group; the zero channels are fixed, because the module pads a fixed number of channels
(``extra``) split evenly, and that split would no longer line up once some were removed.

A *group* is the set of classes linked by a common filter layer (every output channel of a layer is
in its group): a residual stage with all its adds, one DenseNet conv with every later layer that
reads it, a MobileNetV2 expansion with its depthwise conv, a ShiftResNet expansion with its
BatchNorm and Shift. Pruning applies a ratio per group.

Layers must be the float nn layers (``type`` exactly Conv2d, Linear, BatchNorm1d/2d, Shift):
compressed layers are refused (prune the float model, then convert). Layers not reached by the
traced forward are left as they are.
"""
from collections import OrderedDict
from contextlib import contextmanager

import numpy as np

from .. import autograd
from ..tensor import Tensor
from .channel_walk import LAYER_TYPES, ChannelWalk


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
    return ChannelWalk(names, calls).run(x, outputs, input_shape)


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
            raise ValueError(f"structured pruning works on float layers (Conv2d, Linear, BatchNorm, Shift): "
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
