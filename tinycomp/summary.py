"""Model summary: per-layer parameters, storage bits and MACs by precision, found by one forward pass.

Every layer's ``forward`` is wrapped for one call on a dummy input so its output shape is recorded;
then, per image,
    Conv2d  MACs = OH·OW·O·(C / groups)·KH·KW
    Linear  MACs = in_features · out_features
    others  0 MACs (BatchNorm folds into the convolution before it at inference; pooling and
            activations are comparisons and additions, not multiply-accumulates)

Storage, for the model as deployed (docs/methods.md, "Accounting"): a float parameter takes 32 bits;
a quantized layer's weight takes its recipe's bits per element (1 for BC/BWN/XNOR, 2 for ternary,
k for k-bit) plus 32 bits per stored scale (BWN's α per filter, TWN's per-filter scale, one per
layer for DoReFa); its bias and its recipes' learned scales (PACT's α, LSQ's step) 32 bits each.
BatchNorm is counted unfolded, 32 bits per parameter (as Larq does), so a float model's total is
32 bits per parameter. Megabits (Mb, 10^6 bits) follow the seed talk's tables.

A compressed layer of another family (pruned, SAL, ...) describes itself to the summary with four
methods: ``summary_params()`` (its parameters as deployed: kept weights, kept pairs),
``summary_param_bits()`` (its storage bits, index structures included),
``summary_macs(out_shape)`` (the MACs it executes per image) and ``summary_precision()`` ((weight
bits, input bits, MAC kind)); the summary then lists it whole, like a quantized layer.

MACs are split by the precision of both operands: ``binary_macs`` where weights and inputs are both
±1 (XNOR layers: XNOR + popcount), ``kbit_macs`` where both are quantized to at most 8 bits
otherwise, ``float_macs`` where either stays float (BC and BWN layers multiply float inputs by ±α:
additions and subtractions, but on float data).
"""
import numpy as np

from . import nn
from .autograd import no_grad
from .tensor import Tensor


