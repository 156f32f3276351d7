"""``convert(model, method, **options)``: turn a float model into a quantized one, in place.

Every Conv2d and Linear becomes a QuantConv2d / QuantLinear sharing the float layer's Parameters,
except the layers kept float: by default the first conv (it sees the image) and the last linear
(the classifier), as is standard practice; ``keep_float`` may add "shortcuts" (the 1x1 projection
convs of residual blocks) or drop "first" / "last". For xnor the model is first rewired into
binary-activation blocks (``binary_blocks``). ``model.compression`` records the method, its options
and which layers stayed float; ``summary`` reads it.

Methods that quantize activations with DoReFa, PACT or unsigned LSQ need every quantized layer's
input to be a ReLU output (those grids start at 0): the zoo's ResNets, ShiftResNets, VGGs and DenseNets are built
that way; MobileNetV2 (signed block inputs) is refused for them, and so is a user's model unless the
caller passes ``assume_relu_inputs=True``. Weight-only methods
(bc, bwn, ternary, w<k>a32) work on any model built from nn layers.
"""
from .. import nn
from ..models.densenet import DenseNet
from ..models.resnet18_34 import ResNet
from ..models.resnet_cifar import CifarResNet
from ..models.shiftresnet import ShiftResNet
from ..models.vgg import VGG
from .binary_blocks import to_binary_activation_blocks
from .layers import QuantConv2d, QuantLinear, _Quantized
from .methods import QUANTIZERS, input_recipe, parse_method, weight_recipe

KEEP_FLOAT = ("first", "last", "shortcuts")
NONNEGATIVE_INPUT_MODELS = (CifarResNet, ResNet, VGG, DenseNet, ShiftResNet)


def convert(model, method, quantizer="dorefa", keep_float=("first", "last"), stochastic=False, scale="filter",
            scale_grad=True, act_scale=False, assume_relu_inputs=False):
    """Convert ``model`` in place to ``method`` (see ``tinycomp.compress.methods``) and return it.

    quantizer    "dorefa" | "pact" | "lsq", for w<k>a<m> methods
    keep_float   which of "first", "last", "shortcuts" stay full precision
    stochastic   BC's stochastic sign in training (bc only)
    scale, scale_grad   BWN's α per "filter" or "layer", and whether its gradient flows (bwn, xnor)
    act_scale    XNOR-Net's activation scale β (xnor only)
    assume_relu_inputs   the caller vouches that every quantized layer's input is a ReLU output, so a
                 model outside the zoo may take DoReFa / PACT / unsigned LSQ activations
    """
    m = parse_method(method)
    keep = _check_options(m, model, quantizer, keep_float, stochastic, scale, act_scale, assume_relu_inputs)
    if any(isinstance(layer, _Quantized) or hasattr(layer, "summary_param_bits") for layer in model.modules()):
        raise ValueError(f"convert: {type(model).__name__} is already converted (quantized, pruned or SAL)")
    layers = [(name, layer) for name, layer in model.named_modules() if type(layer) in (nn.Conv2d, nn.Linear)]
    convs = [name for name, layer in layers if type(layer) is nn.Conv2d]
    linears = [name for name, layer in layers if type(layer) is nn.Linear]
    kept = set()
    if "first" in keep and convs:
        kept.add(convs[0])
    if "last" in keep and linears:
        kept.add(linears[-1])
    if "shortcuts" in keep:
        kept.update(name for name in convs if "shortcut" in name.split("."))
    if m.name == "xnor":
        to_binary_activation_blocks(model)
    if m.name != "none":
        for name, layer in layers:
            if name in kept:
                continue
            w_q = weight_recipe(m, quantizer, stochastic, scale, scale_grad)
            x_q = input_recipe(m, quantizer)
            if type(layer) is nn.Conv2d:
                new = QuantConv2d.from_float(layer, w_q, x_q, act_scale=act_scale)
            else:
                new = QuantLinear.from_float(layer, w_q, x_q)
            model.set_submodule(name, new)
    model.train(model.training)  # the new recipes take the model's mode (eval: no stochastic draws)
    model.compression = {"method": m.name, "quantizer": quantizer if _uses_quantizer(m) else None,
                         "keep_float": sorted(keep), "float_layers": [n for n, _ in layers if n in kept],
                         "stochastic": bool(stochastic), "scale": scale, "scale_grad": bool(scale_grad),
                         "act_scale": bool(act_scale)}
    return model


