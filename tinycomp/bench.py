"""``tinycomp bench``: an exported model on ``tinycomp.runtime`` against the same network in tinycomp
float, per layer and in total, at a few batch sizes, on this machine.

The float side is the zoo model of the exported one's name, width and classes (thinned to the
file's channel counts for a filter-pruned model), built fresh (random weights: only its speed is
compared) and run in eval mode under no_grad. For each batch size, both sides are first checked
(finite logits of shape (N, classes)), their first call timed apart (it may compile kernels), then
run for one warm-up round and ``repeats`` timed rounds; a round runs the runtime, the float model,
the runtime op by op (``Model.profile``) and the float model with its blocks timed, so the two sides
alternate and meet the same machine. Figures are medians over the rounds (time.perf_counter); a
speedup is the median over rounds of float time / runtime time.

Ops are matched by the training model's names: the stem "conv1" (conv1, bn1 and stem_act on the float
side, folded into one op at export), "layer<I>.<J>", "pool", "linear". An op with no module on the
float side (the pooling, a function call there) is timed as the gap between its neighbours.
"""
import contextlib
import time

import numpy as np

from . import models
from .autograd import no_grad
from .compress.thinning import thin_to_shapes
from .export_sparse import channel_record
from .machine import KERNEL_FLAGS
from .tensor import Tensor

WARMUP = 1
STEM = ("conv1", "bn1", "stem_act")


class BenchError(ValueError):
    """A model the benchmark cannot run (its output fails the check made before timing)."""


def float_model(model):
    """The tinycomp float network of exported ``model``'s name, width and classes, in eval mode; a
    thinned model's (its header's "thinned") thinned to the same channel counts, so that both sides run
    the same shapes."""
    net = models.get(model.model, num_classes=model.num_classes, width=model.width)
    thinned = model.header.get("thinned")
    if thinned:
        try:
            thin_to_shapes(net, channel_record(net, thinned))
        except (ValueError, TypeError, KeyError, AttributeError) as exc:  # a malformed record
            raise BenchError(f"bench: the header's channel counts do not fit {model.model}: {exc}") from None
    net.eval()
    return net


@contextlib.contextmanager
def _block_spans(net, names, spans):
    """While open, ``spans[op name]`` collects (start, end) of every float module of that op."""
    modules = dict(net.named_modules())

    def timed(name, module):
        forward = module.forward

        def call(*args, **kwargs):
            start = time.perf_counter()
            out = forward(*args, **kwargs)
            spans.setdefault(name, []).append((start, time.perf_counter()))
            return out

        module.__dict__["forward"] = call  # an instance attribute shadows the class's forward

    parts = [(name, modules[part]) for name in names for part in (STEM if name == "conv1" else (name,))
             if part in modules]
    for name, module in parts:
        timed(name, module)
    try:
        yield
    finally:
        for _, module in parts:
            module.__dict__.pop("forward", None)


def _float_profile(net, x, names):
    """{op name: seconds} of one float pass of ``x`` (a Tensor)."""
    spans = {}
    with _block_spans(net, names, spans):
        net(x)
    bounds = {name: (min(s for s, _ in v), max(e for _, e in v)) for name, v in spans.items()}
    times = {}
    for i, name in enumerate(names):
        if name in bounds:
            times[name] = bounds[name][1] - bounds[name][0]
        elif 0 < i < len(names) - 1 and names[i - 1] in bounds and names[i + 1] in bounds:
            times[name] = bounds[names[i + 1]][0] - bounds[names[i - 1]][1]
        else:
            raise BenchError(f"bench: op {name} has no module of that name in the float {net.__class__.__name__}")
    return times


