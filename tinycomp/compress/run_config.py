"""A run's compression, from its configuration: the model ``tinycomp train`` builds, and how a
checkpoint's weights go into it.

The configuration is a TrainConfig or the dict a checkpoint stores (``meta["config"]``); fields
added after a checkpoint was written take the defaults below, so an old checkpoint stays float.
Order of the conversions, for ``--method structure+quantization``:
    prune          the float model pruned (PrunedConv2d), the quantizer acting on the masked weight
    filter-prune   the float model thinned to the recorded channel counts (once training has chosen
                   them), then quantized like any model
    sal            every k x k conv but the first a SALConv2d (+bc / +bwn: its kept weights binarised)
    otherwise      ``convert`` with the quantization method
"""
from .. import models
from .convert import convert
from .methods import split_method, weight_recipe
from .pruning import prune
from .sal import sal
from .thinning import filter_prune, thin_to_shapes

CONFIG_DEFAULTS = {"method": "none", "quantizer": "dorefa", "keep_float": "first,last", "bc_stochastic": False,
                   "bwn_scale": "filter", "xnor_act_scale": False, "sparsity": 0.9, "prune_scope": "layer",
                   "prune_start": 0.0, "prune_end": None, "prune_every": 100, "epochs": 1, "ratio": None,
                   "target_macs": None, "filter_criterion": "l1", "sal_t0": 20.0, "sal_tf": 70.0, "sal_shared": False}


def _options(config):
    get = config.get if isinstance(config, dict) else lambda k, d: getattr(config, k, d)
    c = {k: get(k, d) for k, d in CONFIG_DEFAULTS.items()}
    keep = c["keep_float"]
    if not isinstance(keep, str):
        raise ValueError(f"--keep-float must be a comma-separated string, got {keep!r}")
    c["keep_float"] = () if keep in ("", "none") else tuple(k.strip() for k in keep.split(","))
    return c


def prune_end(config):
    """--prune-end in epochs; unset: half the run (the schedule must end before the last epoch does)."""
    get = config.get if isinstance(config, dict) else lambda k, d: getattr(config, k, d)
    end = get("prune_end", None)
    return end if end is not None else get("epochs", CONFIG_DEFAULTS["epochs"]) / 2


def convert_from_config(model, config, schedule=True):
    """Convert ``model`` in place as the configuration says and return it. ``schedule=False``
    (summaries of a fresh model): pruning reaches its final sparsity at once."""
    c = _options(config)
    structure, quant = split_method(c["method"])
    if structure == "prune":
        if c["quantizer"] != "dorefa":
            raise ValueError(f"--method {c['method']} --quantizer {c['quantizer']}: a pruned layer's k-bit weights "
                             "are DoReFa's (the only quantizer here whose statistics ignore the pruned zeros)")
        if c["keep_float"] != ("first", "last"):
            raise ValueError(f"--keep-float does not apply to --method {c['method']}: the first conv and the "
                             "linear layers are never pruned")
        # bc, bwn or w<k>a32 with k >= 2 (split_method checked): a new recipe for each pruned layer
        recipe = None if quant.name == "none" else (
            lambda: weight_recipe(quant, "dorefa", stochastic=c["bc_stochastic"], scale=c["bwn_scale"]))
        start, end = (c["prune_start"], prune_end(c)) if schedule else (0, 0)
        prune(model, c["sparsity"], scope=c["prune_scope"], start_epoch=start, end_epoch=end,
              every=c["prune_every"], weight_quantizer=recipe)
        first = next(n for n, m in model.named_modules() if type(m).__name__ == "Conv2d")
        linears = [n for n, m in model.named_modules() if type(m).__name__ == "Linear"]
        model.compression = {"method": c["method"], "sparsity": c["sparsity"], "prune_scope": c["prune_scope"],
                             "float_layers": [first] + linears}
        return model
    if structure == "sal":
        sal(model, t0=c["sal_t0"], tf=c["sal_tf"], shared=c["sal_shared"],
            binarize=None if quant.name == "none" else quant.name, keep_float=c["keep_float"],
            scale=c["bwn_scale"], stochastic=c["bc_stochastic"])
        return model
    convert(model, quant.name, quantizer=c["quantizer"], keep_float=c["keep_float"],
            stochastic=c["bc_stochastic"], scale=c["bwn_scale"], act_scale=c["xnor_act_scale"])
    model.compression["method"] = c["method"]  # filter-prune+...: the thinning is recorded apart
    return model


def filter_prune_from_config(model, config):
    """``thinning.filter_prune`` with the run's --ratio or --target-macs (neither: half the filters)."""
    c = _options(config)
    if c["ratio"] is not None and c["target_macs"] is not None:
        raise ValueError("--ratio and --target-macs: give one of them")
    ratio = 0.5 if c["ratio"] is None and c["target_macs"] is None else c["ratio"]
    return filter_prune(model, ratio=ratio, criterion=c["filter_criterion"], target_macs=c["target_macs"])


def float_model(config, num_classes, channel_counts=None):
    """The zoo model a run configuration names (``model``, ``width``), in float, thinned to
    ``channel_counts`` (``model.channel_counts`` of a filter-pruned model, stored in its checkpoints)."""
    get = config.get if isinstance(config, dict) else lambda k: getattr(config, k)
    model = models.get(get("model"), num_classes=num_classes, width=get("width"))
    if channel_counts:
        thin_to_shapes(model, channel_counts)
    return model


def build_model(config, num_classes, schedule=True, channel_counts=None):
    """``float_model`` converted to the configuration's method: the network a checkpoint of the run
    loads into. A filter-prune run's thinning happens once, in training (``filter_prune_from_config``),
    and its checkpoints carry the channel counts; without them the model is the unthinned one."""
    return convert_from_config(float_model(config, num_classes, channel_counts), config, schedule)


def summary_model(config, num_classes):
    """The model ``tinycomp summary --model ... --method ...`` describes, before any training: pruned
    at once to its final sparsity, and a filter-prune one thinned as the options say (on its initial
    weights: which filters go depends on training, how many does not)."""
    model = float_model(config, num_classes)
    if split_method(_options(config)["method"])[0] == "filter-prune":
        filter_prune_from_config(model, config)
    return convert_from_config(model, config, schedule=False)


def load_float_state(model, state, float_keys):
    """Load ``state`` (e.g. a float checkpoint's) into a converted ``model``. ``float_keys``: the
    state-dict keys of the same network in float; the keys the compression added (PACT's alpha,
    LSQ's step, pruning masks) may be missing from ``state`` and keep their initial values.
    Returns the names of those left out; raises ValueError as load_state_dict."""
    keys = model.state_dict()
    float_keys = set(float_keys)
    missing = [k for k in keys if k not in state]
    if any(k in float_keys for k in missing) or any(k not in keys for k in state):
        model.load_state_dict(state)  # raises, naming what is missing or does not belong
    model.load_state_dict(state, strict=False)
    return missing
