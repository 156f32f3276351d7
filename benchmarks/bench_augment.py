"""Fused augmentation kernel vs the best plain-NumPy formulation, per training batch.

    python benchmarks/bench_augment.py [--quick]

Workload: a CIFAR-sized uint8 batch (N, 3, 32, 32), 4-pixel reflect padding, random crop,
horizontal flip, per-channel normalisation to float32 (the issue-4 recipe). Variants:

- ``numpy``: np.pad of the batch, one fancy-indexing gather of every window (flips folded into
  the column indices), float32 affine map; vectorised, but it materialises the padded batch,
  the gathered uint8 windows and a float temporary.
- ``fused``: tinycomp_kernels.augment.augment, one pass (read uint8, write float32), one thread.

Every variant is checked against tinycomp_kernels.augment.augment_ref before timing. Ratios come
from one interleaved run. Throughput is images/s.
"""
import argparse
import os
import sys

import tinycomp_kernels  # noqa: F401  first: it sets every thread-pool variable before numpy starts
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import interleaved, write_report  # noqa: E402

from tinycomp_kernels.augment import augment, augment_ref  # noqa: E402


def augment_numpy(images, offsets, flips, scale, shift, pad):
    """Vectorised NumPy: pad, gather all windows with broadcast indices, affine map."""
    N, C, H, W = images.shape
    padded = np.pad(images, ((0, 0), (0, 0), (pad, pad), (pad, pad)), mode="reflect")  # (N, C, H+2p, W+2p)
    rows = offsets[:, 0, None] + np.arange(H)  # (N, H)
    cols = offsets[:, 1, None] + np.arange(W)  # (N, W)
    cols = np.where(flips[:, None], cols[:, ::-1], cols)  # flip = reversed window columns
    windows = padded[np.arange(N)[:, None, None, None], np.arange(C)[None, :, None, None],
                     rows[:, None, :, None], cols[:, None, None, :]]  # (N, C, H, W) uint8
    return windows.astype(np.float32) * scale[:, None, None] + shift[:, None, None]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one small configuration, few repeats")
    args = parser.parse_args()
    batches = [128] if args.quick else [128, 512, 10_000]
    repeats = 5 if args.quick else 30
    pad = 4
    rng = np.random.default_rng(0)
    scale = (1 / (255 * np.array([0.247, 0.243, 0.261]))).astype(np.float32)
    shift = (-np.array([0.491, 0.482, 0.447]) / np.array([0.247, 0.243, 0.261])).astype(np.float32)
    rows = []
    for N in batches:
        images = rng.integers(0, 256, size=(N, 3, 32, 32), dtype=np.uint8)
        offsets = rng.integers(0, 2 * pad + 1, size=(N, 2))
        flips = rng.integers(0, 2, size=N).astype(bool)
        variants = {
            "numpy": lambda: augment_numpy(images, offsets, flips, scale, shift, pad),
            "fused": lambda: augment(images, offsets, flips, scale, shift, pad=pad),
        }
        want = augment_ref(images, offsets, flips, pad, "reflect", scale, shift)
        for name, fn in variants.items():
            np.testing.assert_allclose(fn(), want, rtol=1e-5, atol=1e-5, err_msg=name)
        times = interleaved(variants, repeats=repeats)
        for name, t in times.items():
            rows.append({"batch": N, "variant": name, "median_ms": t["median_s"] * 1e3,
                         "min_ms": t["min_s"] * 1e3, "first_ms": t["first_s"] * 1e3,
                         "images_per_s": N / t["median_s"],
                         "speedup": times["numpy"]["median_s"] / t["median_s"]})
    write_report("augment" + ("_quick" if args.quick else ""), rows, columns=[
        ("batch", "batch", None), ("variant", "variant", None), ("median_ms", "median ms", "{:.3f}"),
        ("min_ms", "min ms", "{:.3f}"), ("first_ms", "first call ms", "{:.1f}"),
        ("images_per_s", "images/s", "{:,.0f}"), ("speedup", "vs numpy", "{:.1f}x")],
        title="Augmentation: crop + flip + normalise (reflect pad 4), fused kernel vs NumPy")


if __name__ == "__main__":
    main()
