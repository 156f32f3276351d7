"""Unstructured magnitude pruning (docs/methods.md, "Pruning"): masked convolutions, reached gradually.

    y = conv2d(x, W ⊙ M) + b          M = ``weight_mask``, 1 = kept, 0 = pruned (uint8, W's shape)

``prune(model, sparsity, scope, start_epoch, end_epoch, every)`` turns every Conv2d but the first (it
sees the image) into a ``PrunedConv2d`` sharing the float layer's Parameters, so the state-dict keys
are the float model's plus one ``<layer>.weight_mask`` buffer per pruned conv: a float checkpoint
loads with only the masks missing (they start all ones), and the masks travel with every checkpoint.
Linear layers (the classifier) are never pruned.

A ``MagnitudePruner`` (``model.pruner``, a plain attribute; the training loop's ``before_step``
reaches it through its first layer) owns the schedule: at each of its update steps, with the AGP
target s_t of that step (``agp.py``), it prunes the round(s_t·n) weights of smallest |W| (halves up,
at most n - 1 so a layer keeps a weight), n counting one layer's weights (``scope="layer"``) or all
pruned layers' together (``scope="global"``: one threshold over raw |W| across layers; a layer can
then lose all its weights). Ties at the threshold go to weights already pruned first, then by
position, so a mask is a pure function of the step, the weights and the previous mask (all in a
checkpoint), and a growing target never revives a pruned weight. After the end step the masks are
fixed (``mask_fixed``), which is when a sparse kernel may take over the forward.

Pruned weights stay exactly 0 through every optimizer step: the forward uses W ⊙ M, so their
gradient is 0 and so is their weight decay (wd·0); a momentum buffer filled before the weight was
pruned still moves it, by a geometrically shrinking amount, and ``after_step`` (run after every
optimizer step) multiplies W by M again. That buffer need not be cleared: the weight is 0 after
every step, and the masks only grow, so it never returns. The mask update also zeros W at once.

A weight quantizer (a recipe of ``tinycomp.compress.recipes``) may act on the masked weight, the
pruned entries staying 0 in the quantized weight too:
    BinaryWeight   M ⊙ α·sign(W), α = mean |W| over each filter's kept weights (or the layer's), with
                   the exact gradient through α (``masked_binarize_weight``)
    SignWeight, DorefaWeight (k >= 2)   M ⊙ q(W ⊙ M): their statistics (none; max |tanh W|) ignore zeros
TernaryWeight, LSQ and 1-bit DoReFa take a mean over all weights, zeros included; a mask-aware form of
each would be needed, so they are refused.
"""
import numbers

import numpy as np

from .. import functional as F
from .. import nn
from .agp import agp_sparsity, check_sparsity, check_steps, epoch_to_step, is_update_step
from .layers import _Quantized
from .quantizers import ste_sign
from .recipes import BinaryWeight, DorefaWeight, Recipe, SignWeight

SCOPES = ("layer", "global")
INDEX_BITS = 32  # CSR's indptr and indices, as stored for the summary (see PrunedConv2d)


