"""The weight gradient of a pruned "same" convolution at its kept weights only: shifted planes, no patch matrix.

What
    For stride 1, dilation 1 and "same" padding (``sparse_direct.direct_fits``), the pruned weight
    (O, C, KH, KW) given by its kept positions as CSR over (O, C*KH*KW), x (N, C, H, W) and the
    upstream gradient dout (N, O, H, W):

        g[q] = dL/dw[o, c, kh, kw] = sum over n, t of dout[n, o, t] * shift(x[n, c], kh - ph, kw - pw)[t]

    for each kept entry q = (o, (c, kh, kw)), with shift as in ``sparse_direct`` (0 outside the plane)
    and t the flat position i*W + j (P = H*W). The cost is nnz*N*P multiply-adds: the gradient of the
    kept weights only, never a dense (O, C*KH*KW) one.

How
    Flattened, a shift is the constant offset (kh - ph)*W + (kw - pw) (``im2col.same_padding_taps``)
    into a plane with G = ph*W + pw zeros on each side (they stand for the rows above and below).
    A tap whose column leaves the row would wrap onto the neighbouring row; instead of a select per
    element (as ``sparse_direct`` does), each worker keeps KW copies of an image's planes, copy kw with
    the columns zeroed that tap column kw can only reach by wrapping (the last pw - kw columns for
    kw < pw, the first kw - pw for kw > pw; a column that a tap reaches legitimately is never one of
    them). Then every kept entry is a plain dot product of dout[n, o] with the copy (kw, c) read at
    offset G + shift. Small planes make short dot products (64 elements at 8x8), so a worker lays B
    images side by side (``strip_images``): a strip row per (kw, c) holds their copies G zeros apart,
    a strip row per o their dout planes at the same stride (P + G) with zeros in the gaps, and one dot
    product of B*(P + G) - G elements covers all B images (the gaps add 0*guard). Four entries of a row
    go per pass, so one load of dout serves four multiply-adds (five loads for four FMAs instead of
    eight). The workers take fixed groups of IMAGES_PER_PART images, each summed into its own partial
    (nnz,), and the partials are added in a fixed order in float64: the result does not depend on the
    number of threads.

    What bounds it (ResNet-20 layers, batch 128, 2 threads, loaded machine: ``benchmarks/README.md``):
    the loads, five per four FMAs, from L2 for the 16-channel 32x32 layer's strips (209 KB); the
    dense tiles kernel reuses both operands from registers, so at 30-50 % sparsity on 8x8 planes this
    kernel is about as fast as the dense weight gradient; on 16x16 and 32x32 planes it is faster from 30 %.

    A padding tap multiplies dout by an exact 0, as the im2col + GEMM formulation does: for finite
    inputs the same value as the dense masked gradient; an inf in dout gives NaN there, as im2col's does.

Reference
    ``sparse_conv.sparse_conv2d_backward_ref`` (the dense gradient by strided slices + einsum), read at the
    kept positions; the tests also compare with the patch-matrix path (``sparse_matmul.csr_sddmm``).
"""
import numpy as np
from numba import get_num_threads, njit, prange

from .fastmath import SUM_REASSOC
from .im2col import same_padding_taps

IMAGES_PER_PART = 8  # images per partial sum: 16 partials at batch 128, enough for any thread count here
MIN_DOT = 512  # strip_images: a dot product runs over at least this many elements when the batch allows


