"""Implicit-im2col sparse convolution: the sparse matmul's kernel with the patch rows written from x.

What
    For stride 1, dilation 1 and "same" padding (``sparse_direct.direct_fits``), with the pruned weight
    W (O, K = C*KH*KW) as a ``csr.BlockedCSR``:

        y[n, o, t] = (W @ cols)[o, n*P + t],   cols = im2col(x) (K, N*P), P = H*W

    computed by the loops of ``sparse_matmul.csr_matmul_blocked``, except where that kernel copies the rows
    of a band of b into its L2 buffer: here they are written from x, and the patch matrix never
    exists. Row k = (c, kh, kw) of cols over the flat columns j = n*P + t is x[n, c] read at the flat
    offset shift[k] = (kh - ph)*W + (kw - pw) from t, and 0 where tap (kh, kw) of output position t
    falls in the padding (``tap_ok[kh*KW + kw, t]``, a select: an inf in x must not become NaN). A
    valid tap never leaves its image's plane, so the column slab [c0, c0 + cw) of row k is one pass
    over channel c's values at flat columns c0 - G .. c0 + cw + G (G = ph*W + pw, the largest |shift|),
    which a worker first gathers into a small buffer (``gbuf``) once per channel of the band and reads
    at KH*KW offsets: taps that cross into a neighbouring image read its values and are masked.
    The output slab is copied straight into y (N, O, P): no transpose pass.

Why
    ``sparse_conv2d``'s im2col path writes the patch matrix (9x the input for 3x3, 38 MB for 256 images
    of 64 channels 8x8) and the product then reads it back from memory or L3; here the band copy reads
    x (1/9 of that) from cache. Twelve runs of ``benchmarks/bench_sparse_conv.py`` (2 threads,
    03:27-04:23 UTC on 2026-11-27) on the six CIFAR ResNet 3x3 layers: 1.7-3.1x faster than the im2col
    path at 95 % sparsity, 1.1-4.4x over 0-99 %, never slower.

    Where the time goes (95 %, 256 images of 64 channels 8x8, each phase alone from a copy of the
    kernel, interleaved): writing the band rows 0.6 ms, the register tiles 0.7 ms, the output 0.1-0.4
    ms. Measured and not taken (prototypes in /tmp, interleaved against this kernel):
    - no band rows at all: the tiles read the gathered channel buffers at each entry's tap offset,
      the padding taps masked by a per-tap bit mask (masked 512-bit loads): the band writes go, but
      the tiles' loads are then unaligned and masked, 1.3-1.8x slower than aligned loads from L2; in
      all 0.9-1.1x this kernel on 32-128 channels, 0.7x on 256;
    - a padded grid (each plane row followed by pw zeros, ph zero rows between images), on which a tap
      is a pure offset with no mask: 27 % more columns on 8x8 maps and the same unaligned loads; 2x
      slower.

Reference
    ``sparse_conv.sparse_conv2d_ref`` (dense weight, sliding windows + einsum); tests compare all paths.
"""
import numpy as np
from numba import njit, prange

from .csr_tile import band_tiles
from .im2col import same_padding_tables, same_padding_taps
from .sparse_matmul import band_buffers


