"""Accuracy against measured latency: trained runs, exported and timed on tinycomp.runtime.

For each run folder given (``tinycomp train --out RUN``): the final-epoch test accuracy from its
``log.jsonl``, the method and epochs from its ``config.json``; its ``last.npz`` is exported to a
temporary file and loaded by ``tinycomp.runtime``. Validation first: the exported model's predictions
equal the eval-mode training graph's on 500 CIFAR-10 test images (``tinycomp.evaluate.agreement``
on the whole test set is ``tinycomp eval MODEL --against RUN/last.npz``). Then every model is timed
at batch 1 (latency) and batch 64 (throughput), round-robin over the models (``harness.interleaved``,
rotated), medians of the repeats; the machine is recorded. With matplotlib installed (``pip install
tinycomp-engine[plots]``) the script draws ``benchmarks/results/accuracy_latency.png``.

    flock /tmp/tinycomp-bench.lock python benchmarks/accuracy_latency.py RUN [RUN ...] [--repeats 20] \\
        [--data-dir ../shared/data]

A figure is the speed of this machine, with the path each layer took on it (``tinycomp.runtime.paths``:
on AVX2 the k-bit and binary-weight layers run the float conv).

A run whose checkpoint is not on this machine can still be placed: give its results prefix instead
(``docs/results/resnet20_bc_cifar10`` for ``..._config.json`` and ``..._log.jsonl``, the files the
README's runs keep) or a run folder without ``last.npz``. Its accuracy comes from the log, and its time
from the same configuration with random weights (BatchNorm statistics from one training-mode pass over
the 500 test images it is then checked on), exported
and run the same way: for methods whose layers have the same shapes and paths whatever the weights
(none, bc, bwn, xnor, ternary, w<k>a<m>). Pruned, filter-pruned and SAL runs need their checkpoint
(their kept weights decide the cost). The table says which rows were timed which way.
"""
import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import tinycomp_kernels  # noqa: E402,F401  first: it sets every thread-pool variable before numpy starts
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import re  # noqa: E402

import numpy as np  # noqa: E402
from bench_runtime import calibrated  # noqa: E402
from harness import RESULTS, interleaved, pyplot, write_report  # noqa: E402

import tinycomp  # noqa: E402
from tinycomp import runtime  # noqa: E402
from tinycomp.autograd import no_grad  # noqa: E402
from tinycomp.compress.run_config import summary_model  # noqa: E402
from tinycomp.export import export  # noqa: E402
from tinycomp.data import Normalize, channel_stats, load_cifar  # noqa: E402
from tinycomp.evaluate import model_of_checkpoint  # noqa: E402
from tinycomp.export import export_checkpoint  # noqa: E402
from tinycomp.tensor import Tensor  # noqa: E402

BATCHES = (1, 64)
CHECK_IMAGES = 500


def run_files(path):
    """(config.json, log.jsonl, last.npz or None, name) of a run folder or a results prefix."""
    path = Path(path)
    if path.is_dir():
        checkpoint = path / "last.npz"
        return path / "config.json", path / "log.jsonl", checkpoint if checkpoint.exists() else None, path.name
    config, log = Path(f"{path}_config.json"), Path(f"{path}_log.jsonl")
    if not (config.exists() and log.exists()):
        raise SystemExit(f"{path}: neither a run folder nor a results prefix ({config.name} and {log.name} "
                         f"next to each other)")
    return config, log, None, path.name


def weight_independent(method):
    """Whether a model of this method has the same layer shapes and paths whatever its weights."""
    return method in ("none", "bc", "bwn", "xnor", "ternary") or re.fullmatch(r"w\d+a\d+", method) is not None


def run_record(path):
    """{"run", "method", "epochs", "test_acc", "checkpoint", "config", "timed_on"} of a run, from its files."""
    config, log, checkpoint, name = run_files(path)
    cfg = json.loads(config.read_text())
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    epochs = [r for r in lines if "test_acc" in r and r.get("test_acc") is not None]
    if not epochs:
        raise SystemExit(f"{log} has no epoch with a test accuracy")
    last = epochs[-1]
    if last["epoch"] != cfg["epochs"]:
        print(f"note: {path} stopped at epoch {last['epoch']} of {cfg['epochs']}")
    method = cfg.get("method", "none")
    if checkpoint is None and not weight_independent(method):
        raise SystemExit(f"{path}: a {method} run is timed from its checkpoint (its kept weights decide the cost), "
                         f"and there is no last.npz here")
    model = cfg.get("model", "resnet20")
    start = ", from float" if cfg.get("init") else ""   # a fine-tune of a float checkpoint (--init)
    label = (f"{method} ({last['epoch']} ep{start})" if model == "resnet20"
             else f"{model} {method} ({last['epoch']} ep{start})")
    return {"run": name, "method": method, "label": label, "epochs": last["epoch"],
            "test_acc": last["test_acc"], "checkpoint": None if checkpoint is None else str(checkpoint),
            "config": cfg, "timed_on": "checkpoint" if checkpoint else "config, random weights"}


def config_model(cfg, images):
    """The run's network with random weights, BatchNorm statistics from one training-mode pass
    (``bench_runtime.calibrated``, as the runtime benchmark builds its models)."""
    tinycomp.manual_seed(0)
    return calibrated(summary_model(cfg, 10), images)


