"""Float conv2d at channel counts the register tiles do not divide (thinned ResNet-20: 11, 22, 45).

For each thinned ResNet-20 3x3 layer shape (filter_prune to half the MACs gives 11, 22 and 45
channels) and batch size: the forward and the backward (both gradients) of
``tinycomp_kernels.conv`` as chosen from the shapes ("tiles"), the same conv forced to
``algorithm="im2col"`` (im2col + OpenBLAS for all three passes: what these shapes ran on before the
tiles took any channel count), and the tiles at the channel counts rounded up to a multiple of 8
(16, 24, 48: the cost the odd counts should stay under). Every variant is validated against
``conv2d_ref`` (forward) and by the adjoint identity (gradients) on a small batch first; then all
six callables are timed round-robin in one process (``harness.interleaved``, rotated) and the
ratios are medians of per-round ratios (``harness.paired_ratio``). Default 1 thread: on a loaded
machine the ratios are the figure, not the times.

    flock /tmp/tinycomp-bench.lock python benchmarks/bench_conv_channels.py [--quick] [--threads 1]
"""
import os
import sys

import tinycomp_kernels  # noqa: E402,F401  first: it sets every thread-pool variable before numpy starts
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
from harness import bench_run, interleaved, paired_ratio, write_report  # noqa: E402

from tinycomp_kernels.conv import conv2d_algorithm, conv2d_backward, conv2d_forward, conv2d_ref  # noqa: E402

# (name, C, H, O, stride): the thinned model's stages and the two stride-2 convs between them
LAYERS = [("s1 11->11", 11, 32, 11, 1), ("s2 11->22 /2", 11, 32, 22, 2), ("s2 22->22", 22, 16, 22, 1),
          ("s3 22->45 /2", 22, 16, 45, 2), ("s3 45->45", 45, 8, 45, 1)]
BATCHES = (16, 64, 128)


def up8(c):
    return -(-c // 8) * 8


def validate(name, C, H, O, s, algorithm, rng):
    x = rng.standard_normal((2, C, H, H)).astype(np.float32)
    w = rng.standard_normal((O, C, 3, 3)).astype(np.float32)
    x64, w64 = x.astype(np.float64), w.astype(np.float64)
    ref = conv2d_ref(x64, w64, s, 1)
    if not np.allclose(conv2d_forward(x, w, s, 1, algorithm=algorithm), ref, rtol=1e-4, atol=1e-3):
        raise SystemExit(f"validation failed: {name} forward ({algorithm or 'chosen'})")
    dout = rng.standard_normal(ref.shape).astype(np.float32)
    dx, dw = conv2d_backward(dout, x, w, s, 1, algorithm=algorithm)
    rx, rw = rng.standard_normal(x.shape), rng.standard_normal(w.shape)
    for got, probe, lin in ((dx, rx, conv2d_ref(rx, w64, s, 1)), (dw, rw, conv2d_ref(x64, rw, s, 1))):
        if not np.isclose(np.vdot(got, probe), np.vdot(dout, lin), rtol=1e-4):
            raise SystemExit(f"validation failed: {name} gradients ({algorithm or 'chosen'})")


def passes(N, C, H, O, s, rng, algorithm=None):
    x = rng.standard_normal((N, C, H, H)).astype(np.float32)
    w = (rng.standard_normal((O, C, 3, 3)) * 0.1).astype(np.float32)
    dout = rng.standard_normal((N, O, H // s, H // s)).astype(np.float32)
    return (lambda: conv2d_forward(x, w, s, 1, algorithm=algorithm),
            lambda: conv2d_backward(dout, x, w, s, 1, algorithm=algorithm))


def main():
    args, threads = bench_run(__doc__, repeats=7, quick_help="batch 16, 2 rounds: a smoke run", threads=1)
    repeats = 2 if args.quick else args.repeats
    rng = np.random.default_rng(0)
    rows = []
    for name, C, H, O, s in LAYERS:
        assert conv2d_algorithm((1, C, H, H), (O, C, 3, 3), s, 1) == "tiles", name
        for c, o, algo in ((C, O, None), (C, O, "im2col"), (up8(C), up8(O), None)):
            validate(name, c, H, o, s, algo, rng)
        for N in (16,) if args.quick else BATCHES:
            fns = {}
            for key, (c, o, algo) in {"tiles": (C, O, None), "im2col": (C, O, "im2col"),
                                      "padded": (up8(C), up8(O), None)}.items():
                fns[f"{key}_fwd"], fns[f"{key}_bwd"] = passes(N, c, H, o, s, rng, algo)
            t = interleaved(fns, repeats=repeats, rotate=True)
            row = {"layer": name, "batch": N, "padded_to": f"{up8(C)}->{up8(O)}"}
            for key in fns:
                row[f"{key}_ms"] = t[key]["median_s"] * 1e3
            for p in ("fwd", "bwd"):
                row[f"im2col_x_{p}"] = paired_ratio(t, f"im2col_{p}", f"tiles_{p}")[0]
                row[f"vs_padded_{p}"] = paired_ratio(t, f"tiles_{p}", f"padded_{p}")[0]
            rows.append(row)
            print(f"{name} batch {N}: fwd {row['tiles_fwd_ms']:.1f} ms (im2col x{row['im2col_x_fwd']:.2f}, "
                  f"/padded {row['vs_padded_fwd']:.2f}); bwd {row['tiles_bwd_ms']:.1f} ms "
                  f"(im2col x{row['im2col_x_bwd']:.2f}, /padded {row['vs_padded_bwd']:.2f})", flush=True)
    columns = [("layer", "layer", None), ("batch", "N", None), ("tiles_fwd_ms", "fwd ms", "{:.1f}"),
               ("im2col_fwd_ms", "im2col fwd ms", "{:.1f}"), ("im2col_x_fwd", "fwd speed-up", "{:.2f}x"),
               ("tiles_bwd_ms", "bwd ms", "{:.1f}"), ("im2col_bwd_ms", "im2col bwd ms", "{:.1f}"),
               ("im2col_x_bwd", "bwd speed-up", "{:.2f}x"), ("padded_to", "padded", None),
               ("vs_padded_fwd", "fwd / padded", "{:.2f}"), ("vs_padded_bwd", "bwd / padded", "{:.2f}")]
    write_report("conv_channels" + ("_quick" if args.quick else ""), rows, columns,
                 extra={"threads": threads, "rounds": repeats},
                 title=f"float conv2d at thinned channel counts: tiles vs im2col + BLAS vs padded, {threads} thread(s)")


if __name__ == "__main__":
    main()