class PrunedConv2d(nn.Conv2d):
    """A Conv2d whose weight is multiplied by ``weight_mask`` (see the module docstring).

    Storage (``summary_param_bits``), the weight as CSR over the (O, C/groups·KH·KW) matrix:
        nnz values (32 bits, or the quantizer's bits) + indptr (O + 1)·32 + indices nnz·32,
        plus the quantizer's 32-bit scales (BWN's α per filter) and the bias at 32 bits each.
    MACs (``summary_macs``) as a sparse kernel executes them: nnz·OH·OW per image.
    ``pruner``: the MagnitudePruner that moves the mask (None: nothing does); ``mask_fixed``: True
    once its schedule has ended, and for a layer without one.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, weight_quantizer=None, dtype=np.float32):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, dtype)
        self.register_buffer("weight_mask", np.ones(self.weight.shape, np.uint8))
        self.weight_quantizer = check_weight_quantizer(weight_quantizer)
        self.pruner = None
        self.mask_fixed = True

    @classmethod
    def from_float(cls, conv, weight_quantizer=None):
        """A PrunedConv2d sharing ``conv``'s Parameters (no copy), nothing pruned yet."""
        p = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                conv.groups, conv.bias is not None, weight_quantizer, conv.weight.dtype)
        p.weight, p.bias = conv.weight, conv.bias
        p.train(conv.training)  # the quantizer recipe too
        return p

    @property
    def sparsity(self):
        """The fraction of the weights pruned."""
        return 1.0 - np.count_nonzero(self.weight_mask) / self.weight_mask.size

    def masked_weight(self):
        """W ⊙ M, then the quantizer's form of it (pruned entries 0 in both): the weight the conv uses."""
        mask = self.weight_mask.astype(self.weight.dtype)  # uint8 -> the weight's float dtype
        w = self.weight * mask  # the pruned entries: value 0, gradient 0
        q = self.weight_quantizer
        if q is None:
            return w
        if isinstance(q, BinaryWeight):
            return masked_binarize_weight(w, mask, q.scale, q.scale_grad)
        return q(w) * mask  # sign(0) = +1 and DoReFa's grid hold no 0: mask again

    def forward(self, x):
        if self.uses_sparse_kernels(x.shape):
            y = F.sparse_conv2d(x, self.weight, self.weight_mask, self.stride, self.padding)
            return y if self.bias is None else y + self.bias.reshape(1, -1, 1, 1)
        return F.conv2d(x, self.masked_weight(), self.bias, self.stride, self.padding, self.dilation, self.groups)

    def uses_sparse_kernels(self, x_shape):
        """Whether the forward (and so both gradients) runs on the sparse kernels for an input of
        ``x_shape``: once the mask is fixed (or in evaluation, where it cannot move) and sparse enough
        that they pay (``functional.sparse_training_pays``, from the shapes and the kept count only, so
        a run is reproducible), for a float weight (a quantized one stays on the dense path)."""
        if self.weight_quantizer is not None or not (self.mask_fixed or not self.training):
            return False
        return F.sparse_training_pays(x_shape, self.weight.shape, int(np.count_nonzero(self.weight_mask)),
                                      self.stride, self.padding, dilation=self.dilation, groups=self.groups,
                                      dtype=self.weight.dtype)

    def before_step(self, step, steps_per_epoch, total_steps):
        # The pruner is no module (a Sequential would run a child module as a layer), so the
        # training loop's hook reaches it through its layers: the first one relays it, once a step.
        if self.pruner is not None and self.pruner.layers[0] is self:
            self.pruner.before_step(step, steps_per_epoch, total_steps)

    def after_step(self):
        """After each optimizer step: pruned weights back to exactly 0, then the quantizer's own rule."""
        np.multiply(self.weight.data, self.weight_mask, out=self.weight.data)
        if self.weight_quantizer is not None:
            self.weight_quantizer.after_weight_step(self.weight)

    def set_mask(self, keep):
        """Take ``keep`` (W's shape, nonzero = kept) as the mask, in place, and zero the pruned weights."""
        self.weight_mask[...] = keep != 0
        np.multiply(self.weight.data, self.weight_mask, out=self.weight.data)

    # --- the summary's questions (tinycomp/summary.py) ---------------------------------------------
    def summary_params(self):
        """Kept weights and the bias: the parameters the deployed layer holds."""
        return int(np.count_nonzero(self.weight_mask)) + (0 if self.bias is None else self.bias.data.size)

    def summary_param_bits(self):
        nnz = int(np.count_nonzero(self.weight_mask))
        q = self.weight_quantizer
        bits = nnz * (32 if q is None else q.bits) + INDEX_BITS * (self.out_channels + 1 + nnz)
        if q is not None:
            bits += 32 * q.scale_count(self.weight.shape) + 32 * sum(p.data.size for p in q.parameters())
        if self.bias is not None:
            bits += 32 * self.bias.data.size
        return bits

    def summary_macs(self, out_shape):
        _, _, oh, ow = out_shape
        return int(np.count_nonzero(self.weight_mask)) * oh * ow

    def summary_precision(self):
        return (32 if self.weight_quantizer is None else self.weight_quantizer.bits), 32, "float"

    def extra_repr(self):
        q = self.weight_quantizer
        bits = "" if q is None else f", weight_bits={q.bits}"
        return super().extra_repr() + f", sparsity={self.sparsity:.4f}" + bits


def masked_binarize_weight(w, mask, scale="filter", scale_grad=True):
    """BWN over the kept weights: M ⊙ α·sign(w), α = Σ M·|w| / Σ M per filter (axis 0) or over the
    layer (``scale="layer"``; ``None``: M ⊙ sign(w)), α = 0 for a filter with nothing kept.
    ``w`` is the masked weight W ⊙ M (a Tensor), ``mask`` M as a float array.
    Backward (autograd of this composition, M = 1 everywhere giving BinarizeWeight's):
        dw_i = M_i·α·g_i·1{|w_i| <= 1} + M_i·sign(w_i)/n · Σ_j M_j·g_j·sign(w_j)
    with n = Σ_j M_j over w_i's filter (the layer for "layer"); ``scale_grad=False``: the first term only."""
    s = ste_sign(w, clip=1.0)  # sign(0) = +1; backward g·1{|w| <= 1}
    if scale is None:
        return s * mask
    axes = tuple(range(1, w.ndim)) if scale == "filter" else None
    kept = np.maximum(mask.sum(axis=axes, keepdims=True), 1)  # (O, 1, 1, 1) or (1, 1, 1, 1); 1 avoids 0/0
    alpha = (w * s.data).sum(axis=axes, keepdims=True) / kept  # |w| = w·sign(w): d|w|/dw = sign(w), as BWN's
    if not scale_grad:
        alpha = alpha.detach()
    return alpha * s * mask


