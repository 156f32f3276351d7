"""The float32 weight gradient of a convolution on channels-last register tiles.

What: for x (N, C, H, W), dout (N, O, OH, OW), stride s, padding p, dilation d (groups 1),

    dw[o, c, kh, kw] = sum over n, oh, ow of  dout[n, o, oh, ow] * xpad[n, c, oh*sh + kh*dh, ow*sw + kw*dw]

How: x is copied once, zero-padded, into channels-last order xh (N, Hp, Wp, Cp), Cp = C rounded up to
the vector width L (zero channels; L = 16 with the AVX-512 tile set, 8 with the AVX2 one). A pixel's
channels are then contiguous, and so, at dilation 1, are the KW*Cp values (kw, c) of one kernel row
kh. With dw laid out (O, KH, KW*Cp), a span of those columns is

    dw[o, kh, j0:j0 + Lv] += sum over k of  dout_row_o[k] * xh_flat[base + rowoff[kh] + soff[k] + j0 : ... + Lv]

exactly the product ``fma_tile`` computes (rows o of a C-contiguous matrix broadcast, v vectors of
L columns gathered at offsets ``soff[k]``), in its accumulating form: k runs over the output pixels
(oh, ow) of one image, soff[k] = (oh*sh*Wp + ow*sw)*Cp and rowoff[kh] = kh*dh*Wp*Cp, so strides are
only offsets. At dilation dw > 1 the taps of a row are not adjacent: each tap is then a
"row" of Cp columns (rowoff over (kh, kw)). The AVX-512 tiles keep 8 output channels x 48 columns
(or 32, or 16 x 16 where the span allows no more) in registers: 12 loads per 24 products; the AVX2
ones (16 ymm registers) 4 channels x 24 columns (or 16, or 8 x 8): 7 loads per 12 products. All loads
but the offset are aligned to the channel vectors, and there are no horizontal sums (the reduction
runs across calls, not across vector lanes, unlike ``conv_tiles``'s ``dw_tile``, whose unaligned
patch-row loads bound it).

Rows of the broadcast matrix are dout rows: dout (N, O, OH*OW) already is (O, P) per image (zero
rows are added when the tile height does not divide O). Work is split into a fixed number of chunks
of images (from the shapes alone), each accumulating its own partial dw; the partials are summed in a
fixed order in float64, so the result does not depend on the thread count. Every image's pass runs
over the whole partial, so it must stay in cache: layers whose dw exceeds 4 MiB (ResNet-18's
512-channel ones) are left to im2col + GEMM.

Reference: ``conv2d_dw_nhwc_ref`` (NumPy, one einsum per tap); ``tinycomp_kernels.conv`` chooses this
path (``nhwc_backward_weight_fit``) and the tests compare with it and with im2col + GEMM.
"""
import numpy as np
from numba import njit, prange

from . import conv_tiles
from .fma_tile import (fma_tile_4_8x2_acc, fma_tile_4_8x3_acc, fma_tile_8_8x1_acc, fma_tile_8_16x2_acc,
                       fma_tile_8_16x3_acc, fma_tile_16_16x1_acc)
from .im2col import conv_output_size

__all__ = ["conv2d_dw_nhwc_ref", "conv2d_nhwc_backward_weight", "nhwc_backward_weight_fit"]

MAX_PARTIAL = 2**20  # floats of one partial dw (4 MiB): each image's pass sweeps it, so it must stay in L2
MAX_CHUNKS = 16  # partial gradients: enough for load balance on a few cores, few enough to sum cheaply


def conv2d_dw_nhwc_ref(dout, x, w_shape, s, p, d):
    """NumPy oracle in float64: dw[:, :, kh, kw] contracts dout with tap (kh, kw)'s strided slice."""
    O, C, KH, KW = w_shape
    OH, OW = dout.shape[2:]
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (p[0], p[0]), (p[1], p[1])))
    dw = np.zeros(w_shape)
    for kh in range(KH):
        for kw in range(KW):
            r0, c0 = kh * d[0], kw * d[1]
            tap = xp[:, :, r0:r0 + s[0] * (OH - 1) + 1:s[0], c0:c0 + s[1] * (OW - 1) + 1:s[1]]  # (N, C, OH, OW)
            dw[:, :, kh, kw] = np.einsum("nohw,nchw->oc", dout.astype(np.float64), tap)
    return dw.astype(np.float32)


def lanes(wide):
    """Columns per vector: 16 with the AVX-512 tile set (``wide``), 8 with the AVX2 one."""
    return 16 if wide else 8


