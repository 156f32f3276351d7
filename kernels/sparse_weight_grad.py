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
    them). Then every kept entry is a plain dot product of two P-long vectors, dout[n, o] (in L1 while
    the row's entries use it) and the copy (kw, c) read at offset G + shift. Four entries of a row go
    per pass, so one load of dout serves four multiply-adds (five loads for four FMAs instead of
    eight). The workers take fixed groups of IMAGES_PER_PART images, each summed into its own
    partial (nnz,), and the partials are added in a fixed order in float64: the result does not
    depend on the number of threads.

    A padding tap multiplies dout by an exact 0, as the im2col + GEMM formulation does: for finite
    inputs the same value as the dense masked gradient; an inf in dout gives NaN there, as im2col's does.

Reference
    ``sparse.sparse_conv2d_backward_ref`` (the dense gradient by strided slices + einsum), read at the
    kept positions; the tests also compare with the patch-matrix path (``sparse.csr_sddmm``).
"""
import numpy as np
from numba import get_num_threads, njit, prange

from .im2col import same_padding_taps

IMAGES_PER_PART = 8  # images per partial sum: 16 partials at batch 128, enough for any thread count here
_FASTMATH_SUM = {"contract", "reassoc"}  # dot products: reassociation lets LLVM vectorise the reduction


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


def _sparse_conv2d_dw_direct_loops(parts, x, dout, indptr, prow, poff, wrap_lo, wrap_hi, w, planes, per_part):
    """parts[part] (nnz,) = the gradient of the kept entries over images part*per_part .. (+per_part);
    x (N, C, P), dout (N, O, P); entry q reads row prow[q] = kw*C + c of a worker's planes (KW*C,
    P + 2G) at offset poff[q] = G + shift; the columns [wrap_lo[kw], wrap_hi[kw]) of copy kw are 0."""
    n_img, n_ch, p = x.shape
    n_out = dout.shape[1]
    n_kw = wrap_lo.shape[0]
    n_parts = parts.shape[0]
    n_workers = planes.shape[0]
    g = (planes.shape[2] - p) // 2
    zero = np.float32(0.0)
    for wk in prange(n_workers):
        pl = planes[wk]
        for part in range(wk * n_parts // n_workers, (wk + 1) * n_parts // n_workers):
            acc = parts[part]
            for q in range(acc.shape[0]):
                acc[q] = zero
            for n in range(part * per_part, min(n_img, (part + 1) * per_part)):
                for k in range(n_kw):  # KW copies of image n's planes, the wrapping columns zeroed
                    for c in range(n_ch):
                        dst = pl[k * n_ch + c, g:g + p]
                        src = x[n, c]
                        for t in range(p):
                            dst[t] = src[t]
                        for i in range(p // w):
                            for j in range(wrap_lo[k], wrap_hi[k]):
                                dst[i * w + j] = zero
                for o in range(n_out):
                    d = dout[n, o]
                    q = indptr[o]
                    while q + 4 <= indptr[o + 1]:  # four entries per pass: one load of d for four FMAs
                        s0 = pl[prow[q], poff[q]:poff[q] + p]
                        s1 = pl[prow[q + 1], poff[q + 1]:poff[q + 1] + p]
                        s2 = pl[prow[q + 2], poff[q + 2]:poff[q + 2] + p]
                        s3 = pl[prow[q + 3], poff[q + 3]:poff[q + 3] + p]
                        a0 = zero
                        a1 = zero
                        a2 = zero
                        a3 = zero
                        for t in range(p):
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
                        s0 = pl[prow[q], poff[q]:poff[q] + p]
                        a0 = zero
                        for t in range(p):
                            a0 += d[t] * s0[t]
                        acc[q] += a0


sparse_conv2d_dw_direct_jit = njit(parallel=True, cache=True, fastmath=_FASTMATH_SUM)(_sparse_conv2d_dw_direct_loops)


def _dw_direct_into(dvalues, dout, x, indptr, indices, kh, kw):
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
    planes = np.zeros((get_num_threads(), kw * c, p + 2 * g), dtype=np.float32)  # the guards stay 0
    parts = np.empty((-(-n // IMAGES_PER_PART), len(indices)), dtype=np.float32)
    sparse_conv2d_dw_direct_jit(parts, x.reshape(n, c, p), dout.reshape(n, o, p), indptr, prow, poff, wrap_lo,
                                wrap_hi, w, planes, IMAGES_PER_PART)
    dvalues[:] = parts.sum(axis=0, dtype=np.float64)  # fixed order: independent of the thread count
    return dvalues
