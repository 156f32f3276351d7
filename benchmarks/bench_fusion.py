"""Fusion in the ResNet-20 training step: BatchNorm2d + ReLU and add + ReLU as one op each
(``tinycomp.nn.fused``) against the op-by-op path (``nn.fusion(enabled=False)``), in one process.

    python benchmarks/bench_fusion.py [--threads 2] [--repeats 12] [--batch 128] [--quick]

Validation first: from the same weights, two fused steps and two op-by-op steps give bitwise-equal
parameters and buffers. Then the two steps (two models, same weights) alternate for --repeats
rounds, each round starting with the other (harness.interleaved, rotate); the figure is the median
of the per-round ratios (harness.paired_ratio). Then the time split by op over 3 profiled steps of each.
"""
import os

# sleeping thread pools, as tinycomp sets them, before numpy and numba start (see tinycomp/__init__.py)
import tinycomp_kernels  # noqa: E402,F401  first: it sets every thread-pool variable before numpy starts

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_resnet20_step import make_step  # noqa: E402
from harness import interleaved, paired_ratio, write_report  # noqa: E402

import tinycomp  # noqa: E402
from tinycomp import models, nn  # noqa: E402
from tinycomp.autograd import profile  # noqa: E402

SIDES = {"fused": True, "op by op": False}


def steps(x, y):
    """{side: a training step of its own ResNet-20, all from the same initial weights}."""
    tinycomp.manual_seed(0)
    first = models.get("resnet20")
    out = {}
    for name, enabled in SIDES.items():
        model = models.get("resnet20")
        model.load_state_dict(first.state_dict())
        out[name] = nn.fusion(enabled)(make_step(model, x, y)), model
    return out


def validate(x, y):
    runs = steps(x, y)
    for step, _ in runs.values():
        step(), step()
    states = [model.state_dict() for _, model in runs.values()]
    for key in states[0]:
        if not np.array_equal(states[0][key], states[1][key]):
            raise SystemExit(f"validation failed: {key} differs between the fused and the op-by-op steps")
    print("validated: two fused steps and two op-by-op steps give bitwise-equal parameters and buffers")


def split(step, n=3):
    """(seconds per step, {"op phase": seconds per step}) over ``n`` profiled steps."""
    with profile() as prof:
        t0 = time.perf_counter()
        for _ in range(n):
            step()
        total = (time.perf_counter() - t0) / n
    ops = {f"{name} {phase}": seconds / n for (name, phase), (_, seconds) in prof.table().items()}
    ops["rest (Python, optimizer, graph)"] = total - sum(ops.values())
    return total, ops


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=12)
    ap.add_argument("--quick", action="store_true", help="batch 8, 2 rounds: a smoke run")
    args = ap.parse_args()
    batch, repeats = (8, 2) if args.quick else (args.batch, args.repeats)
    tinycomp.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, 3, 32, 32)).astype(np.float32)
    y = rng.integers(0, 10, batch).astype(np.int64)
    validate(x, y)

    runs = steps(x, y)
    t = interleaved({name: step for name, (step, _) in runs.items()}, repeats=repeats, rotate=True)
    ratio, q25, q75 = paired_ratio(t, "op by op", "fused")
    rows = [{"side": name, "median_s": t[name]["median_s"], "min_s": t[name]["min_s"],
             "images_per_s": batch / t[name]["median_s"], "speedup": ratio if name == "fused" else 1.0}
            for name in SIDES]
    splits = {name: split(step) for name, (step, _) in runs.items()}
    columns = [("side", "side", None), ("median_s", "median s/step", "{:.4f}"), ("min_s", "min s/step", "{:.4f}"),
               ("images_per_s", "images/s", "{:.0f}"), ("speedup", "speed-up (median of paired ratios)", "{:.3f}")]
    extra = {"batch": batch, "threads": args.threads, "repeats": repeats, "paired_ratio_q25_q75": [q25, q75],
             "time_split_s": {name: ops for name, (_, ops) in splits.items()}}
    write_report("fusion" + ("_quick" if args.quick else ""), rows, columns, extra=extra,
                 title=f"ResNet-20 training step, fused vs op by op (batch {batch})")
    print(f"\nspeed-up of fusion: {ratio:.3f} (25-75 %: {q25:.3f}-{q75:.3f}) over {repeats} paired rounds")
    for name, (total, ops) in splits.items():
        print(f"\ntime split per step, {name} (s, profiled; {total:.3f} s a step):")
        for k, v in sorted(ops.items(), key=lambda kv: -kv[1]):
            print(f"  {k:<40} {v:.4f}  ({100 * v / total:.0f} %)")


if __name__ == "__main__":
    main()
