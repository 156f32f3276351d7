"""Shift vs 3x3 depthwise convolution vs a plain memory copy of the same array.

    python benchmarks/bench_shift.py [--quick]

Bandwidth = (bytes read + bytes written) / time = 2 * x.nbytes / t for all three (the depthwise
weights are negligible). Target (issue 3): shift at >= 50 % of np.copyto's bandwidth.
The backward (shift2d_backward, which allocates its result) is compared with np.copyto and with
np.copy (which allocates too).

The depthwise baseline is tinycomp_kernels.conv.conv2d_forward(..., groups=C) when that module
exists, else a local Numba depthwise kernel (parallel over planes, one FMA per tap per pixel).
Ratios come from one interleaved run (harness.interleaved), same Numba thread count for all.
"""
import argparse
import os
import sys

import tinycomp_kernels  # noqa: E402,F401  first: it sets every thread-pool variable before numpy starts
import numpy as np  # noqa: E402
from numba import njit, prange, get_num_threads  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import interleaved, write_report  # noqa: E402

from tinycomp_kernels import shift as shift_module  # noqa: E402
from tinycomp_kernels.shift import shift2d, shift2d_backward, shift2d_ref, shiftnet_offsets  # noqa: E402

RESNET20 = [(64, 16, 32, 32), (64, 32, 16, 16), (64, 64, 8, 8), (1, 16, 32, 32), (1, 64, 8, 8)]
BIG = [(64, 128, 56, 56)]


@njit(parallel=True, fastmath=True, cache=True)
def _depthwise3x3_local(out, x, w):
    """out[n, c] = sum over the 3x3 taps of w[c, ky, kx] * x[n, c, y + ky - 1, x + kx - 1], zero pad.

    Per plane and output row: nine contiguous multiply-adds of shifted input rows (unsigned flat
    indices, so that LLVM vectorises them: Numba's negative-index test on signed ones prevents it).
    """
    N, C, H, W = x.shape
    xf = x.reshape(x.size)      # (N*C*H*W,)
    of = out.reshape(out.size)  # (N*C*H*W,)
    for p in prange(N * C):
        c = p % C
        base = p * H * W
        for y in range(H):
            o = np.uint64(base + y * W)
            for i in range(np.uint64(0), np.uint64(W)):
                of[o + i] = 0.0
            for ky in range(3):
                yy = y + ky - 1
                if yy < 0 or yy >= H:
                    continue
                for kx in range(3):
                    wv = w[c, ky, kx]
                    lo = max(0, 1 - kx)       # output columns whose tap lies inside the row
                    hi = min(W, W + 1 - kx)
                    src = np.uint64(base + yy * W + lo + kx - 1)
                    dst = o + np.uint64(lo)
                    for i in range(np.uint64(0), np.uint64(hi - lo)):
                        of[dst + i] += wv * xf[src + i]


def depthwise_baseline():
    """(name, fn(x, w) -> out); w of shape (C, 1, 3, 3)."""
    try:
        from tinycomp_kernels.conv import conv2d_forward
        return "conv.conv2d_forward(groups=C)", lambda x, w: conv2d_forward(x, w, 1, 1, 1, x.shape[1])
    except ImportError:
        def local(x, w, out=None):
            out = np.empty_like(x) if out is None else out
            _depthwise3x3_local(out, x, np.ascontiguousarray(w[:, 0]))
            return out
        return "local numba depthwise", local


