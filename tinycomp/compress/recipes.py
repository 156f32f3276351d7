"""Quantizer recipes: each method's weight or activation quantizer as a Module over the STE ops.

A recipe is called on a Tensor and returns its quantized Tensor (with the method's pseudo-gradient);
it holds its own learned scales (PACT's ``alpha``, LSQ's ``step``) as Parameters, so they appear in
the state dict under the layer's ``weight_quantizer.`` / ``input_quantizer.`` prefix. Every recipe
states what the deployed layer stores, for the summary and for export:

    bits             bits per quantized element (32: left float)
    scale_count(w)   how many 32-bit scales are stored beside the quantized weights (0 for BC)

Formulas and papers: docs/methods.md (sections named in each class).
"""
import numpy as np

from .. import nn
from ..autograd import no_grad
from ..random import generator
from . import quantizers as Q


class Recipe(nn.Module):
    """Base of every quantizer recipe; ``bits`` and ``scale_count`` describe the deployed form."""

    bits = 32
    signed = True

    def scale_count(self, weight_shape):
        return 0

    def after_weight_step(self, weight):
        """Called by the layer after each optimizer step, with the layer's latent weight."""


# --- weights -------------------------------------------------------------------------------------
class SignWeight(Recipe):
    """BinaryConnect (docs/methods.md, "BinaryConnect (BC)"): W_b = sign(W), or the stochastic sign
    (+1 with probability clip((W+1)/2, 0, 1)) in training when ``stochastic``; backward 1{|W| <= 1}.
    The latent weights are clipped to [-1, 1] after every optimizer step. Evaluation always uses the
    deterministic sign, which is what deploys."""

    bits = 1

    def __init__(self, stochastic=False):
        super().__init__()
        self.stochastic = bool(stochastic)

    def forward(self, w):
        if self.stochastic and self.training:
            return Q.stochastic_sign(w, generator())
        return Q.ste_sign(w, clip=1.0)

    def after_weight_step(self, weight):
        np.clip(weight.data, -1.0, 1.0, out=weight.data)

    def extra_repr(self):
        return "stochastic=True" if self.stochastic else ""


class BinaryWeight(Recipe):
    """BWN (docs/methods.md, "Binary Weight Networks (BWN)"): α·sign(W), α = mean |W| per output
    filter (``scale="filter"``) or per layer, with the exact gradient through α unless
    ``scale_grad=False``. No clipping of the latent weights."""

    bits = 1

    def __init__(self, scale="filter", scale_grad=True):
        super().__init__()
        if scale not in ("filter", "layer", None):
            raise ValueError(f"BinaryWeight: scale must be 'filter', 'layer' or None, got {scale!r}")
        self.scale, self.scale_grad = scale, bool(scale_grad)

    def forward(self, w):
        return Q.binarize_weight(w, scale=self.scale, scale_grad=self.scale_grad)

    def scale_count(self, weight_shape):
        return {"filter": weight_shape[0], "layer": 1, None: 0}[self.scale]

    def extra_repr(self):
        return f"scale={self.scale!r}, scale_grad={self.scale_grad}"


class TernaryWeight(Recipe):
    """TWN (docs/methods.md, "Ternary weights (TWN)"): {-s, 0, +s} per filter, 2 bits a weight."""

    bits = 2

    def forward(self, w):
        return Q.ternarize_weight(w)

    def scale_count(self, weight_shape):
        return weight_shape[0]


class DorefaWeight(Recipe):
    """DoReFa-Net k-bit weights (docs/methods.md, "DoReFa"): values on a (2^k - 1)-level grid in
    [-1, 1]; one 32-bit scale per layer is counted (k = 1: mean |W|)."""

    def __init__(self, bits):
        super().__init__()
        self.bits = Q.check_bits("DorefaWeight", bits, 1)

    def forward(self, w):
        return Q.dorefa_weight(w, self.bits)

    def scale_count(self, weight_shape):
        return 1

    def extra_repr(self):
        return f"bits={self.bits}"


class LSQ(Recipe):
    """Learned Step Size Quantization (docs/methods.md, "LSQ"): round(clip(x/s, Qn, Qp))·s with a
    learned step s (a Parameter of shape ()). The step is set once, from the first training batch,
    to 2·mean|x|/sqrt(Qp), and the buffer ``initialized`` records that, so a resumed run keeps it.
    Weights use the signed grid, post-ReLU activations the unsigned one."""

    def __init__(self, bits, signed=True):
        super().__init__()
        self.bits = Q.check_bits("LSQ", bits, 2 if signed else 1)
        self.signed = bool(signed)
        self.step = nn.Parameter(np.ones((), np.float32))
        self.register_buffer("initialized", np.zeros((), np.int8))

    def forward(self, x):
        if self.training and not self.initialized:
            with no_grad():
                self.step.data[...] = Q.lsq_init_step(x, self.bits, self.signed)
            self.initialized[...] = 1
        return Q.lsq(x, self.step, self.bits, signed=self.signed)

    def scale_count(self, weight_shape):
        return 0  # the step is a Parameter of this recipe, counted with the layer's parameters

    def after_weight_step(self, weight):
        np.maximum(self.step.data, np.float32(1e-8), out=self.step.data)  # the step stays > 0, as PACT's alpha

    def extra_repr(self):
        return f"bits={self.bits}, signed={self.signed}"


# --- activations ---------------------------------------------------------------------------------
class SignActivation(Recipe):
    """XNOR's binary activations (docs/methods.md, "XNOR"): sign(x), backward 1{|x| <= 1}."""

    bits = 1

    def forward(self, x):
        return Q.ste_sign(x, clip=1.0)


class DorefaActivation(Recipe):
    """DoReFa-Net k-bit activations: quantize_k(clip(x, 0, 1)); backward 1{0 <= x <= 1}."""

    signed = False

    def __init__(self, bits):
        super().__init__()
        self.bits = Q.check_bits("DorefaActivation", bits, 1)

    def forward(self, x):
        return Q.dorefa_activation(x, self.bits)

    def extra_repr(self):
        return f"bits={self.bits}"


class PACT(Recipe):
    """PACT (docs/methods.md, "PACT"): clip(x, 0, α) with a learned α (a Parameter of shape (),
    initialised to ``alpha``, 10 as in the paper), then k-bit linear quantization."""

    signed = False

    def __init__(self, bits, alpha=10.0):
        super().__init__()
        self.bits = Q.check_bits("PACT", bits, 1)
        if not alpha > 0:
            raise ValueError(f"PACT: alpha must be > 0, got {alpha!r}")
        self.alpha = nn.Parameter(np.full((), alpha, np.float32))

    def forward(self, x):
        return Q.pact(x, self.alpha, self.bits)

    def after_weight_step(self, weight):
        np.maximum(self.alpha.data, np.float32(1e-3), out=self.alpha.data)  # alpha stays > 0

    def extra_repr(self):
        return f"bits={self.bits}"
