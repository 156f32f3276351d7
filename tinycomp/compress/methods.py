"""The quantization methods by name, as ``--method`` spells them, and the recipes each one uses.

    none          float
    bc            BinaryConnect: sign(W), latent W clipped to [-1, 1]; float activations
    bwn           Binary Weight Network: α·sign(W), α per filter; float activations
    xnor          binary activations (sign) and BWN weights, in binary-activation blocks
    ternary       TWN weights; float activations
    w<k>a<m>      k-bit weights and m-bit activations, k and m from 1 to 8 (a32: float activations),
                  with ``quantizer`` "dorefa" (DoReFa weights and activations), "pact" (DoReFa
                  weights, PACT activations) or "lsq" (LSQ for both; k >= 2)

    prune         magnitude pruning reached with AGP (``tinycomp.compress.pruning``)
    filter-prune  structured pruning: whole filters removed, the model thinned (``thinning``)
    sal           the Shift Attention Layer (``sal``)
    A+B           a structure and a quantization where they compose: prune+bc, prune+bwn,
                  prune+w<k>a32 (k >= 2), filter-prune+<any quantization>, sal+bc, sal+bwn

Definitions: docs/methods.md.
"""
import dataclasses
import re

from . import recipes
from .quantizers import MAX_BITS

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
    if not 1 <= k <= MAX_BITS or not (1 <= m <= MAX_BITS or m == 32):
        raise ValueError(f"--method {text}: bits out of range; weights take 1 to 8 bits, activations 1 to 8 "
                         "or 32 (float)")
    return Method(text, k, m)


STRUCTURES = ("prune", "filter-prune", "sal")


def split_method(text):
    """(structure or None, quantization Method) of a ``--method`` value; ValueError naming --method
    for anything else, and one clear error for a combination that does not compose."""
    if not isinstance(text, str):
        raise ValueError(f"--method must be a string, got {type(text).__name__}")
    parts = text.split("+")
    if len(parts) == 1:
        return (text, parse_method("none")) if text in STRUCTURES else (None, parse_method(text))
    structure, quant = parts[0], parse_method(parts[1]) if len(parts) == 2 and parts[1] not in STRUCTURES else None
    if len(parts) != 2 or structure not in STRUCTURES or quant is None or quant.name == "none":
        raise ValueError(f"--method {text}: a combination is one of {', '.join(STRUCTURES)}, '+', then one "
                         "quantization method (e.g. prune+bwn, filter-prune+w4a4, sal+bc)")
    composes = {"prune": quant.name in ("bc", "bwn") or (not quant.quantizes_activations and quant.name[0] == "w"
                                                          and quant.weight_bits >= 2),
                "filter-prune": True, "sal": quant.name in ("bc", "bwn")}[structure]
    if not composes:
        allowed = {"prune": "bc, bwn or w<k>a32 with k >= 2 (a quantizer of the masked weight; activations "
                            "stay float)", "sal": "bc or bwn (the kept weights binarised)"}[structure]
        raise ValueError(f"--method {text}: {structure} combines with {allowed}, not {quant.name}")
    return structure, quant


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
