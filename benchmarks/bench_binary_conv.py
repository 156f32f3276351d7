"""Binary (XNOR) convolution layer, packing of the activations included, vs the float convolution.

The binary side is what an XNOR layer does at inference on float activations coming out of the
previous BatchNorm: ``pack_activations(x)`` (float NCHW -> packed NHWC bits) then
``binary_conv2d(x_bits, w_bits, C, padding=1, alpha=alpha)`` (float32 NCHW out, alpha per output
channel); the weights are packed once beforehand, as in a deployed model. The float side is the
same layer in float32: the faster (by median, in the same run) of the project's
``tinycomp_kernels.conv.conv2d_forward`` and a local im2col + ``np.matmul``; the row names which one.
PyTorch's ``conv2d`` is timed too when torch is importable, in a separate process with the same
thread count (tinycomp itself never imports it); otherwise that column is empty.

Shapes (3x3, stride 1, padding 1, O = C): ResNet-18 (CIFAR widths, C >= 128) 128x16x16, 256x8x8,
512x4x4, plus its stride-2 entry 128->256 at 16x16; ResNet-20 16x32x32, 32x16x16, 64x8x8. Batch 1 and
64. Each binary result is validated against the float conv of sign(x) with alpha*sign(w) first.

    flock /tmp/tinycomp-bench.lock python benchmarks/bench_binary_conv.py [--quick] [--threads 2]
"""
import importlib.util
import json
import os
import subprocess
import sys

import tinycomp_kernels  # noqa: E402,F401  first: it sets every thread-pool variable before numpy starts
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
from harness import bench_run, interleaved, write_report  # noqa: E402

# (net, C, H, O, stride)
LAYERS = [
    ("ResNet-18", 128, 16, 128, 1), ("ResNet-18", 128, 16, 256, 2), ("ResNet-18", 256, 8, 256, 1),
    ("ResNet-18", 512, 4, 512, 1),
    ("ResNet-20", 16, 32, 16, 1), ("ResNet-20", 32, 16, 32, 1), ("ResNet-20", 64, 8, 64, 1),
]

TORCH_SCRIPT = r"""
import json, statistics, sys, time
import torch
cfg = json.loads(sys.argv[1])
torch.set_num_threads(cfg["threads"])
out = []
with torch.no_grad():
    for N, C, H, O, s in cfg["shapes"]:
        x = torch.randn(N, C, H, H)
        w = torch.randn(O, C, 3, 3)
        torch.nn.functional.conv2d(x, w, stride=s, padding=1)
        ts = []
        for _ in range(cfg["repeats"]):
            t0 = time.perf_counter()
            torch.nn.functional.conv2d(x, w, stride=s, padding=1)
            ts.append(time.perf_counter() - t0)
        out.append(statistics.median(ts))
print(json.dumps({"version": torch.__version__, "median_s": out}))
"""


def im2col_matmul_conv(x, w, stride, padding):
    """Float32 conv baseline: explicit padding, im2col by a strided view, one BLAS GEMM."""
    N, C, H, W = x.shape
    O, _, KH, KW = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))  # (N, C, H+2p, W+2p)
    win = np.lib.stride_tricks.sliding_window_view(xp, (KH, KW), axis=(2, 3))[:, :, ::stride, ::stride]
    OH, OW = win.shape[2], win.shape[3]  # win: (N, C, OH, OW, KH, KW)
    cols = np.ascontiguousarray(win.transpose(0, 2, 3, 1, 4, 5)).reshape(N * OH * OW, C * KH * KW)
    out = cols @ w.reshape(O, C * KH * KW).T  # (N*OH*OW, O)
    return np.ascontiguousarray(out.reshape(N, OH, OW, O).transpose(0, 3, 1, 2))  # (N, O, OH, OW)