def strip_images(plane):
    """B, the images a worker's strips hold at once, for planes of ``plane`` = P + G elements: enough for
    dot products of MIN_DOT elements, at most IMAGES_PER_PART. On the ResNet-20 layers at batch 128 and
    30-90 % (2 threads, B = 1, 2, 3, 4, 8 interleaved): B = 8 for 8x8 planes was 1.0-1.4x faster than
    one image at a time (the per-dot overhead of 64-element dots), B = 2 for 16x16 1.0-1.1x, and
    32x32 planes were fastest one at a time (B = 8: 1.2-1.4x slower, the strips leave L2)."""
    return int(max(1, min(IMAGES_PER_PART, -(-MIN_DOT // plane))))


def wrap_columns(kw, w):
    """(lo, hi) int64 (KW,) arrays: the columns [lo[k], hi[k]) of a plane W wide that tap column k of a
    "same" KW-wide kernel reaches only by wrapping around a row edge (empty for the centre column)."""
    pw = (kw - 1) // 2
    lo, hi = np.zeros(kw, np.int64), np.zeros(kw, np.int64)
    for k in range(kw):
        d = k - pw
        if d < 0:
            lo[k], hi[k] = max(0, w + d), w
        elif d > 0:
            lo[k], hi[k] = 0, min(w, d)
    return lo, hi


def _sparse_conv2d_dw_direct_loops(parts, x, dout, indptr, prow, poff, wrap_lo, wrap_hi, w, xs, ds, per_part):
    """parts[part] (nnz,) = the gradient of the kept entries over images part*per_part .. (+per_part);
    x (N, C, P), dout (N, O, P). A worker takes B = ds.shape[2] // (P + G) images at a time: strip xs[wk]
    row kw*C + c holds their planes of channel c at G + b*(P + G) (the columns [wrap_lo[kw], wrap_hi[kw])
    zeroed, G zeros between), strip ds[wk] row o their dout planes at b*(P + G) (zeros between); entry q
    is the dot product of row o of ds with row prow[q] of xs from offset poff[q] = G + shift."""
    n_img, n_ch, p = x.shape
    n_out = dout.shape[1]
    n_kw = wrap_lo.shape[0]
    n_parts = parts.shape[0]
    n_workers = xs.shape[0]
    g = xs.shape[2] - ds.shape[2]
    stride = p + g
    block = ds.shape[2] // stride
    zero = np.float32(0.0)
    for wk in prange(n_workers):
        xw = xs[wk]
        dstrip = ds[wk]
        for part in range(wk * n_parts // n_workers, (wk + 1) * n_parts // n_workers):
            acc = parts[part]
            for q in range(acc.shape[0]):
                acc[q] = zero
            end = min(n_img, (part + 1) * per_part)
            for n0 in range(part * per_part, end, block):
                nb = min(block, end - n0)
                length = nb * stride - g  # the gaps after the last plane are not read
                for b in range(nb):
                    for k in range(n_kw):  # KW copies of the planes, the wrapping columns zeroed
                        for c in range(n_ch):
                            dst = xw[k * n_ch + c, g + b * stride:g + b * stride + p]
                            src = x[n0 + b, c]
                            for t in range(p):
                                dst[t] = src[t]
                            for i in range(p // w):
                                for j in range(wrap_lo[k], wrap_hi[k]):
                                    dst[i * w + j] = zero
                    for o in range(n_out):
                        dst = dstrip[o, b * stride:b * stride + p]
                        src = dout[n0 + b, o]
                        for t in range(p):
                            dst[t] = src[t]
                for o in range(n_out):
                    d = dstrip[o, :length]
                    q = indptr[o]
                    while q + 4 <= indptr[o + 1]:  # four entries per pass: one load of d for four FMAs
                        s0 = xw[prow[q], poff[q]:poff[q] + length]
                        s1 = xw[prow[q + 1], poff[q + 1]:poff[q + 1] + length]
                        s2 = xw[prow[q + 2], poff[q + 2]:poff[q + 2] + length]
                        s3 = xw[prow[q + 3], poff[q + 3]:poff[q + 3] + length]
                        a0 = zero
                        a1 = zero
                        a2 = zero
                        a3 = zero
                        for t in range(length):
                            dv = d[t]
                            a0 += dv * s0[t]
                            a1 += dv * s1[t]
                            a2 += dv * s2[t]
                            a3 += dv * s3[t]
                        acc[q] += a0
                        acc[q + 1] += a1
                        acc[q + 2] += a2
                        acc[q + 3] += a3
                        q += 4
                    for q in range(q, indptr[o + 1]):
                        s0 = xw[prow[q], poff[q]:poff[q] + length]
                        a0 = zero
                        for t in range(length):
                            a0 += d[t] * s0[t]
                        acc[q] += a0


# SUM_REASSOC: each kept entry's gradient is a dot product over the image strip
sparse_conv2d_dw_direct_jit = njit(parallel=True, cache=True, fastmath=SUM_REASSOC)(_sparse_conv2d_dw_direct_loops)


def sparse_conv2d_dw_direct_into(dvalues, dout, x, indptr, indices, kh, kw, block=None):
    """Run the kernel on validated arrays (``sparse_train.sparse_conv2d_weight_grad`` checks them):
    dvalues (nnz,) float32, dout (N, O, H, W) and x (N, C, H, W) float32 C-contiguous, the CSR's
    indptr (O + 1,) int64 and indices (nnz,) int32 over (O, C*kh*kw)."""
    n, c, h, w = x.shape
    o = dout.shape[1]
    p = h * w
    g = (kh - 1) // 2 * w + (kw - 1) // 2
    if n == 0 or len(indices) == 0:
        dvalues[:] = 0
        return dvalues
    chan, tap, shift = same_padding_taps(indices, kh, kw, w)
    prow = (tap % kw) * c + chan  # the copy (tap column, channel) an entry reads
    poff = g + shift
    wrap_lo, wrap_hi = wrap_columns(kw, w)
    block = strip_images(p + g) if block is None else block
    workers = get_num_threads()
    xs = np.zeros((workers, kw * c, g + block * (p + g)), dtype=np.float32)  # the gaps stay 0
    ds = np.zeros((workers, o, block * (p + g)), dtype=np.float32)
    parts = np.empty((-(-n // IMAGES_PER_PART), len(indices)), dtype=np.float32)
    sparse_conv2d_dw_direct_jit(parts, x.reshape(n, c, p), dout.reshape(n, o, p), indptr, prow, poff, wrap_lo,
                                wrap_hi, w, xs, ds, IMAGES_PER_PART)
    dvalues[:] = parts.sum(axis=0, dtype=np.float64)  # fixed order: independent of the thread count
    return dvalues
