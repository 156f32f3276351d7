"""The quantization methods by name, as ``--method`` spells them, and the recipes each one uses.

    none          float
    bc            BinaryConnect: sign(W), latent W clipped to [-1, 1]; float activations
    bwn           Binary Weight Network: α·sign(W), α per filter; float activations
    xnor          binary activations (sign) and BWN weights, in binary-activation blocks
    ternary       TWN weights; float activations
    w<k>a<m>      k-bit weights and m-bit activations, k and m from 1 to 8 (a32: float activations),
                  with ``quantizer`` "dorefa" (DoReFa weights and activations), "pact" (DoReFa
                  weights, PACT activations) or "lsq" (LSQ for both; k >= 2)

Definitions: docs/methods.md.
"""
import dataclasses
import re

from . import recipes

QUANTIZERS = ("dorefa", "pact", "lsq")
NAMED = ("none", "bc", "bwn", "xnor", "ternary")


@dataclasses.dataclass(frozen=True)
class Method:
    name: str
    weight_bits: int  # 32: float
    act_bits: int     # 32: float

    @property
    def quantizes_activations(self):
        return self.act_bits < 32


def parse_method(text):
    """A ``Method`` from its name; ValueError naming --method for anything else."""
    if not isinstance(text, str):
        raise ValueError(f"--method must be a string, got {type(text).__name__}")
    fixed = {"none": (32, 32), "bc": (1, 32), "bwn": (1, 32), "xnor": (1, 1), "ternary": (2, 32)}
    if text in fixed:
        return Method(text, *fixed[text])
    match = re.fullmatch(r"w(\d+)a(\d+)", text)
    if not match:
        raise ValueError(f"--method: unknown method {text!r}; choose one of {', '.join(NAMED)} or w<k>a<m> "
                         "(k, m from 1 to 8; a32 keeps activations float)")
    k, m = int(match.group(1)), int(match.group(2))
    if not 1 <= k <= 8 or not (1 <= m <= 8 or m == 32):
        raise ValueError(f"--method {text}: bits out of range; weights take 1 to 8 bits, activations 1 to 8 "
                         "or 32 (float)")
    return Method(text, k, m)


def weight_recipe(method, quantizer="dorefa", stochastic=False, scale="filter", scale_grad=True):
    """The weight quantizer of ``method`` (None for "none")."""
    name = method.name
    if name == "none":
        return None
    if name == "bc":
        return recipes.SignWeight(stochastic=stochastic)
    if name in ("bwn", "xnor"):
        return recipes.BinaryWeight(scale=scale, scale_grad=scale_grad)
    if name == "ternary":
        return recipes.TernaryWeight()
    if quantizer == "lsq":
        if method.weight_bits < 2:
            raise ValueError(f"--method {name} --quantizer lsq: LSQ's signed weight grid needs at least 2 bits")
        return recipes.LSQ(method.weight_bits, signed=True)
    return recipes.DorefaWeight(method.weight_bits)


def input_recipe(method, quantizer="dorefa"):
    """The activation quantizer of ``method`` (None when activations stay float)."""
    if method.name == "xnor":
        return recipes.SignActivation()
    if not method.quantizes_activations:
        return None
    if quantizer == "pact":
        return recipes.PACT(method.act_bits)
    if quantizer == "lsq":
        return recipes.LSQ(method.act_bits, signed=False)
    return recipes.DorefaActivation(method.act_bits)
