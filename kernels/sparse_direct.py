"""Direct sparse convolution: a pruned layer's kept weights applied to shifted image planes, no patch matrix.

What
    For stride 1, dilation 1 and "same" padding (OH = H, OW = W: odd KH, KW with ph = (KH-1)/2,
    pw = (KW-1)/2) and the weight (O, C, KH, KW) in CSR over (O, C*KH*KW):

        y[n, o] = sum over kept (c, kh, kw) of w[o, c, kh, kw] * shift(x[n, c], kh - ph, kw - pw)

    where shift(plane, dy, dx)[i, j] = plane[i + dy, j + dx], 0 outside the plane. Flattened (P = H*W,
    t = i*W + j) a shift is a constant offset dy*W + dx: each worker copies image n's C planes once into
    zero-guarded rows (G = ph*W + pw zeros on each side stand for the rows above and below), then for
    every output channel adds, per kept weight, one P-long vector of the shifted plane (the taps that
    would wrap around a row edge selected to 0 by ``col_ok``) into an accumulator plane in L1.

Why
    ``sparse_conv2d``'s other paths run the CSR product on the patch matrix, C*KH*KW rows of N*P
    columns (9x the input for 3x3): formed in memory ("im2col") or row by row in the kernel's L2
    buffer ("implicit", ``sparse_implicit``); either way that costs the same whatever the sparsity.
    Here the cost is one pass over x, one over y, and nnz*N*P multiply-adds, plus a per-weight loop
    overhead (OVERHEAD plane elements, fitted against the implicit path). It wins when few weights are
    kept per output channel and the planes are long (``direct_pays``). Four kept weights are added per
    pass over the accumulator plane, which is then read and written once for four (1.1-1.3x faster
    than one per pass on the 16- and 32-channel layers at 90-99 %). Against the implicit path, in two
    runs of 17 boundary cases (2 threads, interleaved with the im2col path; /tmp scripts, the
    benchmark times all paths on its layers): 1.07-1.37x faster at 16 channels 32x32 from 80 %
    sparsity, 1.08-1.39x at 32 channels 16x16 from 95 %, 1.16-1.49x at 64 channels 16x16 at 98-99 %
    and 128 at 99 %; even at 128 channels at 98 % (0.99-1.1x) and 64 channels 8x8 at 99 % (0.8-1.14x:
    the per-weight overhead on short planes); slower with more kept weights (0.6-0.99x: the product's
    register tiles reuse each patch value across many output channels).

Reference
    ``sparse_conv.sparse_conv2d_ref`` (dense weight, sliding windows + einsum); tests compare all three paths.
"""
import math

import numpy as np
from numba import get_num_threads, njit, prange

from .fastmath import FMA_ONLY
from .im2col import copy_plane_jit, same_padding_tables, same_padding_taps

OVERHEAD = 256  # a kept weight's loop costs about as much as this many plane elements (fit to the timings)
DIRECT_MAX_WORK = 37  # direct_pays: kept weights per output channel x (1 + OVERHEAD / P) at most this


def direct_fits(weight_shape, stride, padding, dilation):
    """True when the geometry is the one this kernel computes: stride 1, dilation 1, "same" padding."""
    _, _, kh, kw = weight_shape
    return (stride, dilation) == (1, 1) and kh % 2 == 1 and kw % 2 == 1 and padding == (kh - 1) // 2 == (kw - 1) // 2


def direct_pays(nnz, n_out, plane):
    """The dispatch rule (deterministic, from the shapes): kept weights per output channel, times
    (1 + OVERHEAD / plane size), at most DIRECT_MAX_WORK. It takes the direct path for 16 channels at
    32x32 from 80 % sparsity, 32 channels at 16x16 from 95 %, 64 at 16x16 from 97 %, 128 at 16x16 and
    64 at 8x8 at 99 %; in the boundary runs (module doc) and eight benchmark runs the path it
    picked was at most 6 % slower than the other, but for 64 channels 8x8 at batch 256 and 99 % (direct
    0.78-1.02x as fast)."""
    return _work(nnz, n_out, plane) <= DIRECT_MAX_WORK


def _work(nnz, n_out, plane):
    """The direct path's cost measure: kept weights per output channel x (1 + OVERHEAD / plane);
    infinite for a layer without outputs, which neither rule sends down the direct path."""
    return nnz / n_out * (1 + OVERHEAD / max(plane, 1)) if n_out > 0 else math.inf


SMALL_BATCH = 4  # images; at most this many never take the direct path over the kept-weight tiles
DIRECT_MIN_PLANE = 32 * 32  # pixels; on smaller planes the tiles beat the direct path
TILES_MAX_WORK = 8  # direct_beats_tiles: the work measure of direct_pays at most this (16 ch 32x32: >= 96.5 %)