@no_grad()
def validate(record, exported, images, model=None):
    """The exported model's predictions against its checkpoint's (or ``model``'s) on ``images``."""
    least = 0.99 if model is not None else 0.999  # random weights leave near ties
    if model is None:
        model, _ = model_of_checkpoint(record["checkpoint"])
    model.eval()
    ref, out = model(Tensor(images)).data, exported(images)
    agree = float((ref.argmax(axis=1) == out.argmax(axis=1)).mean())
    if agree < least:
        raise SystemExit(f"validation failed: {record['run']}: the exported model agrees with its checkpoint on "
                         f"{agree:.1%} of {len(images)} test images")
    return agree


def plot(rows, path):
    plt = pyplot()
    if plt is None:
        return
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    markers = "osD^vP*Xh<>p"
    ranked = sorted(rows, key=lambda r: -r["test_acc"])   # legend from the most accurate down
    for ax, key, title in ((axes[0], "b1_ms", "latency, batch 1 (ms)"), (axes[1], "b64_ms_per_image",
                                                                           "batch 64, ms per image")):
        for i, r in enumerate(ranked):   # a legend, not labels beside points: close points' labels overlap
            ax.scatter(r[key], 100 * r["test_acc"], marker=markers[i % len(markers)], s=40,
                       label=f"{r['label']}: {100 * r['test_acc']:.2f} %")
        ax.set_xlabel(title)
        ax.margins(x=0.15)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("CIFAR-10 test accuracy, %")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="center right", fontsize=8, frameon=False)
    fig.suptitle("CIFAR-10 runs on tinycomp.runtime: accuracy against measured time")
    fig.tight_layout(rect=(0, 0, 0.74, 1))   # the right quarter for the legend
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="*", help="run folders of tinycomp train (config.json, log.jsonl, last.npz), or "
                                            "results prefixes such as docs/results/resnet20_bc_cifar10")
    ap.add_argument("--plot-only", action="store_true", help="redraw the plot from results/accuracy_latency.json")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--data-dir", default=os.environ.get("TINYCOMP_DATA"))
    args = ap.parse_args()
    if args.plot_only:
        plot(json.loads((RESULTS / "accuracy_latency.json").read_text())["rows"], RESULTS / "accuracy_latency.png")
        return
    if not args.runs:
        ap.error("give at least one run folder (or --plot-only)")
    import numba
    from threadpoolctl import threadpool_limits

    numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    threadpool_limits(args.threads, user_api="blas")
    records = [run_record(f) for f in args.runs]
    tmp = Path(tempfile.mkdtemp(prefix="tinycomp-acc-latency-"))
    data = load_cifar("cifar10", root=args.data_dir, download=False, progress=False)
    models = {}
    for r in records:
        path = tmp / f"{r['run']}.npz"
        reference = None
        if r["checkpoint"]:
            export_checkpoint(r["checkpoint"], path)
        else:  # the training set's statistics, as tinycomp train normalises
            cfg = r["config"]
            mean, std = channel_stats(data.train_images)
            reference = config_model(cfg, Normalize(mean, std)(data.test_images[:CHECK_IMAGES]))
            export(reference, path, {"model": cfg["model"], "width": cfg.get("width", 1.0), "num_classes": 10,
                                     "normalize": {"mean": [float(v) for v in mean], "std": [float(v) for v in std]}})
        models[r["run"]] = runtime.load(path)
        norm = Normalize(models[r["run"]].normalize["mean"], models[r["run"]].normalize["std"])
        images = norm(data.test_images[:CHECK_IMAGES])
        r["agreement_500"] = validate(r, models[r["run"]], images, reference)
        r["file_bytes"] = path.stat().st_size
    rng = np.random.default_rng(0)
    inputs = {n: rng.standard_normal((n, 3, 32, 32)).astype(np.float32) for n in BATCHES}
    for n in BATCHES:
        fns = {r["run"]: (lambda m=models[r["run"]], x=inputs[n]: m(x)) for r in records}
        timings = interleaved(fns, repeats=args.repeats, rotate=True)
        for r in records:
            r[f"b{n}_ms"] = 1e3 * timings[r["run"]]["median_s"]
    for r in records:
        r["b64_ms_per_image"] = r["b64_ms"] / 64
    columns = [("label", "method (epochs)", None), ("test_acc", "test acc", "{:.2%}"), ("b1_ms", "batch 1, ms", "{:.2f}"),
               ("b64_ms", "batch 64, ms", "{:.1f}"), ("b64_ms_per_image", "ms / image at 64", "{:.3f}"),
               ("file_bytes", "file bytes", "{:,}"), ("agreement_500", "agreement (500 images)", "{:.1%}"),
               ("timed_on", "timed on", None)]
    for r in records:
        r.pop("config")
    write_report("accuracy_latency", records, columns, extra={"threads": args.threads, "repeats": args.repeats},
                 title="Accuracy against latency, exported CIFAR-10 runs on tinycomp.runtime")
    plot(records, RESULTS / "accuracy_latency.png")


if __name__ == "__main__":
    main()
