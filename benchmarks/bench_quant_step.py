"""Quantized ResNet-20 training steps against the float step, side by side in one run.

Batch 128, 3×32×32 float32: forward, cross-entropy, backward, SGD step (Nesterov momentum 0.9,
weight decay 5e-4) and the compression hook (BC's clip). Methods: none (float), bc, bwn, xnor, w2a2
(DoReFa), each converted with tinycomp.compress.convert from the same float weights. The steps are
timed round-robin (``harness.interleaved``, rotating) so machine drift hits every method alike, and
the overhead is the median of per-round ratios against the float step. Also reports the share of
each step spent in the quantizer ops (profiled separately).

    python benchmarks/bench_quant_step.py [--threads 2] [--repeats 10] [--quick]

Validation first: every method's loss is finite and its first-step gradients reach every latent weight.
"""
import os

# sleeping thread pools, as tinycomp sets them, before numpy and numba start (see tinycomp/__init__.py)
import tinycomp_kernels  # noqa: E402,F401  first: it sets every thread-pool variable before numpy starts

import sys  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_resnet20_step import make_step  # noqa: E402
from harness import bench_run, interleaved, paired_ratio, write_report  # noqa: E402

import tinycomp  # noqa: E402
from tinycomp import compress, models  # noqa: E402
from tinycomp.autograd import profile  # noqa: E402

METHODS = ("none", "bc", "bwn", "xnor", "w2a2")
QUANTIZER_OPS = {"SignSTE", "StochasticSign", "BinarizeWeight", "TernarizeWeight", "DorefaWeight",
                 "DorefaActivation", "PACT", "LSQ", "Mul"}  # Mul: the activation scale, off by default


def main():
    args, threads = bench_run(__doc__, repeats=10, quick_help="3 rounds, for a smoke run")
    repeats = 3 if args.quick else args.repeats
    tinycomp.manual_seed(0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((128, 3, 32, 32)).astype(np.float32)
    y = rng.integers(0, 10, 128).astype(np.int64)
    state = models.get("resnet20").state_dict()
    steps, quant_share = {}, {}
    for method in METHODS:
        model = models.get("resnet20")
        model.load_state_dict(state)
        compress.convert(model, method)
        step = make_step(model, x, y, lr=0.01, after_step=compress.after_step)
        if not np.isfinite(step().item()):  # validation: a finite loss, gradients on every weight
            raise SystemExit(f"validation failed: {method}'s loss is not finite")
        missing = [n for n, p in model.named_parameters() if p.grad is None]
        if missing:
            raise SystemExit(f"validation failed: {method} left no gradient on {missing[:3]}")
        with profile() as prof:
            step()
        table = prof.table()
        total = sum(s for _, s in table.values())
        quant_share[method] = sum(s for (op, _), (_, s) in table.items() if op in QUANTIZER_OPS) / total
        steps[method] = step
    timings = interleaved(steps, repeats=repeats, warmup=1, rotate=True)
    rows = []
    for method in METHODS:
        med, q25, q75 = paired_ratio(timings, method, "none")
        t = timings[method]
        rows.append({"method": method, "median_s": t["median_s"], "min_s": t["min_s"],
                     "images_per_s": 128 / t["median_s"], "overhead": med - 1, "overhead_iqr": f"{q25 - 1:+.1%} .. {q75 - 1:+.1%}",
                     "quantizer_share": quant_share[method]})
    columns = [("method", "method", None), ("median_s", "median s/step", "{:.4f}"), ("min_s", "min s/step", "{:.4f}"),
               ("images_per_s", "images/s", "{:.0f}"), ("overhead", "vs float step", "{:+.1%}"),
               ("overhead_iqr", "per-round IQR", None), ("quantizer_share", "op time in quantizers", "{:.1%}")]
    write_report("quant_step" + ("_quick" if args.quick else ""), rows, columns,
                 extra={"batch": 128, "threads": threads, "rounds": repeats},
                 title="Quantized ResNet-20 training steps vs the float step (batch 128)")


if __name__ == "__main__":
    main()