def direct_beats_tiles(nnz, n_out, batch, plane):
    """True when a stride-1 "same" layer should run this direct path rather than the kept-weight tiles
    (``sparse_tiles``): more than SMALL_BATCH images, planes of at least DIRECT_MIN_PLANE pixels and
    ``_work`` (direct_pays's measure) at most TILES_MAX_WORK. Both are
    memory-bound there; the tiles read a padded copy of x, the direct path x itself. Timed side by
    side on 2026-12-03 (AMD Zen 3, AVX2, 2 threads, a plan built per call as training does), direct /
    tiles time on 16 channels at 32x32: batch 128 1.56x at 80 %, 1.35x at 90 %, 0.96-0.98x at 95 %,
    0.85x at 97 %, 0.65-0.71x at 98-99 %; batch 64 1.97x at 80 %, 1.31x at 95 %, 1.05x at 98 %, 0.90-0.99x
    at 99 %; 64 channels at 32x32 batch 32 1.09-1.55x at 90-98 %, 0.83x at 99 %; batch 16 1.4-2.1x.
    (On 2026-12-01, before the tiles' phase split vectorised, direct took 0.46-0.72x the tiles' time
    at 90-95 %, batch 64, and the rule was direct_pays.) Not re-timed on AVX-512."""
    return batch > SMALL_BATCH and plane >= DIRECT_MIN_PLANE and _work(nnz, n_out, plane) <= TILES_MAX_WORK


def _sparse_conv2d_direct_loops(y, x, indptr, chan, shift, tap_col, values, col_ok, planes, acc):
    """y (N, O, H, W) from x (N, C, H, W); entry q of the CSR has input channel chan[q], flat shift
    shift[q] and kernel column tap_col[q]; planes (workers, C, P + 2G) zero-guarded, acc (workers, P).
    The (image, output channel) pairs are split in one contiguous range per worker, so that a batch
    of one image keeps both cores busy; a worker copies an image's planes when it reaches it."""
    n_img, n_ch, h, w = x.shape
    n_out = y.shape[1]
    p = h * w
    g = (planes.shape[2] - p) // 2
    n_workers = planes.shape[0]
    n_tasks = n_img * n_out
    zero = np.float32(0.0)
    for wk in prange(n_workers):
        guarded = planes[wk]
        a = acc[wk]
        loaded = -1  # the image whose planes are in ``guarded``
        for task in range(wk * n_tasks // n_workers, (wk + 1) * n_tasks // n_workers):
            n = task // n_out
            o = task % n_out
            if n != loaded:
                for c in range(n_ch):
                    copy_plane_jit(guarded[c, g:g + p], x[n, c])
                loaded = n
            for t in range(p):
                a[t] = 0
            q = indptr[o]
            while q + 4 <= indptr[o + 1]:  # four kept weights per pass: the accumulator read and written once
                v0, v1, v2, v3 = values[q], values[q + 1], values[q + 2], values[q + 3]
                s0 = guarded[chan[q], g + shift[q]:g + shift[q] + p]
                s1 = guarded[chan[q + 1], g + shift[q + 1]:g + shift[q + 1] + p]
                s2 = guarded[chan[q + 2], g + shift[q + 2]:g + shift[q + 2] + p]
                s3 = guarded[chan[q + 3], g + shift[q + 3]:g + shift[q + 3] + p]
                ok0, ok1 = col_ok[tap_col[q]], col_ok[tap_col[q + 1]]
                ok2, ok3 = col_ok[tap_col[q + 2]], col_ok[tap_col[q + 3]]
                for t in range(p):
                    a[t] += ((v0 * (s0[t] if ok0[t] else zero) + v1 * (s1[t] if ok1[t] else zero))
                             + (v2 * (s2[t] if ok2[t] else zero) + v3 * (s3[t] if ok3[t] else zero)))
                q += 4
            for q in range(q, indptr[o + 1]):
                v = values[q]
                seg = guarded[chan[q], g + shift[q]:g + shift[q] + p]
                ok = col_ok[tap_col[q]]
                for t in range(p):
                    a[t] += v * (seg[t] if ok[t] else zero)
            dst = y[n, o]
            for i in range(h):
                drow = dst[i]
                for j in range(w):
                    drow[j] = a[i * w + j]


# FMA_ONLY: each kept weight adds a shifted plane (axpy), the sum over weights in CSR order
sparse_conv2d_direct_jit = njit(parallel=True, cache=True, fastmath=FMA_ONLY)(_sparse_conv2d_direct_loops)


def sparse_conv2d_direct_into(y, x, indptr, indices, values, kh, kw):
    """Run the kernel on validated arrays (``sparse_conv.sparse_conv2d`` checks them): y (N, O, H, W)
    float32 C-contiguous, x (N, C, H, W) float32 C-contiguous, the CSR triple over (O, C*kh*kw)."""
    _, n_ch, h, w = x.shape
    ph, pw = (kh - 1) // 2, (kw - 1) // 2
    p = h * w
    chan, tap, shift = same_padding_taps(indices, kh, kw, w)
    tap_col = tap % kw
    g, col_ok = same_padding_tables(h, w, kw, ph, pw)
    workers = get_num_threads()
    planes = np.zeros((workers, n_ch, p + 2 * g), dtype=np.float32)
    acc = np.empty((workers, p), dtype=np.float32)
    sparse_conv2d_direct_jit(y, x, indptr, chan, shift, tap_col, values, col_ok, planes, acc)
    return y