def depthwise_ref(x, w):
    """NumPy: sum of 9 shifted, weighted copies (zero padding 1)."""
    N, C, H, W = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))  # (N, C, H+2, W+2)
    out = np.zeros_like(x)
    for ky in range(3):
        for kx in range(3):
            out += w[None, :, 0, ky, kx, None, None] * xp[:, :, ky:ky + H, kx:kx + W]
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="few repeats, no big shape")
    args = ap.parse_args()
    repeats = 5 if args.quick else 30
    shapes = RESNET20 if args.quick else RESNET20 + BIG
    dw_name, dw = depthwise_baseline()
    rows = []
    rng = np.random.default_rng(0)
    for shape in shapes:
        N, C, H, W = shape
        x = rng.standard_normal(shape, dtype=np.float32)
        w = rng.standard_normal((C, 1, 3, 3), dtype=np.float32)
        shift_y, shift_x = shiftnet_offsets(C, k=3, dilation=1)
        out_s, out_c = np.empty_like(x), np.empty_like(x)
        # validate before timing
        np.testing.assert_array_equal(shift2d(x, shift_y, shift_x, out=out_s), shift2d_ref(x, shift_y, shift_x))
        np.testing.assert_array_equal(shift2d_backward(x, shift_y, shift_x), shift2d_ref(x, -shift_y, -shift_x))
        np.testing.assert_allclose(dw(x, w), depthwise_ref(x, w), rtol=1e-4, atol=1e-4)
        res = interleaved({
            "shift": lambda: shift2d(x, shift_y, shift_x, out=out_s),
            "depthwise": lambda: dw(x, w),
            "copy": lambda: np.copyto(out_c, x),
            "backward": lambda: shift2d_backward(x, shift_y, shift_x),
            "copy_alloc": lambda: np.copy(x),
        }, repeats=repeats)
        gb = 2 * x.nbytes / 1e9
        row = {"shape": "x".join(map(str, shape)), "MB": x.nbytes / 1e6}
        for k in ("shift", "depthwise", "copy", "backward", "copy_alloc"):
            row[f"{k}_ms"] = res[k]["median_s"] * 1e3
            row[f"{k}_min_ms"] = res[k]["min_s"] * 1e3
            row[f"{k}_first_ms"] = res[k]["first_s"] * 1e3
            row[f"{k}_GBs"] = gb / res[k]["median_s"]
        row["shift_vs_copy"] = res["copy"]["median_s"] / res["shift"]["median_s"]
        row["backward_vs_copy"] = res["copy"]["median_s"] / res["backward"]["median_s"]
        row["backward_vs_copy_alloc"] = res["copy_alloc"]["median_s"] / res["backward"]["median_s"]
        row["shift_speedup_vs_depthwise"] = res["depthwise"]["median_s"] / res["shift"]["median_s"]
        rows.append(row)
    cols = [("shape", "N x C x H x W", None), ("MB", "MB", "{:.1f}"),
            ("shift_ms", "shift ms", "{:.3f}"), ("depthwise_ms", "depthwise 3x3 ms", "{:.3f}"),
            ("copy_ms", "np.copyto ms", "{:.3f}"), ("shift_GBs", "shift GB/s", "{:.1f}"),
            ("depthwise_GBs", "depthwise GB/s", "{:.1f}"), ("copy_GBs", "copy GB/s", "{:.1f}"),
            ("shift_vs_copy", "shift / copy bandwidth", "{:.2f}"),
            ("backward_ms", "backward ms", "{:.3f}"), ("copy_alloc_ms", "np.copy ms", "{:.3f}"),
            ("backward_vs_copy", "backward / copy bandwidth", "{:.2f}"),
            ("backward_vs_copy_alloc", "backward / np.copy bandwidth", "{:.2f}"),
            ("shift_speedup_vs_depthwise", "shift speed-up vs depthwise", "{:.1f}x")]
    import numba
    write_report("shift" + ("_quick" if args.quick else ""), rows, cols,
                 extra={"depthwise_baseline": dw_name, "numba_threads": get_num_threads(),
                        "threading_layer": numba.threading_layer(),
                        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
                        "parallel_min_bytes": shift_module._PARALLEL_MIN_BYTES,
                        "mask_plane_max": shift_module._MASK_PLANE_MAX,
                        "note": "bandwidth = 2 * nbytes / median time; np.copyto, np.copy single-threaded"},
                 title="Shift vs 3x3 depthwise conv vs np.copyto (float32, ShiftNet 3x3 offsets)")


if __name__ == "__main__":
    main()
