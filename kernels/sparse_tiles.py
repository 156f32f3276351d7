"""Kept-weight tiles: a sparse convolution whose every 8x8 block of an output plane is one register tile.

What
    For the weight W (O, C, KH, KW) stored as its kept entries in CSR over (O, C*KH*KW), any stride,
    padding and dilation:

        y[n, o, oh, ow] = sum over kept (c, kh, kw) of w[o, c, kh, kw] * x[n, c, oh*sh - ph + kh*dh, ow*sw - pw + kw*dw]

    The input is zero-padded and split into its stride phases once (``conv_tiles.phase_split_jit``,
    in parallel, up to whole 8x8 blocks of output), after which kept entry (c, kh, kw) of output row
    oh reads the contiguous row segment of its phase plane at the offset

        koff = (((c*sh + kh*dh % sh)*sw + kw*dw % sw)*Hq + kh*dh // sh)*Wq + kw*dw // sw

    from the block's corner (``conv_tiles.tap_offsets``, one per kept entry instead of one per patch
    row). One ``fma_tile_1_8x8`` per block: eight output rows of 8 columns in eight vector
    accumulators; per kept entry of the block's output channel, a broadcast weight times eight row
    segments, the output written once. With the AVX-512 tile set (``conv_tiles.WIDE_VECTORS``) and a
    padded output width that 16 divides, blocks are 8 rows x 16 columns (``fma_tile_1_16x8``): the same
    loads fill whole 16-lane vectors, and each output's sum keeps its order (equal bits). Parallel over
    (image, 8-row band, output channel), channels innermost so that a band's input rows stay in L1
    across them. Per output pixel the kept entries
    are summed in CSR order; blocks past the output's edge are computed on the zero padding and cut.

Why
    The direct path (``sparse_direct``) reads and writes an accumulator plane once per four kept
    weights and masks the taps that cross a row edge; the implicit path (``sparse_implicit``) writes
    band rows of the patch matrix for every patch row a kept weight uses. Here each kept weight costs
    eight vector loads and multiply-adds per block and nothing else, at any stride: the form of a
    layer with few kept weights per output channel, such as a rounded SAL layer (one tap per (o, c)
    pair: ``sal``) or a layer pruned to 90 %. Timings: ``benchmarks/results/sal.md`` (SAL layers) and
    ``tinycomp/runtime/sparse.py`` (pruned layers).

Reference
    ``sparse_conv.sparse_conv2d_ref`` (dense weight, sliding windows + einsum); the tests compare.
"""
import numpy as np
from numba import njit, prange

from . import conv_tiles
from .conv_tiles import phase_split_jit, tap_offsets
from .fma_tile import fma_tile_1_8x8, fma_tile_1_16x8
from .im2col import as_pair, conv_output_size

__all__ = ["SparseTilesPlan"]

BLOCK = 8  # output rows of a tile, and its columns (16 with the AVX-512 set where the padded width allows)


def _sparse_tiles_loops(out, xq, indptr, koff, values, wide):
    """out (N, O, OHr, OWr), OHr and OWr multiples of 8, from the phase-split padded input xq
    (N, C*sh*sw, Hq, Wq); kept entry q (CSR order) of output channel o reads at koff[q] from a block's
    corner n*plane + oh0*Wq + ow0. ``wide`` (AVX-512) and OWr a multiple of 16: 8 x 16 blocks."""
    n_img, n_out, hr, wr = out.shape
    plane = xq.shape[1] * xq.shape[2] * xq.shape[3]
    wq = xq.shape[3]
    of = out.reshape(-1)  # flat views: the tiles address both by offsets
    xf = xq.reshape(-1)
    bands = hr // 8
    for t in prange(n_img * n_out * bands):
        n = t // (n_out * bands)  # channels innermost: a band's input rows stay in L1 across them
        h0 = t // n_out % bands * 8
        o = t % n_out
        q0, q1 = indptr[o], indptr[o + 1]
        weights = values[q0:q1].reshape((1, q1 - q0))  # the tile's (rows, K) weights: one row
        taps = koff[q0:q1]
        row0 = ((n * n_out + o) * hr + h0) * wr
        if wide and wr % 16 == 0:
            for j0 in range(0, wr, 16):
                fma_tile_1_16x8(of, row0 + j0, 0, weights, 0, xf, n * plane + h0 * wq + j0, taps, wq, wr)
        else:
            for j0 in range(0, wr, 8):
                fma_tile_1_8x8(of, row0 + j0, 0, weights, 0, xf, n * plane + h0 * wq + j0, taps, wq, wr)


