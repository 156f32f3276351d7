"""Structured pruning with thinning: rank filters, remove the weakest, and cut them out for real.

    model = filter_prune(models.get("resnet20"), ratio=0.5)           # half the filters of every group
    model = filter_prune(models.get("resnet20"), target_macs=0.5)     # at most half the MACs
    record = model.channel_counts                                     # JSON: what a checkpoint needs
    fresh = thin_to_shapes(models.get("resnet20"), record)            # the same shapes, to load into
    fresh.load_state_dict(model.state_dict())

Ranking (docs/methods.md, "Pruning"), per channel class of ``dependency.trace_channels`` (the slots
of every layer that hold one channel, removed together):
    "l1"   the sum over the class's filters (Conv2d / Linear output rows) of ||W_j||_1   (Li et al. 2017)
    "l2"   the same with ||W_j||_2
    "bn"   the sum over the class's BatchNorm channels of |gamma_i|   (network slimming); every group
           with prunable channels must hold a BatchNorm
Within each group the ``floor(ratio · n)`` prunable classes of lowest score are removed (n: the
group's prunable classes; ties go to the lower channel index), and at least one channel stays in
every layer. ``target_macs``: the smallest ratio r, the same for every group, whose pruned model
needs at most ``target_macs`` times the model's MACs (the summary's count), found by bisection over
the ratios k / n where some group's count changes (the MACs do not increase with r).

Thinning replaces each affected layer by a smaller one of the same type (Conv2d, Linear,
BatchNorm1d/2d, Shift) holding the kept rows and columns (weights, biases, running statistics, in the
original order); a depthwise conv keeps groups = channels, and a Shift the offsets its kept channels
had (``nn.Shift.keeping``: ShiftNet's assignment for the original channel count at the kept indices,
so the record alone rebuilds it). The result computes exactly what the original computes with the
removed channels cut out: every filter, its BatchNorm entries (bias and running statistics
included) and the matching input channels of every layer reading it. A thinned model is a plain
model: its state dict, summary and training work as for any other; parameters are new objects, so
build the optimizer after pruning.

``model.channel_counts`` (JSON-serialisable) records, per changed layer, its type, its channel
counts before the first pruning and now, and the kept input / output channels as indices into the
original layer (pruning a thinned model again composes them), plus the input shape and a history of
the prunings. ``thin_to_shapes(fresh_model, record)`` resizes a freshly built model to those shapes.
Every function checks the thinned model with one forward pass and leaves the model unchanged when it
raises.
"""
import copy
import math

import numpy as np
from tinycomp_kernels.checks import is_int, is_real

from .. import nn
from ..autograd import no_grad
from ..random import generator
from ..tensor import Tensor
from .dependency import LAYER_TYPES, trace_channels

CRITERIA = ("l1", "l2", "bn")
FORMAT = "tinycomp-channels-1"


def filter_prune(model, ratio=None, criterion="l1", target_macs=None, input_shape=(3, 32, 32)):
    """Remove ``ratio`` (in [0, 1); 0.5 when neither ratio nor target_macs is given) of the prunable
    filters of every group, ranked by ``criterion``, or the least uniform ratio that brings the MACs
    to at most ``target_macs`` (in (0, 1]) of the model's. Thins ``model`` in place and returns it."""
    if ratio is not None and target_macs is not None:
        raise ValueError("filter_prune: give ratio or target_macs, not both (target_macs finds the ratio)")
    if ratio is None and target_macs is None:
        ratio = 0.5
    if ratio is not None and not (is_real(ratio) and 0 <= ratio < 1):
        raise ValueError(f"filter_prune: ratio must be in [0, 1), got {ratio!r}")
    if target_macs is not None and not (is_real(target_macs) and 0 < target_macs <= 1):
        raise ValueError(f"filter_prune: target_macs must be in (0, 1] (a fraction of the model's MACs), "
                         f"got {target_macs!r}")
    if criterion not in CRITERIA:
        raise ValueError(f"filter_prune: criterion must be one of {', '.join(CRITERIA)}, got {criterion!r}")
    graph = trace_channels(model, input_shape)
    scores = channel_scores(graph, criterion)
    if target_macs is not None:
        ratio = ratio_for_macs(graph, scores, target_macs)
    removed = filters_to_remove(graph, scores, ratio)
    entry = {"criterion": criterion, "ratio": float(ratio),
             "target_macs": None if target_macs is None else float(target_macs)}
    return _thin(model, graph, removed, entry)


