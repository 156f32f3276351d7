"""SAL inference form: a k x k convolution whose every (o, c) pair kept at most one tap.

What
    After training a Shift Attention Layer (docs/methods.md, "SAL"), the rounded attention leaves each
    (output channel o, input channel c) pair with one tap s in 0..k*k-1 of the k x k kernel, or none
    (the pair is pruned). The layer is then a sum of k*k shifted sparse 1x1 convolutions:

        y[n] = sum_s M_s @ shift_s(x[n]),    M_s[o, c] = W[o, c, s // k, s % k] if tap[o, c] == s else 0
        shift_s(x)[c, h, w] = x[c, h + s // k - k // 2, w + s % k - k // 2]   (0 outside the image)

    which equals conv2d(x, W * onehot(tap)) with stride 1 and 'same' padding k // 2 (odd k), at a
    cost of H*W MACs per kept pair instead of k*k*H*W.

Packed form (``sal_pack``)
    The k*k matrices side by side, [M_0 | M_1 | ... | M_{k*k-1}] (O, k*k*C), stored as one CSR:
    indptr int64 (O + 1), indices int32 = s*C + c (sorted within a row), values float32.
    ``tap_index`` (O, C) int: the kept tap, -1 = pruned.

The kernel (``sal_conv2d``)
    The packed layer is a sparse convolution whose kept entries are the kept pairs, each at its tap:
    ``sparse_tiles`` runs it, one register tile per 8x8 block of an output plane (per kept pair a
    broadcast weight times eight shifted row segments of the zero-padded input, H*W multiply-adds
    per pair in all, the output written once). Per output pixel the pairs are summed in CSR order.

Speed
    The former kernel (one shifted-plane axpy per pair, the output plane read and written once per
    four pairs, and NumPy copies to pad x and crop y) took 1.0-1.1x, 1.2-1.5x and 2.8-3.1x the time of
    this one on 16 channels at 32x32, 32 at 16x16 and 64 at 8x8 (batch 64, one tap per pair, quiet
    Zen 3, 2026-12-01); against the other paths: ``tinycomp/runtime/sal.py``.

Reference
    ``sal_conv2d_ref``: shifted copies by slicing (zero fill) + einsum over channels, summed over taps.
"""
from typing import NamedTuple

import numpy as np

from .checks import is_int, non_decreasing
from .sparse_tiles import SparseTilesPlan


class SalPacked(NamedTuple):
    """A SAL layer packed for inference: CSR of [M_0 | ... | M_{k*k-1}] (O, k*k*C)."""
    indptr: np.ndarray   # int64 (O + 1,)
    indices: np.ndarray  # int32 (nnz,): s*C + c
    values: np.ndarray   # float32 (nnz,)
    kernel_size: int     # k (odd)
    in_channels: int     # C


def sal_dense_weight(weight, tap_index):
    """The dense (O, C, k, k) weight that the packed layer equals: W * onehot(tap), 0 for pruned pairs."""
    o, c, k, _ = weight.shape
    taps = np.arange(k * k).reshape(1, 1, k, k)
    return np.where(taps == np.asarray(tap_index)[:, :, None, None], weight, 0).astype(np.float32)