sparse_tiles_jit = njit(parallel=True, cache=True)(_sparse_tiles_loops)


class SparseTilesPlan:
    """The kept-weight tiles for one layer and input size (H, W): kept entry q of the CSR (``indptr``
    int64 (O + 1,), ``values`` float32 (nnz,)) reads input channel chans[q] at tap (kh[q], kw[q]) of a
    (C, KH, KW) kernel. The caller has checked the CSR (indptr from 0, non-decreasing, to nnz) and
    the entries' ranges; a call checks x (``run`` does not: for callers that checked it) and runs the
    phase split and the tiles."""

    def __init__(self, indptr, chans, kh, kw, values, in_channels, kernel_size, input_hw, stride=1, padding=0,
                 dilation=1):
        self.indptr = np.ascontiguousarray(indptr, dtype=np.int64)
        self.values = np.ascontiguousarray(values, dtype=np.float32)
        self.c = int(in_channels)
        s, p, d = as_pair(stride, "stride"), as_pair(padding, "padding"), as_pair(dilation, "dilation")
        KH, KW = kernel_size
        self.h, self.w = (int(v) for v in input_hw)
        self.s, self.p = s, p
        self.oh, self.ow = conv_output_size(self.h, self.w, KH, KW, s, p, d)
        self.ohr, self.owr = -(-self.oh // BLOCK) * BLOCK, -(-self.ow // BLOCK) * BLOCK
        hq = self.ohr + (KH - 1) * d[0] // s[0]  # rows a block band reads: its own and the taps' reach
        wq = self.owr + (KW - 1) * d[1] // s[1]
        self.padded = (self.c * s[0] * s[1], hq, wq)
        self.koff = tap_offsets(chans, kh, kw, s, d, hq, wq)

    @classmethod
    def from_csr(cls, indptr, indices, values, weight_shape, input_hw, stride=1, padding=0, dilation=1):
        """The plan of a weight (O, C, KH, KW) stored as CSR over (O, C*KH*KW): column c*KH*KW + kh*KW + kw
        is input channel c at tap (kh, kw)."""
        _, c, kh, kw = weight_shape
        column = np.asarray(indices, dtype=np.int64)
        tap = column % (kh * kw)
        return cls(indptr, column // (kh * kw), tap // kw, tap % kw, values, c, (kh, kw), input_hw, stride, padding,
                   dilation)

    def __call__(self, x):
        if not isinstance(x, np.ndarray) or x.ndim != 4 or x.dtype != np.float32 or not x.flags.c_contiguous:
            raise ValueError(f"sparse tiles: x must be a C-contiguous 4-D float32 array, got "
                             f"{getattr(x, 'dtype', type(x))} {getattr(x, 'shape', '')}")
        if x.shape[1:] != (self.c, self.h, self.w):
            raise ValueError(f"sparse tiles: x is {x.shape[1:]}, the plan was made for {(self.c, self.h, self.w)}")
        return self.run(x)

    def run(self, x):
        """The layer on x, which the caller has checked: C-contiguous float32 (N, C, H, W) of the plan."""
        n = x.shape[0]
        xq = np.empty((n,) + self.padded, dtype=np.float32)
        phase_split_jit(xq, x, self.p[0], self.p[1], self.s[0], self.s[1])  # in parallel; zeros past x
        out = np.empty((n, len(self.indptr) - 1, self.ohr, self.owr), dtype=np.float32)
        sparse_tiles_jit(out, xq, self.indptr, self.koff, self.values, conv_tiles.WIDE_VECTORS)
        if (self.ohr, self.owr) == (self.oh, self.ow):
            return out
        return np.ascontiguousarray(out[:, :, :self.oh, :self.ow])  # (N, O, OH, OW)
