"""Shift Attention Layer (SAL): a k×k convolution that learns to keep one tap per (o, c) pair
(docs/methods.md, "Shift Attention Layer (SAL)"; Boukli Hacene et al., ICPR 2020, and their code).

Parameters: the convolution's weight W (O, C, k, k) and an attention A (O, C, k²) initialised from
U(0, 1); with ``shared=True`` one attention row per input channel, A (C, k²), shared by all O
filters (one learned shift per input channel). Buffer: the temperature T. Training forward, over
the k² taps s = k·row + column of each pair:

    Â = A / std(A)            std over the taps, unbiased (ddof = 1), as the authors' code
    a = softmax(T · Â)        over the taps: a[o, c, :] sums to 1 (a < 2^-64 flushed to 0, see FLUSH_BELOW)
    W_eff = W ⊙ a             (a reshaped to k×k per pair)
    y = conv2d(x, W_eff)      with the convolution's stride and padding (and its bias)

Temperature: geometric every batch, T(step) = T0 · (Tf/T0)^(step / (total_steps − 1)), from T0 at the
first training step to Tf at the last (defaults 20 → 70, the authors' CIFAR values); set by the
training loop's ``before_step`` and stored as the buffer ``temperature``, so evaluation and resumed
runs see it.

Rounding: a pair keeps its largest tap when max a >= 0.5 (at most one tap can, since a sums to 1)
and is pruned when max a < 0.5; ``tap_index()`` gives it, −1 meaning pruned. Evaluation (eval mode)
always computes the rounded layer, the one that deploys: y = conv2d(x, W_eff) with a replaced by
the one-hot mask m = round(a). That layer equals ``tinycomp_kernels.sal.sal_conv2d`` on
``sal_pack(rounded_weight(), tap_index())`` (stride 1, padding k // 2).

SAL + BC / BWN (``weight_quantizer`` a ``SignWeight`` or ``BinaryWeight`` recipe), with a the soft
attention in training and m in evaluation:

    BC:   W_eff = sign(W) ⊙ a                       (the recipe's STE 1{|W| <= 1}; after every
                                                     optimizer step the latent W is clipped to [−1, 1])
    BWN:  W_eff = α ⊙ sign(W) ⊙ a,   α[o] = Σ_{c,s} a·|W| / Σ_{c,s} a   (scale "filter"; "layer" sums
                                                     over the whole tensor)

BWN's α is the attention-weighted mean of |W| over the filter, the least-squares scale of
Σ a·(W − α·sign(W))²; with a = m it is the mean of |W| over the filter's kept weights, the α that
deploys (0 for a filter with no kept pair). Its gradient flows to W (d|W|/dW = sign(W)) and to A,
unless the recipe has ``scale_grad=False``; sign(W) takes the STE 1{|W| <= 1}.

Storage as deployed (``summary_param_bits``): per kept pair one weight (32 bits, or 1 with BC / BWN)
and a ⌈log2 k²⌉-bit tap index (4 bits for 3×3; with ``shared`` one index per kept input channel),
plus 32 bits per BWN α and per bias element; the attention is gone after rounding. MACs as executed:
kept pairs · OH · OW per image.

``sal(model, ...)`` converts a float model in place; ``sal_parameters(model)`` lists the attention
Parameters (no weight decay on them by default); ``kept_fraction(model)`` the share of pairs kept.
"""
import math

import numpy as np

from .. import functional as F
from .. import nn
from ..autograd import no_grad
from ..random import generator
from ..tensor import Tensor
from . import quantizers as Q
from .layers import _Quantized
from .recipes import BinaryWeight, SignWeight

BINARIZE = {None: None, "bc": SignWeight, "bwn": BinaryWeight}
# Attention values below 2^-64 become exactly 0. Such a tap adds less than 2^-64 of its weight to a sum
# that float32 rounds at 2^-24 anyway, but left in, W ⊙ a and its products with gradients are subnormal
# floats, which Intel cores compute through a slow microcode assist: mid-run (T ≈ 37) up to 16 % of a
# ResNet-20's W_eff was subnormal and SAL epochs took 35-60 min instead of 4 (docs/methods.md, SAL).
FLUSH_BELOW = 2.0 ** -64
LOG_FLUSH_BELOW = math.log(FLUSH_BELOW)
KEEP_FLOAT = ("first", "last", "shortcuts")