def sal_pack(weight, tap_index):
    """Pack ``weight`` (O, C, k, k) float with ``tap_index`` (O, C) int in [-1, k*k) for ``sal_conv2d``."""
    weight = np.asarray(weight)
    tap_index = np.asarray(tap_index)
    if weight.ndim != 4 or weight.shape[2] != weight.shape[3] or weight.shape[2] % 2 == 0:
        raise ValueError(f"sal_pack: weight must be (O, C, k, k) with odd k, got shape {weight.shape}")
    if not np.issubdtype(weight.dtype, np.floating):
        raise TypeError(f"sal_pack: weight must be a float array, got {weight.dtype}")
    o, c, k, _ = weight.shape
    if tap_index.shape != (o, c):
        raise ValueError(f"sal_pack: tap_index must have shape {(o, c)}, got {tap_index.shape}")
    if not np.issubdtype(tap_index.dtype, np.integer):
        raise TypeError(f"sal_pack: tap_index must be an integer array, got {tap_index.dtype}")
    if tap_index.size and (tap_index.min() < -1 or tap_index.max() >= k * k):
        raise ValueError(f"sal_pack: tap_index out of range [-1, {k * k}): "
                         f"min {tap_index.min()}, max {tap_index.max()}")
    rows, chans = np.nonzero(tap_index >= 0)  # row-major: rows ascending
    taps = tap_index[rows, chans].astype(np.int64)
    cols = taps * c + chans  # column of [M_0 | ... | M_{k*k-1}]
    order = np.lexsort((cols, rows))  # sort by column within each row
    rows, chans, taps, cols = rows[order], chans[order], taps[order], cols[order]
    indptr = np.zeros(o + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=o), out=indptr[1:])
    values = weight[rows, chans, taps // k, taps % k].astype(np.float32)
    return SalPacked(indptr, cols.astype(np.int32), values, int(k), int(c))


def sal_conv2d_ref(x, weight, tap_index):
    """Oracle: sum over taps s of einsum(M_s, shift_s(x)), shifts by slicing with zero fill."""
    n, c, h, w = x.shape
    o, _, k, _ = weight.shape
    p = k // 2
    x64 = x.astype(np.float64)
    y = np.zeros((n, o, h, w))
    for s in range(k * k):
        dy, dx = s // k - p, s % k - p
        m_s = np.where(tap_index == s, weight[:, :, s // k, s % k], 0).astype(np.float64)  # (O, C)
        shifted = np.zeros_like(x64)  # shifted[..., i, j] = x[..., i + dy, j + dx]
        shifted[:, :, max(0, -dy):h - max(0, dy), max(0, -dx):w - max(0, dx)] = \
            x64[:, :, max(0, dy):h + min(0, dy), max(0, dx):w + min(0, dx)]
        y += np.einsum("oc,nchw->nohw", m_s, shifted)
    return y.astype(np.float32)


def sal_conv2d(x, packed):
    """SAL layer in inference form: x (N, C, H, W) float32 C-contiguous -> y (N, O, H, W) float32,
    equal to conv2d(x, sal_dense_weight(weight, tap_index), stride 1, padding k // 2)."""
    if not isinstance(x, np.ndarray) or x.ndim != 4:
        raise ValueError(f"sal_conv2d: x must be a 4-D (N, C, H, W) numpy array, got {getattr(x, 'shape', x)}")
    return SalPlan(packed, x.shape[2:])(x)


class SalPlan:
    """``sal_conv2d`` for one packed layer and input size (H, W): the layer checked and its tap
    offsets made once (``tinycomp.runtime`` keeps one per input size); a call checks x, pads it and
    runs the tiles, the same arithmetic as ``sal_conv2d`` (equal bits)."""

    def __init__(self, packed, input_hw):
        _check_packed(packed)
        indptr, indices, values, k, c = packed
        self.c = int(c)
        taps = indices.astype(np.int64) // self.c
        self.tiles = SparseTilesPlan(indptr, indices % self.c, taps // k, taps % k, values, self.c, (int(k), int(k)),
                                     input_hw, 1, int(k) // 2)

    def __call__(self, x):
        if not isinstance(x, np.ndarray) or x.ndim != 4:
            raise ValueError(f"sal_conv2d: x must be a 4-D (N, C, H, W) numpy array, got {getattr(x, 'shape', x)}")
        if x.dtype != np.float32:
            raise TypeError(f"sal_conv2d: x must be float32, got {x.dtype}")
        if not x.flags.c_contiguous:
            raise ValueError("sal_conv2d: x must be C-contiguous (use np.ascontiguousarray)")
        if x.shape[1] != self.c:
            raise ValueError(f"sal_conv2d: x has {x.shape[1]} channels, the packed layer expects {self.c}")
        if x.shape[2:] != (self.tiles.h, self.tiles.w):
            raise ValueError(f"sal_conv2d: x is {x.shape[2]}x{x.shape[3]}, the plan was made for "
                             f"{self.tiles.h}x{self.tiles.w}")
        return self.tiles.run(x)  # x checked above


def _check_packed(packed):
    if not isinstance(packed, SalPacked):
        raise TypeError(f"sal_conv2d: packed must be the SalPacked of sal_pack, got {type(packed).__name__}")
    indptr, indices, values, k, c = packed
    if not is_int(k) or k < 1 or k % 2 == 0:
        raise ValueError(f"sal_conv2d: packed kernel_size must be a positive odd int, got {k!r}")
    if not is_int(c) or c < 1:
        raise ValueError(f"sal_conv2d: packed in_channels must be a positive int, got {c!r}")
    arrays = ((indptr, np.int64), (indices, np.int32), (values, np.float32))
    if not all(isinstance(a, np.ndarray) and a.ndim == 1 and a.dtype == t and a.flags.c_contiguous
               for a, t in arrays) \
            or len(indptr) < 1 or indptr[0] != 0 or indptr[-1] != len(indices) \
            or len(values) != len(indices) or not non_decreasing(indptr):
        raise ValueError("sal_conv2d: packed is not a consistent SalPacked (C-contiguous 1-D arrays: indptr "
                         "int64 non-decreasing from 0 to nnz, indices int32 and values float32 of length "
                         "nnz): build it with sal_pack")
    if len(indices) and (indices.min() < 0 or indices.max() >= k * k * c):
        raise ValueError(f"sal_conv2d: packed indices out of range [0, {k * k * c})")