def _layer_macs(module, out_shape):
    if hasattr(module, "summary_macs"):  # a compressed layer that counts the MACs it executes
        return module.summary_macs(out_shape)
    if isinstance(module, nn.Conv2d):
        _, o, oh, ow = out_shape
        kh, kw = module.kernel_size
        return oh * ow * o * (module.in_channels // module.groups) * kh * kw
    if isinstance(module, nn.Linear):
        rows = int(np.prod(out_shape[1:-1])) if len(out_shape) > 2 else 1
        return rows * module.in_features * module.out_features
    return 0


def _precision(module):
    """(weight bits, input bits, MAC kind) of a layer; float layers are (32, 32, "float")."""
    from .compress.layers import _Quantized
    from .compress.recipes import SignActivation

    if hasattr(module, "summary_precision"):  # a compressed layer that describes itself
        return module.summary_precision()
    if not isinstance(module, _Quantized):
        return 32, 32, "float"
    wb, ib = module.weight_bits, module.input_bits
    if wb == 1 and isinstance(module.input_quantizer, SignActivation):
        return wb, ib, "binary"
    return wb, ib, "kbit" if wb <= 8 and ib <= 8 else "float"


def _params(module):
    """Parameters of ``module`` as deployed: a pruned layer's kept weights, a SAL layer's kept pairs
    (its attention is training-only), else every parameter."""
    if hasattr(module, "summary_params"):
        return module.summary_params()
    return sum(p.data.size for p in module.parameters())


def _param_bits(module):
    """Storage bits of ``module``'s own parameters, as deployed (see the module docstring)."""
    from .compress.layers import _Quantized

    if hasattr(module, "summary_param_bits"):  # a compressed layer that counts its own storage
        return module.summary_param_bits()
    own = [p for p in module.parameters(recurse=False) if p is not None]
    if not isinstance(module, _Quantized) or module.weight_quantizer is None:
        return 32 * sum(p.data.size for p in module.parameters())
    wq = module.weight_quantizer
    bits = module.weight.data.size * wq.bits + 32 * wq.scale_count(module.weight.shape)
    bits += 32 * sum(p.data.size for p in own if p is not module.weight)  # the bias
    bits += 32 * sum(p.data.size for q in (wq, module.input_quantizer) if q is not None for p in q.parameters())
    return bits


def _layers(model):
    """The layers a summary lists: quantized layers whole (their recipes inside them), other leaves."""
    from .compress.layers import _Quantized

    out, inside = [], set()
    for name, m in model.named_modules():
        if any(name.startswith(prefix) for prefix in inside):
            continue
        if isinstance(m, _Quantized) or hasattr(m, "summary_param_bits"):
            out.append((name, m))
            inside.add(name + ".")
        elif not m._modules:
            out.append((name, m))
    return out


@no_grad()
def summarize(model, input_shape=(3, 32, 32)):
    """Rows per layer (name, type, output shape, params, precision, param bits, MACs by kind,
    activation bytes) and totals; ``model.compression`` (set by ``compress.convert``) is reported."""
    layers = _layers(model)
    rows = []

    def wrap(name, module):
        original = module.forward

        def traced(x, *args, **kwargs):
            out = original(x, *args, **kwargs)
            wb, ib, kind = _precision(module)
            rows.append({"name": name, "type": type(module).__name__, "output": list(out.shape[1:]),
                         "params": int(_params(module)),
                         "weight_bits": wb, "input_bits": ib, "mac_kind": kind,
                         "param_bits": int(_param_bits(module)), "macs": int(_layer_macs(module, out.shape)),
                         "activation_bytes": int(np.prod(out.shape[1:])) * 4})
            if hasattr(module, "kept_pairs"):  # SAL: the (o, c) pairs that keep a tap after rounding
                rows[-1].update(kept_pairs=module.kept_pairs(), pairs=module.out_channels * module.in_channels)
            return out

        module.__dict__["forward"] = traced  # an instance attribute shadows the class's forward

    for name, m in layers:
        wrap(name, m)
    was_training = model.training
    model.eval()
    try:
        model(Tensor(np.zeros((1,) + tuple(input_shape), np.float32)))
    finally:
        for _, m in layers:
            m.__dict__.pop("forward", None)
        model.train(was_training)
    listed = {id(p) for _, m in layers for p in m.parameters()}
    unlisted = [p for p in model.parameters() if id(p) not in listed]  # e.g. parameters of a container
    total_params = int(sum(r["params"] for r in rows) + sum(p.data.size for p in unlisted))
    bits = int(sum(r["param_bits"] for r in rows) + 32 * sum(p.data.size for p in unlisted))
    macs = {kind: int(sum(r["macs"] for r in rows if r["mac_kind"] == kind)) for kind in ("float", "binary", "kbit")}
    totals = {"params": total_params, "param_bits": bits, "param_megabits": bits / 1e6, "param_bytes": -(-bits // 8),
              "macs": int(sum(macs.values())), "float_macs": macs["float"], "binary_macs": macs["binary"],
              "kbit_macs": macs["kbit"], "activation_bytes": int(sum(r["activation_bytes"] for r in rows))}
    if any("pairs" in r for r in rows):
        totals.update(kept_pairs=sum(r.get("kept_pairs", 0) for r in rows), pairs=sum(r.get("pairs", 0) for r in rows))
    compression = getattr(model, "compression", None) or {"method": "none", "float_layers": []}
    return {"method": compression["method"], "compression": compression, "layers": rows, "total": totals}


def format_summary(summary, title=""):
    lines = [title] if title else []
    lines.append(f"{'layer':<28} {'type':<14} {'output':<12} {'params':>9} {'w/a bits':>9} {'bits':>11} "
                 f"{'MACs':>12} {'MAC kind':>8}")
    for r in summary["layers"]:
        if r["params"] or r["macs"]:
            wa = f"{r['weight_bits']}/{r['input_bits']}"
            lines.append(f"{r['name']:<28} {r['type']:<14} {'x'.join(map(str, r['output'])):<12} {r['params']:>9,} "
                         f"{wa:>9} {r['param_bits']:>11,} {r['macs']:>12,} {r['mac_kind']:>8}")
    t = summary["total"]
    float_layers = summary["compression"].get("float_layers") or []
    lines.append(f"method: {summary['method']}" + (f" (kept float: {', '.join(float_layers)})" if float_layers else ""))
    lines.append(f"total: {t['params']:,} parameters, {t['param_megabits']:.3f} Mb ({t['param_bytes']:,} bytes; "
                 f"{32 * t['params'] / 1e6:.2f} Mb for as many float32 parameters), {t['macs'] / 1e6:.2f} M MACs per image "
                 f"(float {t['float_macs'] / 1e6:.2f} M, binary {t['binary_macs'] / 1e6:.2f} M, "
                 f"k-bit {t['kbit_macs'] / 1e6:.2f} M), "
                 f"{t['activation_bytes'] / 2**20:.2f} MiB of float32 activations per image")
    if "pairs" in t:
        lines.append(f"SAL pairs kept after rounding: {t['kept_pairs']:,} of {t['pairs']:,} "
                     f"({100 * t['kept_pairs'] / max(t['pairs'], 1):.1f} %)")
    return "\n".join(lines)
