"""Structured against unstructured pruning on ResNet-20: speed against the fraction of MACs removed.

Structured: ``compress.filter_prune(target_macs=f)`` thins the network (a smaller dense model: fewer
filters in every prunable group, residual adds kept consistent), for f = 0.75, 0.5, 0.25 of the
MACs. Unstructured: every 3x3 conv but the first pruned by magnitude to 50-95 % and run on the sparse
op (``F.sparse_conv2d``, the layers of ``bench_pruned_step.py``). Each against the full float model
in the same run: a training step (batch 128; forward, cross-entropy, backward, SGD with momentum)
and inference (eval mode, no autograd, batch 64), both round-robin (``harness.interleaved``,
rotated), speed-ups as medians of per-round ratios (``harness.paired_ratio``).

Validation first: a thinned model reloads (channel record + state dict, as ``eval`` and ``--init``
load it) to bitwise equal logits (that thinning equals the masked model is tests/compress' job); a
sparse model's logits and gradients equal its dense masked twin's (``bench_pruned_step.validate``).

"MACs removed" is the summary's count (``tinycomp.summary.summarize``): for the unstructured models,
the pruned convs' kept weights times their output positions, plus every other layer in full.
With matplotlib installed (``pip install tinycomp-engine[plots]``) the script also draws
``benchmarks/results/structured_vs_unstructured.png``.

    flock /tmp/tinycomp-bench.lock python benchmarks/bench_structured.py [--quick] [--repeats 10]
"""
import os
import sys

import tinycomp_kernels  # noqa: E402,F401  first: it sets every thread-pool variable before numpy starts
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
from bench_pruned_step import SparseMaskedConv2d, make_step, pruned_model, validate  # noqa: E402
from harness import RESULTS, bench_run, interleaved, paired_ratio, pyplot, write_report  # noqa: E402

import tinycomp  # noqa: E402
from tinycomp import Tensor, compress, models, no_grad  # noqa: E402
from tinycomp.summary import summarize  # noqa: E402

MAC_TARGETS = (0.75, 0.5, 0.25)
SPARSITIES = (0.5, 0.7, 0.9, 0.95)


def unstructured_macs(model):
    """The summary's MACs with each pruned conv counted at its kept weights (the summary counts the
    dense shape for this benchmark's local layer class)."""
    modules = dict(model.named_modules())
    total = 0
    for row in summarize(model)["layers"]:
        m = modules[row["name"]]
        total += row["macs"] * float(m.mask.mean()) if isinstance(m, SparseMaskedConv2d) else row["macs"]
    return int(round(total))


def inference(model, x):
    model.eval()

    def run():
        with no_grad():
            return model(Tensor(x))

    return run


def check_thinned(model, x):
    """Raise SystemExit unless the thinned model reloads to the same logits (a round trip through
    its channel record and state dict, as --init and eval load it)."""
    fresh = compress.thin_to_shapes(models.get("resnet20"), model.channel_counts)
    fresh.load_state_dict(model.state_dict())
    model.eval()
    fresh.eval()
    with no_grad():
        a, b = model(Tensor(x)).data, fresh(Tensor(x)).data
    if not np.array_equal(a, b):
        raise SystemExit(f"validation failed: reloaded thinned model differs by {np.abs(a - b).max():.3g}")


def plot(rows, path):
    plt = pyplot()
    if plt is None:
        return
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, key, title in ((axes[0], "train_x", "training step, batch 128"), (axes[1], "infer_x", "inference, batch 64")):
        for kind, marker in (("structured", "o"), ("unstructured", "s")):
            pts = sorted((r["macs_removed"], r[key]) for r in rows if r["kind"] == kind)
            ax.plot([p[0] * 100 for p in pts], [p[1] for p in pts], marker=marker, label=kind)
        ax.axhline(1.0, color="grey", lw=0.8)
        ax.set_xlabel("MACs removed, %")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("speed-up over the full float model")
    axes[0].legend()
    fig.suptitle("ResNet-20: structured (thinned) vs unstructured (sparse kernels) pruning")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


def main():
    args, threads = bench_run(__doc__, repeats=10, quick_help="batch 16, 2 rounds: a smoke run")
    repeats = 2 if args.quick else args.repeats
    tinycomp.manual_seed(0)
    rng = np.random.default_rng(0)
    n_train, n_infer = (16, 8) if args.quick else (128, 64)
    x = rng.standard_normal((n_train, 3, 32, 32)).astype(np.float32)
    y = rng.integers(0, 10, n_train).astype(np.int64)
    xi = x[:n_infer].copy()
    state = models.get("resnet20").state_dict()
    full = models.get("resnet20")
    full.load_state_dict(state)
    full_macs = summarize(full)["total"]["macs"]
    variants = {}
    for f in MAC_TARGETS:
        m = models.get("resnet20")
        m.load_state_dict(state)
        compress.filter_prune(m, target_macs=f)
        check_thinned(m, xi)
        variants[f"structured {f:.0%} MACs"] = ("structured", m, summarize(m)["total"]["macs"])
    for s in SPARSITIES:
        validate(state, s, x, y)
        m = pruned_model(state, s, SparseMaskedConv2d)
        variants[f"unstructured {s:.0%}"] = ("unstructured", m, unstructured_macs(m))
    print("validated: thinned models reload to equal logits; sparse models equal their dense masked twins",
          flush=True)
    train = {"full": make_step(full, x, y)}
    infer = {"full": inference(full, xi)}
    for name, (_, m, _) in variants.items():
        train[name] = make_step(m, x, y)
    for name, fn in train.items():
        fn()  # compile, warm up (and the optimizer's state)
    t_train = interleaved(train, repeats=repeats, rotate=True)
    full.eval()
    for name, (_, m, _) in variants.items():
        infer[name] = inference(m, xi)
    t_infer = interleaved(infer, repeats=repeats, rotate=True)
    rows = []
    for name, (kind, _, macs) in variants.items():
        tr, infr = paired_ratio(t_train, "full", name), paired_ratio(t_infer, "full", name)
        rows.append({"variant": name, "kind": kind, "macs": macs, "macs_removed": 1 - macs / full_macs,
                     "train_ms": t_train[name]["median_s"] * 1e3, "train_x": tr[0],
                     "infer_ms": t_infer[name]["median_s"] * 1e3, "infer_x": infr[0]})
        print(f"{name}: {1 - macs / full_macs:.0%} MACs removed; step {rows[-1]['train_ms']:.0f} ms, x{tr[0]:.2f}; "
              f"inference {rows[-1]['infer_ms']:.1f} ms, x{infr[0]:.2f}", flush=True)
    columns = [("variant", "model", None), ("macs_removed", "MACs removed", "{:.0%}"), ("macs", "MACs", "{:,}"),
               ("train_ms", f"train step ms (batch {n_train})", "{:.0f}"), ("train_x", "step speed-up", "{:.2f}x"),
               ("infer_ms", f"inference ms (batch {n_infer})", "{:.1f}"), ("infer_x", "inference speed-up", "{:.2f}x")]
    name = "structured" + ("_quick" if args.quick else "")
    write_report(name, rows, columns,
                 extra={"threads": threads, "rounds": repeats, "full_macs": full_macs,
                        "full_train_ms": t_train["full"]["median_s"] * 1e3,
                        "full_infer_ms": t_infer["full"]["median_s"] * 1e3},
                 title=f"ResNet-20: structured vs unstructured pruning against the full model, {threads} threads")
    if not args.quick:
        plot(rows, RESULTS / "structured_vs_unstructured.png")


if __name__ == "__main__":
    main()
