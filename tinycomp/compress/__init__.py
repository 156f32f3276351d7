"""tinycomp.compress: the compression methods on top of the float layers.

    from tinycomp import compress, models
    model = compress.convert(models.get("resnet20"), "bwn")   # or "bc", "xnor", "ternary", "w4a4", ...

quantizers   the STE functions (Tensor in, Tensor out): ste_sign, binarize_weight, lsq, ...
recipes      each method's weight / activation quantizer as a Module holding its own scales
layers       QuantConv2d, QuantLinear: float layers with a weight and an input quantizer
methods      the method names of --method and the recipes they use
convert      convert(model, method, ...) in place; the training loop's before_step / after_step hooks
pruning, agp magnitude pruning with AGP: prune(model, sparsity, ...), PrunedConv2d
thinning, dependency   structured pruning: filter_prune, thin, thin_to_shapes (channel groups traced:
             channel_walk's rules per op, channel_graph's classes and groups)
sal          the Shift Attention Layer: SALConv2d, sal(model, ...)
run_config   the model of a run configuration (build_model), --init of a float checkpoint
Definitions and papers: docs/methods.md.
"""
from .convert import after_step, before_step, convert, quantizer_parameters
from .pruning import MagnitudePruner, PrunedConv2d, prune
from .agp import agp_sparsity
from .run_config import build_model, convert_from_config, load_float_state
from .sal import SALConv2d, kept_fraction, sal, sal_parameters
from .thinning import filter_prune, thin, thin_to_shapes
from .layers import QuantConv2d, QuantLinear
from .methods import Method, parse_method