# --- the math, on Tensors ------------------------------------------------------------------------
def sal_temperature(step, total_steps, t0=20.0, tf=70.0):
    """T0·(Tf/T0)^(step/(total_steps − 1)): T0 at step 0, Tf at the last step (and beyond); Tf for a
    one-step run."""
    if total_steps <= 1:
        return float(tf)
    frac = min(max(step, 0), total_steps - 1) / (total_steps - 1)
    return float(t0) * (float(tf) / float(t0)) ** frac


def sal_attention(attention, temperature):
    """a = softmax over the last axis (the k² taps) of T·A / std(A), std unbiased (ddof 1), with every
    a < FLUSH_BELOW set to exactly 0 (constant there: no gradient flows through a flushed tap).

    ``attention`` a Tensor (..., k²) with k² >= 2; ``temperature`` a positive number. Differentiable
    in ``attention``."""
    taps = attention.shape[-1]
    centred = attention - attention.mean(axis=-1, keepdims=True)
    std = ((centred * centred).sum(axis=-1, keepdims=True) / (taps - 1)) ** 0.5  # (..., 1)
    log_a = F.log_softmax(attention / std * float(temperature), axis=-1)
    kept = Tensor((log_a.data >= LOG_FLUSH_BELOW).astype(log_a.dtype))
    return log_a.exp() * kept


def round_attention(a):
    """The tap each pair keeps, from attention values ``a`` (..., k²) (a NumPy array): argmax where
    max a >= 0.5, else −1 (pruned). Returns int64 of shape a.shape[:-1]."""
    return np.where(a.max(axis=-1) >= 0.5, a.argmax(axis=-1), -1).astype(np.int64)


def sal_weight(weight, a, weight_quantizer=None):
    """W_eff (O, C, k, k) from ``weight`` W (O, C, k, k) and tap weights ``a`` ((O, C, k²), or (C, k²)
    shared by all filters), both Tensors: W ⊙ a, sign(W) ⊙ a (a ``SignWeight`` recipe) or
    α·sign(W) ⊙ a with α = Σ a·|W| / Σ a per filter (a ``BinaryWeight`` recipe). See the module
    docstring; ``a`` is the soft attention in training and the one-hot mask in evaluation."""
    o, c, k, _ = weight.shape
    a4 = a.reshape(o if a.ndim == 3 else 1, c, k, k)  # tap s at row s // k, column s % k
    if weight_quantizer is None:
        return weight * a4
    if isinstance(weight_quantizer, SignWeight):
        return weight_quantizer(weight) * a4
    scale = weight_quantizer.scale
    signs = Q.ste_sign(weight, clip=1.0)
    if scale is None:
        return signs * a4
    w, m = (weight, a4) if weight_quantizer.scale_grad else (weight.detach(), a4.detach())
    axes = (1, 2, 3) if scale == "filter" else (0, 1, 2, 3)
    magnitude = w * Tensor(np.where(w.data >= 0, 1, -1).astype(w.dtype))  # |W|, d|W|/dW = sign(W)
    num = (magnitude * m).sum(axis=axes, keepdims=True)  # (O, 1, 1, 1) or (1, 1, 1, 1)
    # Σ a over the same taps as the numerator: a shared (1, C, k, k) mask counts once per filter
    den = (m * Tensor(np.ones(w.shape, w.dtype))).sum(axis=axes, keepdims=True)
    den = den + Tensor((den.data == 0).astype(w.dtype))  # a filter with no kept pair: α = 0 / 1
    return num / den * signs * a4


