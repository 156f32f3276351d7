"""The float32 weight gradient of a convolution on channels-last register tiles (AVX-512).

What: for x (N, C, H, W), dout (N, O, OH, OW), stride s, padding p, dilation d (groups 1),

    dw[o, c, kh, kw] = sum over n, oh, ow of  dout[n, o, oh, ow] * xpad[n, c, oh*sh + kh*dh, ow*sw + kw*dw]

How: x is copied once, zero-padded, into channels-last order xh (N, Hp, Wp, Cp), Cp = C rounded up to
16 (zero channels). A pixel's channels are then contiguous, and so, at dilation 1, are the KW*Cp
values (kw, c) of one kernel row kh. With dw laid out (O, KH, KW*Cp), a span of those columns is

    dw[o, kh, j0:j0 + 16v] += sum over k of  dout_row_o[k] * xh_flat[base + rowoff[kh] + soff[k] + j0 : ... + 16v]

exactly the product ``fma_tile`` computes (rows o of a C-contiguous matrix broadcast, v vectors of
16 columns gathered at offsets ``soff[k]``), in its accumulating form: k runs over the output pixels
(oh, ow) of one image, soff[k] = (oh*sh*Wp + ow*sw)*Cp and rowoff[kh] = kh*dh*Wp*Cp, so strides are
only offsets. At dilation dw > 1 the taps of a row are not adjacent: each tap is then a
"row" of Cp columns (rowoff over (kh, kw)). The tiles keep 8 output channels x 48 columns (or 32, or
16 x 16 where the span allows no more) in registers: 12 loads per 24 products, all but the
offset aligned to the channel vectors, and no horizontal sums (the reduction runs across calls, not
across vector lanes, unlike ``conv_tiles``'s ``dw_tile``, whose unaligned patch-row loads bound it).

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
from .fma_tile import fma_tile_8_16x2_acc, fma_tile_8_16x3_acc, fma_tile_16_16x1_acc
from .im2col import conv_output_size

__all__ = ["conv2d_dw_nhwc_ref", "conv2d_nhwc_backward_weight", "nhwc_backward_weight_fit"]

LANES = 16  # columns per vector of the AVX-512 tiles
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


def padded_channels(C):
    """Cp: C rounded up to the vector width (the channels-last copy's zero channels)."""
    return -(-C // LANES) * LANES


def tile_shape(span):
    """(output channels, vectors) of the tile that covers a span of columns (a multiple of 16)."""
    return (8, 3) if span % (3 * LANES) == 0 else (8, 2) if span % (2 * LANES) == 0 else (16, 1)


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


def _conv2d_dw_nhwc_loops(parts, dout, xh, soff, rowoff, span, rows, vecs, per_chunk):
    """parts[ch] (Opad, R*span) += the products of images ch*per_chunk .. (+per_chunk), for the R =
    rowoff.size rows of ``span`` contiguous columns, on tiles of (rows, vecs) = tile_shape(span):
    dout (N, Opad, P), xh (N, Hp, Wp, Cp) the channels-last input."""
    nchunks, Opad, KC = parts.shape
    N = dout.shape[0]
    plane = xh.shape[1] * xh.shape[2] * xh.shape[3]   # one image of xh
    pf = parts.reshape(-1)                             # flat views: the tiles address both by offsets
    xf = xh.reshape(-1)
    cols = vecs * LANES
    for ch in prange(nchunks):
        for n in range(ch * per_chunk, min(N, (ch + 1) * per_chunk)):
            a = dout[n]                                # (Opad, P)
            for o0 in range(0, Opad, rows):
                for r in range(rowoff.size):
                    out_off = (ch * Opad + o0) * KC + r * span
                    base = n * plane + rowoff[r]
                    for j0 in range(0, span, cols):
                        if vecs == 3:
                            fma_tile_8_16x3_acc(pf, out_off + j0, KC, a, o0, xf, base + j0, soff, LANES, LANES)
                        elif vecs == 2:
                            fma_tile_8_16x2_acc(pf, out_off + j0, KC, a, o0, xf, base + j0, soff, LANES, LANES)
                        else:
                            fma_tile_16_16x1_acc(pf, out_off + j0, KC, a, o0, xf, base + j0, soff, LANES, LANES)


pad_channels_last_jit = njit(parallel=True, cache=True)(_pad_channels_last_loops)
conv2d_dw_nhwc_jit = njit(parallel=True, cache=True)(_conv2d_dw_nhwc_loops)


# --- wrapper: arguments as conv2d_backward checked them (pairs s, p, d) ---------------------------
def nhwc_backward_weight_fit(x_shape, w_shape, groups, dtype):
    """Whether the weight gradient runs here: the AVX-512 tile set, float32, groups 1, more than 8
    input channels (8 or fewer would be half zero channels or more), at least 8 output channels, dw within
    MAX_PARTIAL. A count padded with zero channels to a multiple of 8 (9-15 -> 16) takes this path as
    it does, so both give the same bits for the channels they share."""
    O, _, KH, KW = w_shape
    Cp = padded_channels(x_shape[1])
    return (conv_tiles.WIDE_VECTORS and np.dtype(dtype) == np.float32 and groups == 1 and x_shape[1] > 8 and O >= 8
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
    Cp = padded_channels(C)
    Hp, Wp = H + 2 * p[0], W + 2 * p[1]
    if d[1] == 1:   # a kernel row's taps are adjacent pixels: one span of KW*Cp columns per kh
        span, rowoff = KW * Cp, np.arange(KH, dtype=np.int64) * (d[0] * Wp * Cp)
    else:           # one span of Cp columns per tap
        kh, kw = np.meshgrid(np.arange(KH), np.arange(KW), indexing="ij")
        span, rowoff = Cp, ((kh * d[0] * Wp + kw * d[1]) * Cp).reshape(-1).astype(np.int64)
    rows, vecs = tile_shape(span)
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
    conv2d_dw_nhwc_jit(parts, dout, xh, soff, rowoff, span, rows, vecs, per_chunk)
    dw = parts.sum(axis=0, dtype=np.float64).astype(np.float32).reshape(Opad, KH, KW, Cp)[:O, :, :, :C]
    return np.ascontiguousarray(dw.transpose(0, 3, 1, 2))  # (O, KH, KW, C) -> (O, C, KH, KW)
