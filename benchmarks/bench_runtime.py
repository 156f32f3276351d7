"""Exported compressed models on ``tinycomp.runtime`` against the same network in float: tinycomp's
training graph in eval mode and, when installed, PyTorch's eager float inference (a separate
process, same thread count). Batch 1 (latency) and 64 (throughput).

Each case is a zoo model converted as ``tinycomp train`` converts it (``compress.run_config``: at its
final sparsity, SAL rounded), with non-trivial BatchNorm statistics (one training-mode pass over
random images), random weights: only speed is measured here; accuracy is the training runs' job.

Validation first: the runtime's predictions equal the eval-mode training graph's on a batch of 64
random images (argmax agreement >= 99 %: random weights leave many near ties), and PyTorch's float
logits equal tinycomp's float model's for the same weights (rtol 1e-3). Then per batch size: the
runtime model, tinycomp float and the float runtime (the float model exported) round-robin
(``harness.interleaved``, rotated) and the speed-ups as medians of per-round ratios
(``harness.paired_ratio``); PyTorch's medians come from its process, run right after, per model.

    flock /tmp/tinycomp-bench.lock python benchmarks/bench_runtime.py [--quick] [--repeats 20] [--no-torch]
        [--only sal,prune]   (only the cases whose names contain one of the words; results/runtime_only_sal_prune.*)
"""
import os
import sys

import tinycomp_kernels  # noqa: E402,F401  first: it sets every thread-pool variable before numpy starts
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import json  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402

import numpy as np  # noqa: E402
from bench_resnet20_step import torch_available  # noqa: E402
from harness import bench_run, interleaved, paired_ratio, write_report  # noqa: E402

import tinycomp  # noqa: E402
from tinycomp import Tensor, models, nn, no_grad, runtime  # noqa: E402
from tinycomp.compress.run_config import summary_model  # noqa: E402
from tinycomp.export import export  # noqa: E402
from tinycomp_kernels import thread_pools  # noqa: E402

NORMALIZE = {"mean": [0.49, 0.48, 0.45], "std": [0.25, 0.24, 0.26]}
CASES = (("resnet20", "none", {}), ("resnet20", "bc", {}), ("resnet20", "bwn", {}), ("resnet20", "xnor", {}),
         ("resnet20", "w2a2", {}), ("resnet20", "w4a4", {}), ("resnet20", "prune", {"sparsity": 0.9}),
         ("resnet20", "prune", {"sparsity": 0.95}), ("resnet20", "sal", {}),
         ("resnet18", "none", {}), ("resnet18", "bwn", {}), ("resnet18", "xnor", {}))


def case_name(name, method, options):
    return f"{name} {method}" + "".join(f" {v:g}" for v in options.values())


@no_grad()
def calibrated(m, x):
    """``m`` in eval mode with the running statistics of one training-mode pass over ``x``."""
    for b in m.modules():
        if type(b) is nn.BatchNorm2d:
            b.momentum = 1.0
    m.train()
    m(Tensor(x))
    for b in m.modules():
        if type(b) is nn.BatchNorm2d:
            b.momentum = 0.1
    m.eval()
    return m


def build(name, method, options, x, tmp):
    """(training-graph model in eval mode, runtime model of its export)."""
    tinycomp.manual_seed(0)
    m = calibrated(summary_model({"model": name, "width": 1.0, "method": method, **options}, 10), x)
    path = os.path.join(tmp, f"{name}-{method}-{len(os.listdir(tmp))}.npz")
    export(m, path, {"model": name, "width": 1.0, "num_classes": 10, "normalize": NORMALIZE})
    return m, runtime.load(path)


def agreement(m, rt, x):
    with no_grad():
        ref = m(Tensor(x)).data
    return float(np.mean(ref.argmax(1) == rt(x).argmax(1)))


def run_torch(name, float_model, x, batch_sizes, threads, repeats, tmp):
    w = os.path.join(tmp, f"torch-{name}-w.npz")
    xi = os.path.join(tmp, f"torch-{name}-x.npz")
    np.savez(w, **{k: v for k, v in float_model.state_dict().items()})
    np.savez(xi, x=x)
    env = {k: v for k, v in os.environ.items() if k not in thread_pools.SETTINGS}
    env["OMP_NUM_THREADS"] = str(threads)
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "torch_infer.py")
    out = subprocess.run([sys.executable, script, "--model", name, "--threads", str(threads), "--weights", w,
                          "--input", xi, "--batch-sizes", ",".join(map(str, batch_sizes)), "--repeats", str(repeats)],
                         capture_output=True, text=True, env=env, check=True)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    with no_grad():
        ref = float_model(Tensor(x)).data
    if not np.allclose(np.asarray(res["logits"], np.float32), ref, rtol=1e-3, atol=1e-3 * np.abs(ref).max()):
        raise SystemExit(f"validation failed: PyTorch's {name} logits differ from tinycomp's float model")
    return res