# --- the layer -------------------------------------------------------------------------------------
class SALConv2d(nn.Conv2d):
    """A k×k convolution (k odd >= 3, stride and padding free, dilation 1, groups 1) with SAL's
    attention over its taps; ``weight_quantizer`` None, ``SignWeight()`` (SAL + BC) or
    ``BinaryWeight()`` (SAL + BWN). See the module docstring."""

    def __init__(self, in_channels, out_channels, kernel_size=3, stride=1, padding=1, bias=True, shared=False,
                 t0=20.0, tf=70.0, weight_quantizer=None, dtype=np.float32):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, 1, 1, bias, dtype)
        kh, kw = self.kernel_size
        if kh != kw or kh % 2 == 0 or kh < 3:
            raise ValueError(f"SALConv2d: kernel_size must be square and odd, at least 3, got {self.kernel_size}")
        _check_temperatures("SALConv2d", t0, tf)
        if weight_quantizer is not None and not isinstance(weight_quantizer, (SignWeight, BinaryWeight)):
            raise TypeError(f"SALConv2d: weight_quantizer must be None, SignWeight or BinaryWeight, "
                            f"got {type(weight_quantizer).__name__}")
        self.shared, self.t0, self.tf = bool(shared), float(t0), float(tf)
        self.weight_quantizer = weight_quantizer
        rows = (in_channels,) if self.shared else (out_channels, in_channels)
        self.attention = nn.Parameter(generator().random(rows + (kh * kh,)).astype(dtype))  # U(0, 1)
        self.register_buffer("temperature", np.array(self.t0, np.float64))

    @classmethod
    def from_float(cls, conv, shared=False, t0=20.0, tf=70.0, weight_quantizer=None):
        """A SALConv2d sharing ``conv``'s weight and bias Parameters (no copy), with a new attention."""
        if conv.groups != 1 or conv.dilation != (1, 1):
            raise ValueError(f"SALConv2d.from_float: needs groups 1 and dilation 1, got groups {conv.groups}, "
                             f"dilation {conv.dilation}")
        layer = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                    conv.bias is not None, shared, t0, tf, weight_quantizer, conv.weight.dtype)
        layer.weight, layer.bias = conv.weight, conv.bias
        return layer.train(conv.training)

    # the training loop's hooks
    def before_step(self, step, steps_per_epoch, total_steps):
        self.temperature[...] = sal_temperature(step, total_steps, self.t0, self.tf)

    def after_step(self):
        if self.weight_quantizer is not None:
            self.weight_quantizer.after_weight_step(self.weight)

    # the attention, soft and rounded
    def soft_attention(self):
        """a = softmax(T·Â) (Tensor, (O, C, k²) or shared (C, k²)), differentiable in the attention."""
        return sal_attention(self.attention, float(self.temperature))

    def tap_index(self):
        """The tap each (o, c) pair keeps, int64 (O, C), −1 for a pruned pair (shared: one per input
        channel, repeated over O)."""
        with no_grad():
            taps = round_attention(self.soft_attention().data)
        return np.broadcast_to(taps, (self.out_channels, self.in_channels)).copy()

    def kept_mask(self):
        """round(a): the one-hot mask of the kept taps, of the attention's shape, weight's dtype."""
        with no_grad():
            taps = round_attention(self.soft_attention().data)
        return (np.arange(self.attention.shape[-1]) == taps[..., None]).astype(self.weight.dtype)

    def kept_pairs(self):
        return int((self.tap_index() >= 0).sum())

    def rounded_weight(self):
        """The deployed W_eff (O, C, k, k) as a NumPy array: W, sign(W) or α·sign(W) on the kept taps, else 0."""
        with no_grad():
            return sal_weight(self.weight, Tensor(self.kept_mask()), self.weight_quantizer).data

    def forward(self, x):
        a = self.soft_attention() if self.training else Tensor(self.kept_mask())
        w = sal_weight(self.weight, a, self.weight_quantizer)
        return F.conv2d(x, w, self.bias, self.stride, self.padding)

    # the summary (tinycomp/summary.py): the rounded layer as deployed
    def summary_params(self):
        """Kept pairs (one weight each) and the bias: the attention is gone once rounded."""
        return self.kept_pairs() + (0 if self.bias is None else self.bias.data.size)

    def summary_param_bits(self):
        kept = self.kept_pairs()
        k = self.kernel_size[0]
        index_bits = math.ceil(math.log2(k * k))
        indices = int((self.tap_index()[0] >= 0).sum()) if self.shared else kept
        weight_bits, _, _ = self.summary_precision()
        scales = 0 if self.weight_quantizer is None else self.weight_quantizer.scale_count(self.weight.shape)
        bias = 0 if self.bias is None else self.bias.data.size
        return kept * weight_bits + indices * index_bits + 32 * (scales + bias)

    def summary_macs(self, out_shape):
        _, _, oh, ow = out_shape
        return self.kept_pairs() * oh * ow

    def summary_precision(self):
        return (32 if self.weight_quantizer is None else 1), 32, "float"

    def extra_repr(self):
        return (super().extra_repr() + f", shared={self.shared}, t0={self.t0:g}, tf={self.tf:g}, "
                f"temperature={float(self.temperature):.4g}")


