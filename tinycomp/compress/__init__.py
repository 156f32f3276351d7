"""tinycomp.compress: the compression methods on top of the float layers.

    from tinycomp import compress, models
    model = compress.convert(models.get("resnet20"), "bwn")   # or "bc", "xnor", "ternary", "w4a4", ...

quantizers   the STE functions (Tensor in, Tensor out): ste_sign, binarize_weight, lsq, ...
recipes      each method's weight / activation quantizer as a Module holding its own scales
layers       QuantConv2d, QuantLinear: float layers with a weight and an input quantizer
methods      the method names of --method and the recipes they use
convert      convert(model, method, ...) in place; the training loop's before_step / after_step hooks
Definitions and papers: docs/methods.md.
"""
from .convert import after_step, before_step, build_model, convert, convert_from_config, load_float_state, quantizer_parameters
from .layers import QuantConv2d, QuantLinear
from .methods import Method, parse_method