def main():
    no_torch = "--no-torch" in sys.argv
    if no_torch:
        sys.argv.remove("--no-torch")
    only = None  # --only sal,prune: the cases whose names contain one of these (results/runtime_only_sal_prune.*)
    if "--only" in sys.argv:
        at = sys.argv.index("--only")
        only = sys.argv[at + 1].split(",") if at + 1 < len(sys.argv) else []
        del sys.argv[at:at + 2]
        if not only or not any(w in case_name(*c) for c in CASES for w in only):
            print(f"bench_runtime: --only needs words of the case names, e.g. 'sal,prune'; cases: "
                  f"{', '.join(case_name(*c) for c in CASES)}", file=sys.stderr)
            sys.exit(2)
    args, threads = bench_run(__doc__, repeats=20, quick_help="two cases, batch 1 and 8, 2 rounds: a smoke run")
    repeats = 2 if args.quick else args.repeats
    batch_sizes = (1, 8) if args.quick else (1, 64)
    cases = CASES[:4:3] if args.quick else CASES
    if only:
        cases = [c for c in cases if any(w in case_name(*c) for w in only)]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 3, 32, 32)).astype(np.float32)
    rows, torch_side = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        floats = {}
        for name in sorted({c[0] for c in cases}):
            floats[name] = build(name, "none", {}, x, tmp)
            if torch_available() and not no_torch:
                torch_side[name] = run_torch(name, floats[name][0], x, batch_sizes, threads, repeats, tmp)
        for name, method, options in cases:
            label = case_name(name, method, options)
            m, rt = build(name, method, options, x, tmp)
            agree = agreement(m, rt, x)
            if agree < 0.99:
                raise SystemExit(f"validation failed: {label}: the runtime agrees with the training graph on "
                                 f"{agree:.1%} of 64 images")
            fm, frt = floats[name]
            for n in batch_sizes:
                xb = np.ascontiguousarray(np.resize(x, (n,) + x.shape[1:]))
                txb = Tensor(xb)

                def float_graph(fm=fm, txb=txb):
                    with no_grad():
                        return fm(txb)

                fns = {"runtime": lambda rt=rt, xb=xb: rt(xb), "float": float_graph,
                       "float runtime": lambda frt=frt, xb=xb: frt(xb)}
                t = interleaved(fns, repeats=repeats, rotate=True)
                row = {"case": label, "batch": n, "agreement": agree, "layers": rt.describe().count("\n") + 1,
                       "runtime_ms": t["runtime"]["median_s"] * 1e3, "float_ms": t["float"]["median_s"] * 1e3,
                       "float_runtime_ms": t["float runtime"]["median_s"] * 1e3,
                       "vs_float": paired_ratio(t, "float", "runtime")[0],
                       "vs_float_runtime": paired_ratio(t, "float runtime", "runtime")[0]}
                if name in torch_side:
                    tt = torch_side[name]["times"][str(n)]["median_s"]
                    row["torch_ms"], row["vs_torch"] = tt * 1e3, tt / t["runtime"]["median_s"]
                rows.append(row)
                print(f"{label} batch {n}: runtime {row['runtime_ms']:.2f} ms, x{row['vs_float']:.2f} tinycomp float, "
                      f"x{row['vs_float_runtime']:.2f} float runtime"
                      + (f", x{row['vs_torch']:.2f} PyTorch ({row['torch_ms']:.2f} ms)" if "vs_torch" in row else ""),
                      flush=True)
    columns = [("case", "model / method", None), ("batch", "batch", None), ("agreement", "agreement", "{:.0%}"),
               ("runtime_ms", "runtime ms", "{:.2f}"), ("float_ms", "tinycomp float ms", "{:.2f}"),
               ("float_runtime_ms", "float runtime ms", "{:.2f}"), ("torch_ms", "PyTorch float ms", "{:.2f}"),
               ("vs_float", "x tinycomp float", "{:.2f}x"), ("vs_float_runtime", "x float runtime", "{:.2f}x"),
               ("vs_torch", "x PyTorch", "{:.2f}x")]
    name = "runtime" + ("_quick" if args.quick else "") + ("_only_" + "_".join(only).replace(" ", "-") if only else "")
    write_report(name, rows, columns,
                 extra={"threads": threads, "rounds": repeats,
                        "torch": {k: {"version": v["torch"], "threads": v["threads"], "times": v["times"]}
                                  for k, v in torch_side.items()}},
                 title=f"Exported models on tinycomp.runtime vs float (tinycomp, PyTorch), {threads} threads")


if __name__ == "__main__":
    main()
