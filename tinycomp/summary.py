"""Model summary: per-layer parameters, MACs and memory, found by running one forward pass.

Every leaf module's ``forward`` is wrapped for one call on a dummy input so its input and output
shapes are recorded; then
    Conv2d  MACs = OH·OW·O·(C / groups)·KH·KW      (per image)
    Linear  MACs = in_features · out_features
    others  0 MACs (BatchNorm folds into the convolution before it at inference; pooling and
            activations are comparisons and additions, not multiply-accumulates)
Parameter memory counts 32 bits per float parameter; activation memory is the float32 output of
each layer for one image. Megabits (Mb) follow the seed talk's tables.
"""
import numpy as np

from . import nn
from .autograd import no_grad
from .tensor import Tensor


def _layer_macs(module, in_shape, out_shape):
    if isinstance(module, nn.Conv2d):
        _, o, oh, ow = out_shape
        kh, kw = module.kernel_size
        return oh * ow * o * (module.in_channels // module.groups) * kh * kw
    if isinstance(module, nn.Linear):
        rows = int(np.prod(out_shape[1:-1])) if len(out_shape) > 2 else 1
        return rows * module.in_features * module.out_features
    return 0


@no_grad()
def summarize(model, input_shape=(3, 32, 32)):
    """Rows per leaf layer (name, type, output shape, params, MACs, activation bytes) and totals."""
    leaves = [(name, m) for name, m in model.named_modules() if not m._modules]
    rows = []

    def wrap(name, module):
        original = module.forward

        def traced(x, *args, **kwargs):
            out = original(x, *args, **kwargs)
            params = int(sum(p.data.size for p in module.parameters(recurse=False)))
            rows.append({"name": name, "type": type(module).__name__, "output": list(out.shape[1:]),
                         "params": params, "macs": int(_layer_macs(module, x.shape, out.shape)),
                         "param_bits": 32 * params, "activation_bytes": int(np.prod(out.shape[1:])) * 4})
            return out

        module.__dict__["forward"] = traced  # an instance attribute shadows the class's forward

    for name, m in leaves:
        wrap(name, m)
    was_training = model.training
    model.eval()
    try:
        model(Tensor(np.zeros((1,) + tuple(input_shape), np.float32)))
    finally:
        for _, m in leaves:
            m.__dict__.pop("forward", None)
        model.train(was_training)
    total_params = int(sum(p.data.size for p in model.parameters()))
    totals = {"params": total_params, "macs": int(sum(r["macs"] for r in rows)),
              "param_bits": 32 * total_params, "param_megabits": 32 * total_params / 1e6,
              "param_bytes": 4 * total_params, "activation_bytes": int(sum(r["activation_bytes"] for r in rows))}
    return {"layers": rows, "total": totals}


def format_summary(summary, title=""):
    lines = [title] if title else []
    lines.append(f"{'layer':<28} {'type':<18} {'output':<16} {'params':>10} {'MACs':>13}")
    for r in summary["layers"]:
        if r["params"] or r["macs"]:
            lines.append(f"{r['name']:<28} {r['type']:<18} {'x'.join(map(str, r['output'])):<16} "
                         f"{r['params']:>10,} {r['macs']:>13,}")
    t = summary["total"]
    lines.append(f"total: {t['params']:,} parameters ({t['param_megabits']:.2f} Mb at 32 bits, "
                 f"{t['param_bytes'] / 2**20:.2f} MiB), {t['macs'] / 1e6:.2f} M MACs per image, "
                 f"{t['activation_bytes'] / 2**20:.2f} MiB of float32 activations per image")
    return "\n".join(lines)