def padded_channels(C, wide):
    """Cp: C rounded up to the vector width (the channels-last copy's zero channels)."""
    L = lanes(wide)
    return -(-C // L) * L


def tile_shape(span, wide):
    """(output channels, vectors) of the tile that covers a span of columns (a multiple of the lanes):
    8 x 3, 8 x 2 or 16 x 1 vectors of 16 (AVX-512), 4 x 3, 4 x 2 or 8 x 1 of 8 (AVX2)."""
    L, (high, low) = lanes(wide), ((8, 16) if wide else (4, 8))
    return (high, 3) if span % (3 * L) == 0 else (high, 2) if span % (2 * L) == 0 else (low, 1)


# --- loops ----------------------------------------------------------------------------------------
def _pad_channels_last_loops(xh, x, ph, pw):
    """xh (N, Hp, Wp, Cp): xh[n, h + ph, w + pw, c] = x[n, c, h, w], zero everywhere else (the padding
    and channels C..Cp). Every value is written, so xh may come uninitialised: one pass, not a zeroing
    pass then a copy; parallel over output rows, each read along x's contiguous w."""
    N, C, H, W = x.shape
    Hp, Wp, Cp = xh.shape[1], xh.shape[2], xh.shape[3]
    for t in prange(N * Hp):
        n = t // Hp
        hp = t % Hp
        h = hp - ph
        if h < 0 or h >= H:                       # a padding row
            for w in range(Wp):
                for c in range(Cp):
                    xh[n, hp, w, c] = 0
            continue
        for w in range(Wp):
            for c in range(C, Cp):                # the zero channels up to the vector width
                xh[n, hp, w, c] = 0
        for w in range(pw):                       # the padding columns, left and right
            for c in range(C):
                xh[n, hp, w, c] = 0
        for w in range(pw + W, Wp):
            for c in range(C):
                xh[n, hp, w, c] = 0
        for c in range(C):
            for w in range(W):
                xh[n, hp, w + pw, c] = x[n, c, h, w]


def _conv2d_dw_nhwc_loops(parts, dout, xh, soff, rowoff, span, rows, vecs, per_chunk, wide):
    """parts[ch] (Opad, R*span) += the products of images ch*per_chunk .. (+per_chunk), for the R =
    rowoff.size rows of ``span`` contiguous columns, on tiles of (rows, vecs) = tile_shape(span, wide):
    dout (N, Opad, P), xh (N, Hp, Wp, Cp) the channels-last input."""
    nchunks, Opad, KC = parts.shape
    N = dout.shape[0]
    plane = xh.shape[1] * xh.shape[2] * xh.shape[3]   # one image of xh
    pf = parts.reshape(-1)                             # flat views: the tiles address both by offsets
    xf = xh.reshape(-1)
    L = 16 if wide else 8
    cols = vecs * L
    for ch in prange(nchunks):
        for n in range(ch * per_chunk, min(N, (ch + 1) * per_chunk)):
            a = dout[n]                                # (Opad, P)
            for o0 in range(0, Opad, rows):
                for r in range(rowoff.size):
                    out_off = (ch * Opad + o0) * KC + r * span
                    base = n * plane + rowoff[r]
                    for j0 in range(0, span, cols):
                        if wide and vecs == 3:
                            fma_tile_8_16x3_acc(pf, out_off + j0, KC, a, o0, xf, base + j0, soff, L, L)
                        elif wide and vecs == 2:
                            fma_tile_8_16x2_acc(pf, out_off + j0, KC, a, o0, xf, base + j0, soff, L, L)
                        elif wide:
                            fma_tile_16_16x1_acc(pf, out_off + j0, KC, a, o0, xf, base + j0, soff, L, L)
                        elif vecs == 3:
                            fma_tile_4_8x3_acc(pf, out_off + j0, KC, a, o0, xf, base + j0, soff, L, L)
                        elif vecs == 2:
                            fma_tile_4_8x2_acc(pf, out_off + j0, KC, a, o0, xf, base + j0, soff, L, L)
                        else:
                            fma_tile_8_8x1_acc(pf, out_off + j0, KC, a, o0, xf, base + j0, soff, L, L)


pad_channels_last_jit = njit(parallel=True, cache=True)(_pad_channels_last_loops)
conv2d_dw_nhwc_jit = njit(parallel=True, cache=True)(_conv2d_dw_nhwc_loops)


# --- wrapper: arguments as conv2d_backward checked them (pairs s, p, d) ---------------------------
def nhwc_backward_weight_fit(x_shape, w_shape, OW, groups, dtype):
    """Whether the weight gradient runs here: float32, groups 1, more than 8 input channels (8 or fewer
    would be half zero channels or more with 16 lanes), at least 8 output channels, dw within
    MAX_PARTIAL; with the AVX2 tile set only at OW = 8, where each output row fills one vector of
    ``conv_tiles``'s ``dw_tile``. Zen 3, 2 threads, old / new time per call (median of 9 alternated
    pairs, 2026-12-03): OW = 8 1.09-1.35x faster (ResNet-20's 64 ch 8x8 and 32 -> 64 /2 at batch 128,
    ResNet-18's 128 -> 256 /2 and 256 ch 8x8 at 64); wider rows 0.85-1.26x (ResNet-18's 64 -> 128 /2
    0.85x and 64 ch 32x32 0.87x, ResNet-20's 16 -> 32 /2 1.26x, its stride-1 layers and ResNet-18's
    128 ch 16x16 1.00-1.06x), so they stay on dw_tile.
    A count padded with zero channels to a multiple of 8 (9-15 -> 16) takes this path as it does, so
    both give the same bits for the channels they share."""
    O, _, KH, KW = w_shape
    wide = conv_tiles.WIDE_VECTORS
    Cp = padded_channels(x_shape[1], wide)
    return (np.dtype(dtype) == np.float32 and groups == 1 and x_shape[1] > 8 and O >= 8
            and (wide or OW == 8)
            and (O + 15) * KH * KW * Cp <= MAX_PARTIAL)   # O + 15: rows padded to the tile height


def conv2d_nhwc_backward_weight(dout, x, w_shape, s, p, d):
    """dw (O, C, KH, KW) of the convolution: module docstring."""
    O, C, KH, KW = w_shape
    N, _, H, W = x.shape
    OH, OW = dout.shape[2:]
    if dout.shape != (N, O, *conv_output_size(H, W, KH, KW, s, p, d)):
        raise ValueError(f"conv2d_nhwc_backward_weight: dout has shape {dout.shape}, which input {x.shape} and "
                         f"weight {tuple(w_shape)} (stride {s}, padding {p}, dilation {d}) do not give")
    if N == 0:
        return np.zeros(w_shape, np.float32)
    P = OH * OW
    wide = conv_tiles.WIDE_VECTORS
    Cp = padded_channels(C, wide)
    Hp, Wp = H + 2 * p[0], W + 2 * p[1]
    if d[1] == 1:   # a kernel row's taps are adjacent pixels: one span of KW*Cp columns per kh
        span, rowoff = KW * Cp, np.arange(KH, dtype=np.int64) * (d[0] * Wp * Cp)
    else:           # one span of Cp columns per tap
        kh, kw = np.meshgrid(np.arange(KH), np.arange(KW), indexing="ij")
        span, rowoff = Cp, ((kh * d[0] * Wp + kw * d[1]) * Cp).reshape(-1).astype(np.int64)
    rows, vecs = tile_shape(span, wide)
    Opad = -(-O // rows) * rows
    xh = np.empty((N, Hp, Wp, Cp), dtype=np.float32)                # every value written below
    pad_channels_last_jit(xh, np.ascontiguousarray(x), p[0], p[1])
    dout = np.ascontiguousarray(dout).reshape(N, O, P)            # (N, O, P): an image's rows are contiguous
    if Opad != O:
        dout = np.concatenate([dout, np.zeros((N, Opad - O, P), np.float32)], axis=1)  # rows dropped below
    oh, ow = np.meshgrid(np.arange(OH), np.arange(OW), indexing="ij")
    soff = (((oh * s[0]) * Wp + ow * s[1]) * Cp).reshape(-1).astype(np.int64)    # (P,)
    # partials no larger than the channel-padded input (N*Cp*H*W / (Opad*KH*KW*Cp) of them), within [2,
    # MAX_CHUNKS]: C does not enter, so a count padded with zero channels splits as its padded layer does
    nchunks = min(N, max(2, min(MAX_CHUNKS, N * H * W // (Opad * KH * KW))))
    per_chunk = -(-N // nchunks)
    parts = np.zeros((-(-N // per_chunk), Opad, KH * KW * Cp), dtype=np.float32)
    conv2d_dw_nhwc_jit(parts, dout, xh, soff, rowoff, span, rows, vecs, per_chunk, wide)
    dw = parts.sum(axis=0, dtype=np.float64).astype(np.float32).reshape(Opad, KH, KW, Cp)[:O, :, :, :C]
    return np.ascontiguousarray(dw.transpose(0, 3, 1, 2))  # (O, KH, KW, C) -> (O, C, KH, KW)