def _uses_quantizer(m):
    return m.name not in ("none", "bc", "bwn", "xnor", "ternary")


def _check_options(m, model, quantizer, keep_float, stochastic, scale, act_scale, assume_relu_inputs):
    if quantizer not in QUANTIZERS:
        raise ValueError(f"--quantizer: {quantizer!r} is not one of {', '.join(QUANTIZERS)}")
    if quantizer != "dorefa" and not _uses_quantizer(m):
        raise ValueError(f"--quantizer {quantizer} applies to w<k>a<m> methods, not --method {m.name}")
    keep = tuple(keep_float)
    unknown = [k for k in keep if k not in KEEP_FLOAT]
    if unknown:
        raise ValueError(f"--keep-float: unknown {', '.join(map(repr, unknown))}; choose from {', '.join(KEEP_FLOAT)}")
    if stochastic and m.name != "bc":
        raise ValueError(f"the stochastic sign (--bc-stochastic) applies to --method bc, not {m.name}")
    if scale not in ("filter", "layer", None):
        raise ValueError(f"--bwn-scale must be 'filter' or 'layer', got {scale!r}")
    if act_scale and m.name != "xnor":
        raise ValueError(f"the activation scale (--xnor-act-scale) applies to --method xnor, not {m.name}")
    if quantizer == "pact" and not m.quantizes_activations:
        raise ValueError(f"--quantizer pact quantizes activations; --method {m.name} keeps them float "
                         "(use dorefa for DoReFa weights alone)")
    if m.quantizes_activations and m.name != "xnor" and "first" not in keep:
        raise ValueError(f"--keep-float {','.join(keep) or 'none'}: --method {m.name} quantizes layer inputs on a grid "
                         "that starts at 0, and the first conv's input is the (signed) image: keep 'first' float")
    relu_inputs = assume_relu_inputs or isinstance(model, NONNEGATIVE_INPUT_MODELS)
    if m.quantizes_activations and m.name != "xnor" and not relu_inputs:
        raise ValueError(f"--method {m.name}: {quantizer} activations start at 0 and need ReLU outputs as layer "
                         f"inputs; supported: the zoo's ResNets, ShiftResNets, VGGs and DenseNets, not {type(model).__name__} "
                         "(weight-only methods work on any model; assume_relu_inputs=True if yours are ReLU outputs)")
    return keep


def before_step(model, step, steps_per_epoch, total_steps):
    """The training loop's hook before every training step (``step`` counts from 0 over the run):
    schedules that move with training (a pruning schedule, SAL's temperature) read it here. Every
    module with a ``before_step(step, steps_per_epoch, total_steps)`` method is called."""
    for m in model.modules():
        if hasattr(m, "before_step"):
            m.before_step(step, steps_per_epoch, total_steps)


def after_step(model):
    """The training loop's hook after every optimizer step: BC's clipping, PACT's alpha > 0, a
    pruning mask re-applied. Every module with an ``after_step()`` method is called."""
    for m in model.modules():
        if hasattr(m, "after_step"):
            m.after_step()


def quantizer_parameters(model):
    """The recipes' own Parameters (PACT's alpha, LSQ's step): no weight decay on them by default."""
    return [p for layer in model.modules() if isinstance(layer, _Quantized)
            for q in (layer.weight_quantizer, layer.input_quantizer) if q is not None for p in q.parameters()]