def _seconds(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def _check(name, out, shape):
    if out.shape != shape:
        raise BenchError(f"bench: the {name} output has shape {out.shape}, expected logits {shape}")
    if not np.all(np.isfinite(out)):
        raise BenchError(f"bench: the {name} output holds NaN or Inf; nothing timed")


def _side(times, n):
    return {"median_s": float(np.median(times)), "min_s": float(np.min(times)),
            "images_per_s": n / float(np.median(times))}


@no_grad()
def bench_batch(model, net, n, repeats, seed=0):
    """The timings of runtime ``model`` and float ``net`` at batch size ``n`` (see the module docstring)."""
    x = np.random.default_rng(seed).standard_normal((n,) + tuple(model.input_shape)).astype(np.float32)
    xt = Tensor(x)
    first_rt, out = _seconds(lambda: model(x))
    _check("runtime", out, (n, model.num_classes))
    first_fl, out = _seconds(lambda: net(xt).data)
    _check("float", out, (n, model.num_classes))
    names = model.op_names
    rt_t, fl_t, rt_ops, fl_ops = [], [], [], []
    for r in range(WARMUP + repeats):
        rt, _ = _seconds(lambda: model(x))
        fl, _ = _seconds(lambda: net(xt))
        _, rt_op = model.profile(x)
        fl_op = _float_profile(net, xt, names)
        if r >= WARMUP:
            rt_t.append(rt), fl_t.append(fl), rt_ops.append(rt_op), fl_ops.append(fl_op)
    layers = [{"name": name, "runtime_s": float(np.median([t[name] for t in rt_ops])),
               "float_s": float(np.median([t[name] for t in fl_ops])),
               "speedup": float(np.median([f[name] / r[name] for r, f in zip(rt_ops, fl_ops)]))} for name in names]
    total = {"runtime": _side(rt_t, n), "float": _side(fl_t, n),
             "speedup": float(np.median(np.array(fl_t) / np.array(rt_t))),
             "first_call_s": {"runtime": first_rt, "float": first_fl}}
    return {"batch_size": n, "total": total, "layers": layers}


def bench(model, batch_sizes=(1, 64), repeats=10):
    """{"model", "width", "method", "num_classes", "float_weights", "repeats", "warmup", "results": one
    ``bench_batch`` per batch size} for runtime ``model``."""
    net = float_model(model)
    return {"model": model.model, "width": model.width, "method": model.method, "num_classes": model.num_classes,
            "float_weights": "random (a fresh zoo model: speed only)", "repeats": repeats, "warmup": WARMUP,
            "results": [bench_batch(model, net, n, repeats) for n in batch_sizes]}


def format_bench(result):
    """The text ``tinycomp bench`` prints for ``result`` (``bench``'s, with "file", "kind", "machine")."""
    m = result["machine"]
    lines = [f"tinycomp bench: {result['model']} (width {result['width']:g}, method {result['method']}) from "
             f"{result['file']} ({result['kind']})",
             "runtime: the exported model on tinycomp.runtime; float: the same network in tinycomp, eval mode, "
             "no_grad, fresh random weights (speed only)",
             f"machine: {m['cpu']}, {m['cores']} cores, flags {' '.join(m['flags']) or 'none of ' + '/'.join(KERNEL_FLAGS)}, "
             f"{m['threads']} Numba threads, BLAS {m['blas']}; "
             f"numpy {m['numpy']}, numba {m['numba']}",
             f"medians of {result['repeats']} rounds after {result['warmup']} warm-up, the two sides alternating; "
             "speedup = float time / runtime time"]
    for r in result["results"]:
        t, n = r["total"], r["batch_size"]
        rt, fl = t["runtime"], t["float"]
        lines.append(f"batch {n}: runtime {1e3 * rt['median_s']:.3f} ms ({rt['images_per_s']:,.1f} images/s), "
                     f"float {1e3 * fl['median_s']:.3f} ms ({fl['images_per_s']:,.1f} images/s): "
                     f"{t['speedup']:.2f}x; first call (compiles) runtime {t['first_call_s']['runtime']:.3f} s, "
                     f"float {t['first_call_s']['float']:.3f} s")
        lines.append(f"  {'layer':<14} {'runtime ms':>11} {'float ms':>11} {'speedup':>8}")
        for layer in r["layers"]:
            lines.append(f"  {layer['name']:<14} {1e3 * layer['runtime_s']:>11.3f} {1e3 * layer['float_s']:>11.3f} "
                         f"{layer['speedup']:>7.2f}x")
    return "\n".join(lines)