def check_weight_quantizer(q):
    """``q`` if a pruned layer can quantize its masked weight with it (see the module docstring)."""
    if q is None:
        return None
    if not isinstance(q, Recipe):
        raise TypeError(f"PrunedConv2d: weight_quantizer must be a recipe (tinycomp.compress.recipes), "
                        f"got {type(q).__name__}")
    if isinstance(q, (BinaryWeight, SignWeight)) or (isinstance(q, DorefaWeight) and q.bits >= 2):
        return q
    raise ValueError(f"PrunedConv2d: {type(q).__name__}{'(1 bit)' if q.bits == 1 else ''} takes statistics over "
                     "all weights, the pruned zeros included; supported with pruning: BinaryWeight (alpha over the "
                     "kept weights), SignWeight, DorefaWeight with 2 to 8 bits")


def smallest_mask(magnitude, previous, k):
    """A uint8 keep-mask (1 kept) of the flat ``magnitude`` with exactly its ``k`` smallest entries pruned.
    Ties at the threshold: entries pruned in ``previous`` first, then by position."""
    keep = np.ones(magnitude.size, np.uint8)
    if k == 0:
        return keep
    threshold = np.partition(magnitude, k - 1)[k - 1]  # the k-th smallest magnitude
    below = magnitude < threshold
    ties = np.flatnonzero(magnitude == threshold)
    ties = ties[np.argsort(previous[ties], kind="stable")]  # previously pruned (0) first, then by index
    keep[below] = 0
    keep[ties[:k - np.count_nonzero(below)]] = 0
    return keep


def pruned_count(sparsity, n):
    """How many of ``n`` weights a sparsity prunes: round(sparsity·n), halves up, at most n - 1."""
    return min(int(np.floor(sparsity * n + 0.5)), n - 1)


class MagnitudePruner:
    """The schedule and thresholds of magnitude pruning over ``layers`` (PrunedConv2d). Not a Module:
    the layers stay registered once, where they sit in the model, and it adds no state-dict key. It
    holds no state beyond its configuration: every mask follows from the step, the weights and the
    previous masks.

    ``before_step(step, steps_per_epoch, total_steps)`` (the training loop's hook, relayed by the
    first layer) recomputes the masks at the update steps of the AGP schedule from ``start_epoch`` to
    ``end_epoch`` (converted with steps_per_epoch, see ``agp.epoch_to_step``) and sets each layer's
    ``mask_fixed`` once the schedule has ended.
    """

    def __init__(self, layers, names, sparsity, scope="layer", start_epoch=0, end_epoch=0, every=100, initial=0.0):
        if not layers:
            raise ValueError("MagnitudePruner: no layer to prune")
        check_schedule(sparsity, scope, start_epoch, end_epoch, every, initial)
        self.target, self.initial, self.scope = float(sparsity), float(initial), scope
        self.start_epoch, self.end_epoch, self.every = start_epoch, end_epoch, int(every)
        self.layers, self.names = list(layers), list(names)
        for layer in self.layers:
            layer.pruner = self

    def steps(self, steps_per_epoch):
        """(start step, end step) of the schedule."""
        return epoch_to_step(self.start_epoch, steps_per_epoch), epoch_to_step(self.end_epoch, steps_per_epoch)

    def before_step(self, step, steps_per_epoch, total_steps):
        start, end = self.steps(steps_per_epoch)
        if total_steps is not None and end >= total_steps:
            raise ValueError(f"prune: end_epoch {self.end_epoch} is step {end}, but the run's last step is "
                             f"{total_steps - 1}: the schedule would not finish; end it before the last epoch ends")
        if is_update_step(step, start, end, self.every):
            self.update(agp_sparsity(step, self.target, start, end, self.initial))
        for layer in self.layers:
            layer.mask_fixed = step >= end

    def update(self, sparsity):
        """Prune to ``sparsity`` now: per layer, or with one threshold over all the layers."""
        if self.scope == "layer":
            for layer in self.layers:
                keep = smallest_mask(np.abs(layer.weight.data).ravel(), layer.weight_mask.ravel(),
                                     pruned_count(sparsity, layer.weight.data.size))
                layer.set_mask(keep.reshape(layer.weight.shape))
            return
        magnitude = np.concatenate([np.abs(layer.weight.data).ravel() for layer in self.layers])  # (total,)
        previous = np.concatenate([layer.weight_mask.ravel() for layer in self.layers])
        keep = smallest_mask(magnitude, previous, pruned_count(sparsity, magnitude.size))
        offset = 0
        for layer in self.layers:
            n = layer.weight.data.size
            layer.set_mask(keep[offset:offset + n].reshape(layer.weight.shape))
            offset += n

    @property
    def sparsity(self):
        """The fraction of all pruned layers' weights that is pruned."""
        kept = sum(np.count_nonzero(layer.weight_mask) for layer in self.layers)
        return 1.0 - kept / sum(layer.weight_mask.size for layer in self.layers)

    @property
    def mask_fixed(self):
        return all(layer.mask_fixed for layer in self.layers)

    def __repr__(self):
        return (f"MagnitudePruner(sparsity={self.target}, scope={self.scope!r}, start_epoch={self.start_epoch}, "
                f"end_epoch={self.end_epoch}, every={self.every}, layers={len(self.layers)})")


