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
    No shifted copies of x: x is zero-padded once to (H + 2p, W + 2p), p = k // 2, and flattened per
    plane; then shift_s is just an index offset (s // k) * Wp + s % k into the padded plane. Computing
    the output on the padded width Wp (the 2p extra columns per row are junk and cropped at the end)
    turns every kept pair into ONE contiguous axpy of length H*Wp - 2p:
        out[n, o, f] += v * xpad[n, c, f + offset_s]        for f in 0 .. H*Wp - 2p - 1
    (row wrap-around only ever lands in the junk columns). Four kept pairs are fused per pass, so
    the output row is read and written once per four axpys. Parallel over (n, o): each task owns one
    output plane, no races; the padded planes of one image stay in L2 while its O output planes are
    computed.

Speed
    One axpy per kept pair reads and writes the output plane: the form that shows the method's MAC
    count. The same layer through ``sparse_conv.sparse_conv2d`` (its implicit path: register tiles that
    reuse each input value across output channels) is 1.4-1.8x faster on the benchmark layer (C = O =
    64, 16x16, batch 64; three runs of ``benchmarks/bench_sal.py``, "sal vs csr conv" 0.56-0.73x).

Reference
    ``sal_conv2d_ref``: shifted copies by slicing (zero fill) + einsum over channels, summed over taps.
"""
from typing import NamedTuple

import numpy as np
from numba import njit, prange

from .checks import is_int, non_decreasing
from .fastmath import FMA_ONLY



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


def _sal_conv2d_loops(out, xpad, indptr, indices, values, k, c, wp, length):
    """out (N, O, H*Wp) on the padded width Wp; xpad (N, C, Hp*Wp); the entry in column s*C + ch
    adds v * xpad[n, ch, f + (s // k) * Wp + s % k] to out[n, o, f] for f < length = H*Wp - 2p."""
    n_img, o, _ = out.shape
    for t in prange(n_img * o):
        ni = t // o
        oi = t % o
        orow = out[ni, oi]
        for f in range(orow.shape[0]):
            orow[f] = 0.0
        q = indptr[oi]
        end = indptr[oi + 1]
        while q + 4 <= end:
            s0, s1, s2, s3 = indices[q] // c, indices[q + 1] // c, indices[q + 2] // c, indices[q + 3] // c
            o0 = (s0 // k) * wp + s0 % k
            o1 = (s1 // k) * wp + s1 % k
            o2 = (s2 // k) * wp + s2 % k
            o3 = (s3 // k) * wp + s3 % k
            x0 = xpad[ni, indices[q] % c, o0:o0 + length]
            x1 = xpad[ni, indices[q + 1] % c, o1:o1 + length]
            x2 = xpad[ni, indices[q + 2] % c, o2:o2 + length]
            x3 = xpad[ni, indices[q + 3] % c, o3:o3 + length]
            v0, v1, v2, v3 = values[q], values[q + 1], values[q + 2], values[q + 3]
            for f in range(length):
                acc = orow[f]
                acc += v0 * x0[f]
                acc += v1 * x1[f]
                acc += v2 * x2[f]
                acc += v3 * x3[f]
                orow[f] = acc
            q += 4
        while q < end:
            s0 = indices[q] // c
            o0 = (s0 // k) * wp + s0 % k
            x0 = xpad[ni, indices[q] % c, o0:o0 + length]
            v0 = values[q]
            for f in range(length):
                orow[f] += v0 * x0[f]
            q += 1


sal_conv2d_jit = njit(parallel=True, cache=True, fastmath=FMA_ONLY)(_sal_conv2d_loops)  # axpy rows: FMA, order kept


def sal_conv2d(x, packed):
    """SAL layer in inference form: x (N, C, H, W) float32 C-contiguous -> y (N, O, H, W) float32,
    equal to conv2d(x, sal_dense_weight(weight, tap_index), stride 1, padding k // 2)."""
    if not isinstance(packed, SalPacked):
        raise TypeError(f"sal_conv2d: packed must be the SalPacked of sal_pack, got {type(packed).__name__}")
    if not isinstance(x, np.ndarray) or x.ndim != 4:
        raise ValueError(f"sal_conv2d: x must be a 4-D (N, C, H, W) numpy array, got {getattr(x, 'shape', x)}")
    if x.dtype != np.float32:
        raise TypeError(f"sal_conv2d: x must be float32, got {x.dtype}")
    if not x.flags.c_contiguous:
        raise ValueError("sal_conv2d: x must be C-contiguous (use np.ascontiguousarray)")
    indptr, indices, values, k, c = packed
    if not is_int(k) or k < 1 or k % 2 == 0:
        raise ValueError(f"sal_conv2d: packed kernel_size must be a positive odd int, got {k!r}")
    if not is_int(c) or c < 1:
        raise ValueError(f"sal_conv2d: packed in_channels must be a positive int, got {c!r}")
    k, c = int(k), int(c)
    if x.shape[1] != c:
        raise ValueError(f"sal_conv2d: x has {x.shape[1]} channels, the packed layer expects {c}")
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
    n, _, h, w = x.shape
    o = len(indptr) - 1
    p = k // 2
    hp, wp = h + 2 * p, w + 2 * p
    xpad = np.zeros((n, c, hp, wp), dtype=np.float32)
    xpad[:, :, p:p + h, p:p + w] = x  # zero border: the shifts read zeros outside the image
    out = np.empty((n, o, h * wp), dtype=np.float32)  # output on the padded width, cropped below
    sal_conv2d_jit(out, xpad.reshape(n, c, hp * wp), indptr, indices, values, k, c, wp, h * wp - 2 * p)
    return np.ascontiguousarray(out.reshape(n, o, h, wp)[:, :, :, :w])  # (N, O, H, W)