def thin(model, channels, input_shape=(3, 32, 32)):
    """Remove the output channels ``channels`` ({layer name: channel indices}) of the named layers
    and every channel that must go with them; in place, returns ``model``. A fixed channel (the
    model's input or output, zero padding, ...) is refused, naming why."""
    graph = trace_channels(model, input_shape)
    if not isinstance(channels, dict):
        raise TypeError(f"thin: channels must be a dict {{layer name: [channel indices]}}, got {type(channels).__name__}")
    removed, prunable = np.zeros(graph.n_classes, bool), graph.prunable()
    for name, indices in channels.items():
        if name not in graph.layers:
            raise ValueError(f"thin: {name!r} is not a Conv2d, Linear, BatchNorm or Shift layer reached by the "
                             f"forward pass")
        out_classes = graph.layers[name].out_classes
        for j in np.atleast_1d(np.asarray(indices)).tolist():
            if not is_int(j) or not 0 <= j < len(out_classes):
                raise ValueError(f"thin: {name} has {len(out_classes)} output channels; {j!r} is not one of them")
            k = out_classes[j]
            if not prunable[k]:
                reason = graph.fixed_reason[k] or "no Conv2d or Linear computes it"
                raise ValueError(f"thin: channel {j} of {name} cannot be removed: it is fixed ({reason})")
            removed[k] = True
    return _thin(model, graph, removed, {"channels": int(removed.sum())})


def thin_to_shapes(model, record):
    """Resize a freshly built ``model`` (float, unpruned) in place to the shapes ``record`` (a
    ``channel_counts``) holds, keeping the recorded channels of its current weights; returns it.
    Load the pruned model's state dict into it afterwards."""
    if getattr(model, "channel_counts", None):
        raise ValueError(f"thin_to_shapes: {type(model).__name__} is already thinned; build a fresh model")
    problems, plan = _check_record(model, record)
    if problems:
        more = f"; ... and {len(problems) - 5} more" if len(problems) > 5 else ""
        raise ValueError(f"thin_to_shapes into {type(model).__name__}: {len(problems)} problems: "
                         + "; ".join(problems[:5]) + more)
    _resize(model, plan, tuple(record["input_shape"]))
    model.channel_counts = copy.deepcopy(record)
    return model


# --- ranking and selection ----------------------------------------------------------------------
def channel_scores(graph, criterion="l1"):
    """Importance of every channel class of ``graph`` (see the module docstring), float64."""
    if criterion not in CRITERIA:
        raise ValueError(f"channel_scores: criterion must be one of {', '.join(CRITERIA)}, got {criterion!r}")
    scores = np.zeros(graph.n_classes)
    has_bn = np.zeros(graph.n_classes, bool)
    for layer in graph.layers.values():
        if criterion in ("l1", "l2") and layer.kind in ("conv", "linear"):
            w = layer.module.weight.data.astype(np.float64)
            w = w.reshape(w.shape[0], -1)  # (O, C·KH·KW): one row per filter
            norms = np.abs(w).sum(axis=1) if criterion == "l1" else np.sqrt((w * w).sum(axis=1))
            np.add.at(scores, layer.out_classes, norms)
        elif criterion == "bn" and layer.kind == "batchnorm" and layer.module.weight is not None:
            np.add.at(scores, layer.out_classes, np.abs(layer.module.weight.data.astype(np.float64)))
            has_bn[layer.out_classes] = True
    if criterion == "bn":
        for g in graph.groups:
            if g.n_prunable and not has_bn[g.classes[g.prunable]].all():
                raise ValueError(f"criterion 'bn': the channels of {', '.join(g.layers)} pass no BatchNorm with a "
                                 f"scale; use 'l1' or 'l2'")
    return scores


def filters_to_remove(graph, scores, ratio):
    """A bool per class: the floor(ratio · n) lowest-scored prunable classes of every group (at least
    one channel left in every layer)."""
    removed = np.zeros(graph.n_classes, bool)
    for g in graph.groups:
        candidates = g.classes[g.prunable]
        n = len(candidates)
        if n:
            count = min(int(math.floor(ratio * n + 1e-9)), n - 1)  # 1e-9: 0.29 · 100 must give 29
            removed[candidates[np.argsort(scores[candidates], kind="stable")[:count]]] = True
    for layer in graph.layers.values():  # a layer emptied by a group it shares with others keeps its best
        if layer.kind in ("conv", "linear") and removed[layer.out_classes].all():
            removed[layer.out_classes[np.argmax(scores[layer.out_classes])]] = False
    return removed