def check_schedule(sparsity, scope, start_epoch, end_epoch, every, initial):
    """Refuse a bad pruning configuration (``prune``'s arguments), naming the argument."""
    check_sparsity("prune: sparsity", sparsity)
    check_sparsity("prune: initial", initial)
    if initial > sparsity:
        raise ValueError(f"prune: initial {initial!r} is above sparsity {sparsity!r}; the sparsity only grows")
    if scope not in SCOPES:
        raise ValueError(f"prune: scope must be one of {', '.join(map(repr, SCOPES))}, got {scope!r}")
    check_steps("prune", start_epoch, end_epoch, unit="epoch")
    if isinstance(every, bool) or not isinstance(every, numbers.Integral) or every < 1:
        raise ValueError(f"prune: every must be an int >= 1 (steps between mask updates), got {every!r}")


def prune(model, sparsity, scope="layer", start_epoch=0, end_epoch=0, every=100, initial=0.0, weight_quantizer=None):
    """Convert ``model`` in place for magnitude pruning and return it (see the module docstring).

    sparsity     the final fraction of weights pruned, in [0, 1)
    scope        "layer" (each conv to ``sparsity``) or "global" (one threshold over all pruned convs)
    start_epoch, end_epoch   the AGP ramp (numbers >= 0, end >= start); equal: prune at once at start,
                 and with both 0 at once here, too
    every        steps between mask updates during the ramp (the end step is always one)
    initial      the AGP's s_i, the sparsity at start_epoch
    weight_quantizer   None, or a callable returning a new recipe per layer (``BinaryWeight``,
                 ``lambda: BinaryWeight("layer")``) applied to the masked weight: prune+bwn
    """
    if getattr(model, "pruner", None) is not None or any(isinstance(m, PrunedConv2d) for m in model.modules()):
        raise ValueError(f"prune: {type(model).__name__} is already pruned")
    if any(isinstance(m, _Quantized) for m in model.modules()):
        raise ValueError(f"prune: {type(model).__name__} has quantized layers (compress.convert); to prune and "
                         "quantize, prune the float model with weight_quantizer=")
    if weight_quantizer is not None and not callable(weight_quantizer):
        raise TypeError("prune: weight_quantizer must be a callable returning a recipe per layer "
                        f"(e.g. recipes.BinaryWeight), got {type(weight_quantizer).__name__}")
    convs = [(name, m) for name, m in model.named_modules() if type(m) is nn.Conv2d]
    if len(convs) < 2:
        raise ValueError(f"prune: {type(model).__name__} has {len(convs)} Conv2d; the first is never pruned, "
                         "so there is nothing to prune")
    check_schedule(sparsity, scope, start_epoch, end_epoch, every, initial)  # before the model changes
    names = [name for name, _ in convs[1:]]
    layers = [PrunedConv2d.from_float(conv, None if weight_quantizer is None else weight_quantizer())
              for _, conv in convs[1:]]  # all built (a refused recipe raises) before the model changes
    for name, layer in zip(names, layers):
        model.set_submodule(name, layer)
    model.pruner = pruner = MagnitudePruner(layers, names, sparsity, scope, start_epoch, end_epoch, every, initial)
    if end_epoch == 0:  # at once at step 0: before_step(0) recomputes the same masks
        pruner.update(pruner.target)
    for layer in layers:
        layer.mask_fixed = end_epoch == 0
    return model