def implicit_tables(c, kh, kw, h, w, slab):
    """(chan, shift, tap, tap_ok, G) for the patch rows k = (c, kh, kw) of a "same" convolution:
    input channel, flat offset, tap number kh*KW + kw, int64 (K,); tap_ok (KH*KW, L) bool, True where
    the tap of flat position t mod P reads inside the plane, repeated over L >= P + slab columns so
    that a slab starting anywhere in a plane reads it as one slice; G = ph*W + pw."""
    ph, pw = (kh - 1) // 2, (kw - 1) // 2
    chan, tap, shift = same_padding_taps(np.arange(c * kh * kw), kh, kw, w)
    p = h * w
    g, col_ok = same_padding_tables(h, w, kw, ph, pw)
    rows = np.arange(p) // w + np.arange(kh)[:, None] - ph  # (kh, p): the input row tap row kh reads
    ok = (((rows >= 0) & (rows < h))[:, None, :] & col_ok[None, :, :]).reshape(kh * kw, p)
    return chan, shift, tap, np.tile(ok, (1, -(-(p + slab) // p))), g


def _sparse_conv2d_implicit_loops(y, ptr, indices, values, used, used_ptr, x, chan, shift, tap, tap_ok, g,
                                  k_block, slab, row_block, bbuf, obuf, gbuf):
    """y (N, O, P) = W @ im2col(x) with x (N, C, P); tasks (column slab, row block) split as in
    ``sparse_matmul._csr_matmul_loops``; gbuf[w] (at least slab + 2G) is worker w's channel buffer."""
    n_img, m, p = y.shape
    n = n_img * p
    n_kb = (len(ptr) - 1) // max(m, 1)
    n_sl = (n + slab - 1) // slab
    n_rb = (m + row_block - 1) // row_block
    n_tasks = n_sl * n_rb
    n_workers = bbuf.shape[0]
    zero = np.float32(0.0)
    for wkr in prange(n_workers):
        ob = obuf[wkr]
        bb = bbuf[wkr]
        gb = gbuf[wkr]
        for t in range(wkr * n_tasks // n_workers, (wkr + 1) * n_tasks // n_workers):
            c0 = (t // n_rb) * slab
            cw = min(slab, n - c0)
            r0 = (t % n_rb) * row_block
            r1 = min(r0 + row_block, m)
            t0 = c0 % p  # the slab's first column within its plane
            for kb in range(n_kb):
                k0 = kb * k_block
                loaded = -1  # the channel in gb
                for u in range(used_ptr[kb], used_ptr[kb + 1]):
                    k = used[u]
                    if chan[k] != loaded:  # gb[e] = channel chan[k] at flat column c0 - G + e, 0 outside
                        loaded = chan[k]
                        e = 0
                        j = c0 - g
                        while e < cw + 2 * g:
                            if j < 0 or j >= n:
                                run = min(-j, cw + 2 * g - e) if j < 0 else cw + 2 * g - e
                                dz = gb[e:e + run]
                                for q in range(run):
                                    dz[q] = zero
                            else:
                                img = j // p
                                run = min(p - (j - img * p), cw + 2 * g - e)
                                src = x[img, loaded, j - img * p:j - img * p + run]
                                dst = gb[e:e + run]
                                for q in range(run):
                                    dst[q] = src[q]
                            e += run
                            j += run
                    seg = gb[g + shift[k]:g + shift[k] + cw]
                    ok = tap_ok[tap[k], t0:t0 + cw]
                    row = bb[k - k0, :cw]
                    for q in range(cw):
                        row[q] = seg[q] if ok[q] else zero
                band_tiles(ob, r0, r1, cw, ptr, kb * m, kb > 0, indices, values, bb)
            img = c0 // p
            j = c0
            while j < c0 + cw:  # the output slab into y, one image's run at a time
                run = min(p - (j - img * p), c0 + cw - j)
                for i in range(r0, r1):
                    src = ob[i - r0, j - c0:j - c0 + run]
                    dst = y[img, i, j - img * p:j - img * p + run]
                    for q in range(run):
                        dst[q] = src[q]
                j += run
                img += 1


sparse_conv2d_implicit_jit = njit(parallel=True, cache=True)(_sparse_conv2d_implicit_loops)


def sparse_conv2d_implicit_into(y, x, bw, kh, kw, slab=None):
    """y (N, O, H, W) = the "same" convolution of x (N, C, H, W) with W given as a BlockedCSR over
    (O, C*kh*kw), on arrays ``sparse_conv.sparse_conv2d`` has checked: the matmul's plan and buffers
    (``sparse_matmul.band_buffers``), the band rows written from x. ``slab`` (columns of N*H*W)
    overrides the plan, for tests."""
    n, c, h, w = x.shape
    o, p = y.shape[1], h * w
    if n == 0 or o == 0:
        return y
    with band_buffers(o, n * p, c * kh * kw, bw.k_block, slab) as (slab, row_block, bbuf, obuf):
        chan, shift, tap, tap_ok, g = implicit_tables(c, kh, kw, h, w, slab)
        gbuf = np.empty((bbuf.shape[0], slab + 2 * g), dtype=np.float32)
        sparse_conv2d_implicit_jit(y.reshape(n, o, p), bw.ptr, bw.indices, bw.values, bw.used, bw.used_ptr,
                                   x.reshape(n, c, p), chan, shift, tap, tap_ok, g, bw.k_block, slab, row_block,
                                   bbuf, obuf, gbuf)
    return y