def ratio_for_macs(graph, scores, target_macs):
    """The least ratio whose removal leaves at most ``target_macs`` of the MACs. Removal counts only
    change where ratio · n reaches an integer k, so the search runs over those ratios k / n (binary
    search: the MACs do not increase with the ratio) and returns one of them."""
    total = graph.macs()
    goal = target_macs * total
    ratios = sorted({k / g.n_prunable for g in graph.groups for k in range(g.n_prunable)} | {0.0})
    macs = {}

    def fits(i):
        macs[i] = graph.macs(filters_to_remove(graph, scores, ratios[i]))
        return macs[i] <= goal

    if not fits(len(ratios) - 1):
        raise ValueError(f"target_macs {target_macs:g} cannot be reached: with one channel left in every group the "
                         f"model keeps {macs[len(ratios) - 1] / total:.3f} of its MACs")
    lo, hi = -1, len(ratios) - 1  # ratios[hi] fits; ratios[lo] does not (or lo = -1)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if fits(mid) else (mid, hi)
    return ratios[hi]


# --- cutting the layers -------------------------------------------------------------------------
def _thin(model, graph, removed, entry):
    """Cut the classes in ``removed`` out of ``model`` and record it in ``model.channel_counts``."""
    plan = {}
    for name, layer in graph.layers.items():
        kept_in, kept_out = np.flatnonzero(~removed[layer.in_classes]), np.flatnonzero(~removed[layer.out_classes])
        if len(kept_in) == len(layer.in_classes) and len(kept_out) == len(layer.out_classes):
            continue
        if not len(kept_in) or not len(kept_out):
            raise ValueError(f"thinning would leave {name} without channels")
        plan[name] = (kept_in, kept_out)
    entry = dict(entry, macs_before=int(graph.macs()), macs_after=int(graph.macs(removed)))
    record = _compose(model, plan, entry, graph.input_shape)
    _resize(model, plan, graph.input_shape)
    model.channel_counts = record
    return model


def in_out_channels(module):
    """(input channels, output channels) of a Conv2d, Linear, BatchNorm or Shift."""
    if isinstance(module, nn.Conv2d):
        return module.in_channels, module.out_channels
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    if isinstance(module, nn.Shift):
        return module.channels, module.channels
    return module.num_features, module.num_features


def _compose(model, plan, entry, input_shape):
    """The new channel_counts: this pruning's kept indices composed with an earlier record's."""
    old = getattr(model, "channel_counts", None) or {"layers": {}, "history": []}
    layers = copy.deepcopy(old["layers"])
    for name, (kept_in, kept_out) in plan.items():
        module = model.get_submodule(name)
        prev = layers.get(name)
        n_in, n_out = in_out_channels(module)
        base_in = prev["kept_in"] if prev else list(range(n_in))
        base_out = prev["kept_out"] if prev else list(range(n_out))
        layers[name] = {"type": type(module).__name__, "in": len(kept_in), "out": len(kept_out),
                        "original_in": prev["original_in"] if prev else n_in,
                        "original_out": prev["original_out"] if prev else n_out,
                        "kept_in": [base_in[i] for i in kept_in.tolist()],
                        "kept_out": [base_out[j] for j in kept_out.tolist()]}
    return {"format": FORMAT, "input_shape": [int(v) for v in input_shape], "layers": layers,
            "history": old["history"] + [entry]}


def _resize(model, plan, input_shape):
    """Replace each layer named in ``plan`` ({name: (kept_in, kept_out)}, indices into its current
    channels) by its thinned copy, then run one forward pass; on any failure put the old layers back."""
    paths = {}
    for path, m in model.named_modules():
        paths.setdefault(id(m), []).append(path)
    state = generator().bit_generator.state  # building layers draws an init: keep the seeded stream as it was
    try:
        new = {name: _thinned(model.get_submodule(name), *plan[name]) for name in plan}
    finally:
        generator().bit_generator.state = state
    old = {}
    for name, layer in new.items():
        module = model.get_submodule(name)
        for path in paths[id(module)]:
            old[path] = module
            model.set_submodule(path, layer)
    try:
        _check_forward(model, input_shape)
    except (ValueError, TypeError, IndexError) as exc:
        for path, module in old.items():
            model.set_submodule(path, module)
        raise ValueError(f"the thinned {type(model).__name__} does not run ({exc}); it is left unchanged") from None


@no_grad()
def _check_forward(model, input_shape):
    dtype = next((p.dtype for p in model.parameters()), np.float32)
    was_training = model.training
    model.eval()
    try:
        model(Tensor(np.zeros((1,) + tuple(input_shape), dtype)))
    finally:
        model.train(was_training)


