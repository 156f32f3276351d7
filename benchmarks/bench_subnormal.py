"""What subnormal weights cost on this CPU: a ResNet-20 conv layer's training pass (forward, input
and weight gradients, batch 128) with a weight of which 16 % of the entries are float32-subnormal
(≈ 1e-40, the share a SAL layer's W_eff reached mid-run without the guard of
``tinycomp.compress.sal.FLUSH_BELOW``) against the same weight with those entries flushed to 0.

    python benchmarks/bench_subnormal.py [--threads 2] [--repeats 10] [--quick]

Intel cores compute an operation on a subnormal operand or result through a microcode assist,
AMD Zen cores mostly at full speed: the ratio says which kind this CPU is. Validation first: both
weights give outputs and gradients equal within float32 rounding (the subnormal entries add < 1e-38).
"""
import os
import sys

import tinycomp_kernels  # noqa: E402,F401  first: it sets every thread-pool variable before numpy starts
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import bench_run, interleaved, paired_ratio, write_report  # noqa: E402

from tinycomp import Tensor, functional as F  # noqa: E402

LAYERS = [(16, 32), (32, 16), (64, 8)]  # (channels, plane side) of ResNet-20's three stages
SUBNORMAL_SHARE = 0.16


def weights(c, rng):
    w = rng.standard_normal((c, c, 3, 3)).astype(np.float32) * np.float32(0.1)
    tiny = rng.random(w.shape) < SUBNORMAL_SHARE
    subnormal = np.where(tiny, w * np.float32(1e-39), w).astype(np.float32)
    assert np.all(np.abs(subnormal[tiny]) < np.finfo(np.float32).tiny)
    return subnormal, np.where(tiny, np.float32(0), w).astype(np.float32)


def training_pass(x, w, dout):
    xt, wt = Tensor(x, requires_grad=True), Tensor(w, requires_grad=True)
    y = F.conv2d(xt, wt, padding=1)
    y.backward(dout)
    return y.data, xt.grad, wt.grad


def main():
    args, threads = bench_run(__doc__, repeats=10, quick_help="batch 16, 3 repeats")
    batch, repeats = (16, 3) if args.quick else (128, args.repeats)
    rng = np.random.default_rng(0)
    rows = []
    for c, side in LAYERS:
        x = rng.standard_normal((batch, c, side, side)).astype(np.float32)
        dout = rng.standard_normal((batch, c, side, side)).astype(np.float32) * np.float32(1e-3)
        subnormal, flushed = weights(c, rng)
        for got, want in zip(training_pass(x, subnormal, dout), training_pass(x, flushed, dout)):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        t = interleaved({"subnormal": lambda: training_pass(x, subnormal, dout),
                         "flushed": lambda: training_pass(x, flushed, dout)}, repeats=repeats, rotate=True)
        ratio, q25, q75 = paired_ratio(t, "subnormal", "flushed")
        rows.append({"layer": f"{c} ch {side}x{side}, batch {batch}",
                     "flushed ms": round(t["flushed"]["median_s"] * 1e3, 2),
                     "subnormal ms": round(t["subnormal"]["median_s"] * 1e3, 2),
                     "subnormal / flushed (paired)": round(ratio, 2), "middle half": f"{q25:.2f}-{q75:.2f}"})
        print(rows[-1], flush=True)
    write_report("subnormal" + ("_quick" if args.quick else ""), rows, [(k, k, None) for k in rows[0]],
                 title=f"Subnormal weights in a conv's training pass ({SUBNORMAL_SHARE:.0%} of W), {threads} threads")


if __name__ == "__main__":
    main()
