"""The quantizers' STEs, forward + backward through autograd, with and without the one-pass kernels.

    python benchmarks/bench_quantize.py [--quick] [--threads 2] [--repeats 15]

Each case runs tinycomp.compress.quantizers' function on a float32 Tensor, then backward with a
fixed cotangent, as a training step does. "numpy": functional.quantize.KERNEL_MIN_SIZE raised out of
reach, so every op takes its NumPy expressions; "kernel": the default, where ops on at least
KERNEL_MIN_SIZE elements with a scalar step or bound call tinycomp_kernels.quantize. Cases: a
(128, 16, 32, 32) activation (ResNet-20's first stage at batch 128) through ste_sign,
dorefa_activation (2 bits), pact (4 bits) and lsq (4 bits, unsigned); the 19 convolution weights of
ResNet-20 through binarize_weight, ste_sign and lsq (signed, 4 bits), one call per layer. Both paths
are checked to give equal outputs and gradients before timing; ratios are per-round ratios of one
interleaved run (harness.paired_ratio).
"""
import os
import sys

import tinycomp_kernels  # noqa: E402,F401  first: it sets every thread-pool variable before numpy starts
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
from harness import bench_run, interleaved, paired_ratio, write_report  # noqa: E402

from tinycomp import Tensor  # noqa: E402
from tinycomp.compress import quantizers as Q  # noqa: E402
from tinycomp.functional import quantize as FQ  # noqa: E402

RESNET20 = [(16, 3, 3, 3)] + [(16, 16, 3, 3)] * 6 + [(32, 16, 3, 3)] + [(32, 32, 3, 3)] * 5 \
    + [(64, 32, 3, 3)] + [(64, 64, 3, 3)] * 5


def step(fn, x, g, scales):
    """fn(x, *scales) and its backward; returns the output and every gradient."""
    t = Tensor(x, requires_grad=True)
    ps = [Tensor(s.copy(), requires_grad=True) for s in scales]
    y = fn(t, *ps)
    y.backward(g)
    return [y.data, t.grad] + [p.grad for p in ps]


def numpy_path(run):
    def call():
        FQ.KERNEL_MIN_SIZE, saved = 1 << 62, FQ.KERNEL_MIN_SIZE
        try:
            return run()
        finally:
            FQ.KERNEL_MIN_SIZE = saved
    return call


def cases(quick):
    rng = np.random.default_rng(0)
    shape = (32, 16, 32, 32) if quick else (128, 16, 32, 32)
    x = rng.standard_normal(shape).astype(np.float32)
    g = rng.standard_normal(shape).astype(np.float32)
    s, a = np.array(0.3, np.float32), np.array(2.0, np.float32)
    act = {
        "ste_sign": (lambda t: Q.ste_sign(t), []),
        "dorefa_activation 2b": (lambda t: Q.dorefa_activation(t, 2), []),
        "pact 4b": (lambda t, p: Q.pact(t, p, 4), [a]),
        "lsq 4b unsigned": (lambda t, p: Q.lsq(t, p, 4, signed=False), [s]),
    }
    for name, (fn, sc) in act.items():
        yield f"{name} {shape}", (lambda fn=fn, sc=sc: step(fn, x, g, sc))
    ws = [(rng.standard_normal(sh) * 0.1).astype(np.float32) for sh in RESNET20]
    gs = [rng.standard_normal(sh).astype(np.float32) for sh in RESNET20]
    weight = {
        "binarize_weight": (lambda t: Q.binarize_weight(t), []),
        "ste_sign": (lambda t: Q.ste_sign(t), []),
        "lsq 4b signed": (lambda t, p: Q.lsq(t, p, 4), [np.array(0.05, np.float32)]),
    }
    for name, (fn, sc) in weight.items():
        yield f"{name}, ResNet-20's 19 conv weights", (
            lambda fn=fn, sc=sc: [r for w, gw in zip(ws, gs) for r in step(fn, w, gw, sc)])


def same(a, b):
    for u, v in zip(a, b):
        if u.ndim == 0 or u.size == 1:   # a scale's gradient: a sum, in another order in the kernel
            np.testing.assert_allclose(u, v, rtol=1e-4)
        else:
            np.testing.assert_array_equal(u, v)


def main():
    args, threads = bench_run(__doc__, repeats=15, quick_help="batch 32 and 3 repeats: a smoke run")
    repeats = 3 if args.quick else args.repeats
    rows = []
    for name, run in cases(args.quick):
        same(run(), numpy_path(run)())
        t = interleaved({"numpy": numpy_path(run), "kernel": run}, repeats=repeats, rotate=True)
        ratio, q25, q75 = paired_ratio(t, "numpy", "kernel")
        rows.append({"case": name, "numpy_ms": 1e3 * t["numpy"]["median_s"], "numpy_min_ms": 1e3 * t["numpy"]["min_s"],
                     "kernel_ms": 1e3 * t["kernel"]["median_s"], "kernel_min_ms": 1e3 * t["kernel"]["min_s"],
                     "first_kernel_ms": 1e3 * t["kernel"]["first_s"], "speedup": ratio, "speedup_q25": q25,
                     "speedup_q75": q75})
    columns = [("case", "forward + backward", None), ("numpy_ms", "NumPy ms (median)", "{:.2f}"),
               ("numpy_min_ms", "min", "{:.2f}"), ("kernel_ms", "kernels ms (median)", "{:.2f}"),
               ("kernel_min_ms", "min", "{:.2f}"), ("speedup", "NumPy / kernels", "{:.2f}x"),
               ("speedup_q25", "q25", "{:.2f}"), ("speedup_q75", "q75", "{:.2f}")]
    write_report("quantize_quick" if args.quick else "quantize", rows, columns,
                 extra={"threads": threads, "kernel_min_size": FQ.KERNEL_MIN_SIZE},
                 title="Quantizer STEs: NumPy path vs one-pass kernels")


if __name__ == "__main__":
    main()