def _thinned(module, kept_in, kept_out):
    """A new layer like ``module`` with only the input channels ``kept_in`` and outputs ``kept_out``."""
    kept_in, kept_out = np.asarray(kept_in, np.int64), np.asarray(kept_out, np.int64)
    if isinstance(module, nn.Shift):  # no weights: the kept channels' offsets, read off the original assignment
        new = nn.Shift.keeping(module.assignment, module.kept[kept_out], module.kernel_size, module.dilation)
        new.train(module.training)
        return new
    w = module.weight
    dtype = (w if w is not None else module.running_mean).dtype
    if isinstance(module, nn.Conv2d):
        depthwise = module.groups > 1  # only groups 1 and depthwise convs (groups = C = O) have prunable channels
        new = nn.Conv2d(len(kept_in), len(kept_out), module.kernel_size, module.stride, module.padding,
                        module.dilation, len(kept_out) if depthwise else 1, module.bias is not None, dtype)
        weight = w.data[kept_out] if depthwise else w.data[kept_out][:, kept_in]  # (O', C'/groups, KH, KW)
    elif isinstance(module, nn.Linear):
        new = nn.Linear(len(kept_in), len(kept_out), module.bias is not None, dtype)
        weight = w.data[kept_out][:, kept_in]  # (out', in')
    else:
        new = type(module)(len(kept_out), module.eps, module.momentum, module.affine, dtype)
        weight = None if w is None else w.data[kept_out]
        new.running_mean[...] = module.running_mean[kept_out]
        new.running_var[...] = module.running_var[kept_out]
        new.num_batches_tracked[...] = module.num_batches_tracked
    if weight is not None:
        new.weight.data[...] = weight
        new.weight.requires_grad = w.requires_grad
    if module.bias is not None:
        new.bias.data[...] = module.bias.data[kept_out]
        new.bias.requires_grad = module.bias.requires_grad
    new.train(module.training)
    return new


def _check_record(model, record):
    """The problems of ``record`` against ``model`` and, when none, the plan it gives."""
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        got = record.get("format") if isinstance(record, dict) else type(record).__name__
        return [f"not a channel_counts record (format {got!r}, expected {FORMAT!r})"], {}
    shape, layers = record.get("input_shape"), record.get("layers")
    problems = []
    if not (isinstance(shape, list) and shape and all(is_int(v) and v > 0 for v in shape)):
        problems.append(f"input_shape {shape!r} is not a list of positive ints")
    if not isinstance(layers, dict):
        return problems + [f"layers is a {type(layers).__name__}, not a dict"], {}
    plan = {}
    for name, e in layers.items():
        try:
            module = model.get_submodule(name)
        except AttributeError:
            problems.append(f"{name}: no such layer in the model")
            continue
        if not isinstance(e, dict) or not {"type", "in", "out", "original_in", "original_out", "kept_in",
                                           "kept_out"} <= set(e):
            problems.append(f"{name}: malformed entry")
            continue
        if type(module) not in LAYER_TYPES or type(module).__name__ != e["type"]:
            problems.append(f"{name}: a {type(module).__name__} in the model, a {e['type']} in the record")
            continue
        counts = in_out_channels(module)
        if counts != (e["original_in"], e["original_out"]):
            problems.append(f"{name}: {counts} channels (in, out) in the model, the record was pruned from "
                            f"{(e['original_in'], e['original_out'])}")
            continue
        bad = [side for side, kept, n, count in (("in", e["kept_in"], e["original_in"], e["in"]),
                                                 ("out", e["kept_out"], e["original_out"], e["out"]))
               if not _indices_ok(kept, n, count)]
        groups = getattr(module, "groups", 1)
        if groups > 1 and not groups == module.in_channels == module.out_channels:
            problems.append(f"{name}: a grouped convolution (groups={groups}) has no prunable channels")
            continue
        same = isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d, nn.Shift)) or groups > 1  # one channel axis
        if bad or (same and e["kept_in"] != e["kept_out"]):
            problems.append(f"{name}: kept_{'/'.join(bad) or 'in differs from kept_out'} not valid")
            continue
        plan[name] = (e["kept_in"], e["kept_out"])
    return problems, plan


def _indices_ok(kept, n, count):
    return (isinstance(kept, list) and len(kept) == count > 0 and all(is_int(i) and 0 <= i < n for i in kept)
            and all(a < b for a, b in zip(kept, kept[1:])))