def torch_times(shapes, threads, repeats):
    """Median seconds per shape from PyTorch in a child process, or None when torch is not installed."""
    if importlib.util.find_spec("torch") is None:
        return None, "torch not installed"
    cfg = json.dumps({"shapes": shapes, "threads": threads, "repeats": repeats})
    res = subprocess.run([sys.executable, "-c", TORCH_SCRIPT, cfg], capture_output=True, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    if res.returncode != 0:
        return None, "torch failed: " + (res.stderr.strip().splitlines() or ["no message"])[-1][:200]
    data = json.loads(res.stdout.strip().splitlines()[-1])
    return data["median_s"], f"torch {data['version']}"


def main():
    args, threads = bench_run(__doc__, repeats=10, quick_help="3 repeats, batch 1 and 8: a smoke run", threads=os.cpu_count())
    from threadpoolctl import threadpool_info

    blas_threads = [p["num_threads"] for p in threadpool_info() if p.get("user_api") == "blas"]

    from tinycomp_kernels.xnor_conv import binary_conv2d, pack_activations, pack_weights_per_tap
    try:
        from tinycomp_kernels.conv import conv2d_forward
    except ImportError:
        conv2d_forward = None

    batches = (1, 8) if args.quick else (1, 64)
    repeats = 3 if args.quick else args.repeats
    rng = np.random.default_rng(0)
    rows, shapes = [], []
    for batch in batches:
        for net, C, H, O, s in LAYERS:
            x = rng.standard_normal((batch, C, H, H)).astype(np.float32)
            w = rng.standard_normal((O, C, 3, 3)).astype(np.float32)
            alpha = np.abs(w).mean(axis=(1, 2, 3)).astype(np.float32)  # BWN scale per output filter
            w_bits = pack_weights_per_tap(w)

            def binary():
                return binary_conv2d(pack_activations(x), w_bits, C, stride=s, padding=1, alpha=alpha)

            floats = {"im2col+matmul": lambda: im2col_matmul_conv(x, w, s, 1)}
            if conv2d_forward is not None:
                floats["tinycomp conv2d_forward"] = lambda: conv2d_forward(x, w, stride=s, padding=1)
            # validate: integer part against the float conv of the signs, scaled by alpha afterwards
            xs, ws = np.where(x >= 0, 1.0, -1.0).astype(np.float32), np.where(w >= 0, 1.0, -1.0).astype(np.float32)
            expect = im2col_matmul_conv(xs, ws, s, 1) * alpha[None, :, None, None]
            np.testing.assert_allclose(binary(), expect, rtol=1e-6, atol=0)
            for name, fn in floats.items():
                np.testing.assert_allclose(fn(), im2col_matmul_conv(x, w, s, 1), rtol=1e-3, atol=1e-3)

            t = interleaved({"binary": binary, "pack": lambda: pack_activations(x), **floats}, repeats=repeats)
            best = min(floats, key=lambda k: t[k]["median_s"])
            f, b = t[best]["median_s"], t["binary"]["median_s"]
            rows.append({
                "net": net, "batch": batch, "C": C, "HW": H, "O": O, "stride": s,
                "float_ms": 1e3 * f, "float_impl": best, "binary_ms": 1e3 * b, "pack_ms": 1e3 * t["pack"]["median_s"],
                "ratio": f / b, "binary_first_ms": 1e3 * t["binary"]["first_s"],
                **{f"{k}_ms": 1e3 * v["median_s"] for k, v in t.items() if k in floats},
            })
            shapes.append([batch, C, H, O, s])
            print(f"{net} N={batch} {C}x{H}x{H}->{O} /{s}: float {1e3 * f:.2f} ms ({best}), "
                  f"binary {1e3 * b:.3f} ms (pack {rows[-1]['pack_ms']:.3f}), {f / b:.1f}x", flush=True)

    torch_s, torch_note = torch_times(shapes, threads, repeats)
    for row, ts in zip(rows, torch_s or [None] * len(rows)):
        row["torch_ms"] = None if ts is None else 1e3 * ts
        row["ratio_vs_torch"] = None if ts is None else ts / (row["binary_ms"] / 1e3)
    extra = {"threads": {"numba": threads, "blas": blas_threads}, "torch": torch_note,
             "repeats": repeats, "quick": args.quick,
             "note": "binary = pack_activations + binary_conv2d (weights pre-packed); float = fastest float32 "
                     "conv of the run (float_impl); ratio = float median / binary median, same interleaved run"}
    write_report("binary_conv" + ("_quick" if args.quick else ""), rows, [
        ("net", "net", None), ("batch", "N", None), ("C", "C", None), ("HW", "H=W", None), ("O", "O", None),
        ("stride", "stride", None), ("float_ms", "float ms", "{:.3f}"), ("float_impl", "float impl", None),
        ("binary_ms", "binary ms (incl. pack)", "{:.3f}"), ("pack_ms", "pack ms", "{:.3f}"),
        ("ratio", "speedup", "{:.1f}x"), ("torch_ms", "torch ms", "{:.3f}"), ("ratio_vs_torch", "vs torch", "{:.1f}x"),
    ], extra=extra, title=f"Binary conv layer (packing included) vs float32 conv ({threads} threads; {torch_note})")


if __name__ == "__main__":
    main()