# --- the model-level functions ---------------------------------------------------------------------
def sal(model, t0=20.0, tf=70.0, shared=False, binarize=None, keep_float=("first", "last"), scale="filter",
        stochastic=False):
    """Make every float k×k convolution of ``model`` (k odd >= 3, groups 1, dilation 1; 3×3 in the zoo)
    a SALConv2d sharing its Parameters, in place, and return the model. 1×1 convolutions and linear
    layers are never converted. ``keep_float``: "first" keeps the first convolution (it sees the
    image); "last" (the classifier) and "shortcuts" (convolutions named shortcut) are accepted as for
    ``convert`` and keep those layers float, which SAL leaves float anyway unless a shortcut is k×k.
    ``binarize``: None, "bc" (SignWeight) or "bwn" (BinaryWeight, α per filter) on the converted
    layers; ``scale`` BWN's α per "filter" or "layer", ``stochastic`` BC's stochastic sign in training.
    ``model.compression`` records the method ("sal", "sal+bc", "sal+bwn") and options."""
    if binarize not in BINARIZE:
        raise ValueError(f"sal: binarize must be None, 'bc' or 'bwn', got {binarize!r}")
    _check_temperatures("sal", t0, tf)
    keep = tuple(keep_float)
    unknown = [k for k in keep if k not in KEEP_FLOAT]
    if unknown:
        raise ValueError(f"sal: keep_float: unknown {', '.join(map(repr, unknown))}; choose from "
                         f"{', '.join(KEEP_FLOAT)}")
    if any(isinstance(m, (SALConv2d, _Quantized)) for m in model.modules()):
        raise ValueError(f"sal: {type(model).__name__} is already converted")
    convs = [(name, m) for name, m in model.named_modules() if type(m) is nn.Conv2d]
    kept = set()
    if "first" in keep and convs:
        kept.add(convs[0][0])
    if "shortcuts" in keep:
        kept.update(name for name, _ in convs if "shortcut" in name.split("."))
    targets = [(name, conv) for name, conv in convs if _convertible(conv)]
    if not [name for name, _ in targets if name not in kept]:
        raise ValueError(f"sal: {type(model).__name__} has no k x k convolution to convert (k odd >= 3, groups 1, "
                         "dilation 1) besides the ones kept float")
    recipe = {None: None, "bc": lambda: SignWeight(stochastic=stochastic),
              "bwn": lambda: BinaryWeight(scale=scale)}[binarize]
    for name, conv in targets:
        if name not in kept:
            new = SALConv2d.from_float(conv, shared, t0, tf, None if recipe is None else recipe())
            model.set_submodule(name, new)
    model.compression = {"method": "sal" if binarize is None else f"sal+{binarize}", "t0": float(t0),
                         "tf": float(tf), "shared": bool(shared), "binarize": binarize, "keep_float": sorted(keep),
                         "float_layers": [name for name, _ in targets if name in kept]}
    return model


def _check_temperatures(owner, t0, tf):
    for name, t in (("t0", t0), ("tf", tf)):
        if isinstance(t, bool) or not isinstance(t, (int, float, np.floating, np.integer)) or not 0 < t < math.inf:
            raise ValueError(f"{owner}: {name} must be a finite number > 0, got {t!r}")


def _convertible(conv):
    kh, kw = conv.kernel_size
    return kh == kw and kh >= 3 and kh % 2 == 1 and conv.groups == 1 and conv.dilation == (1, 1)


def sal_layers(model):
    return [m for m in model.modules() if isinstance(m, SALConv2d)]


def sal_parameters(model):
    """The attention Parameters of every SAL layer: no weight decay on them by default."""
    return [m.attention for m in sal_layers(model)]


def kept_fraction(model):
    """Kept (o, c) pairs over all (o, c) pairs of the SAL layers, after rounding (ValueError without any)."""
    layers = sal_layers(model)
    if not layers:
        raise ValueError(f"kept_fraction: {type(model).__name__} has no SAL layers")
    return sum(m.kept_pairs() for m in layers) / sum(m.out_channels * m.in_channels for m in layers)
