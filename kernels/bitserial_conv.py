"""Bit-serial k-bit convolution: integer-code conv2d as one AND-popcount GEMM over packed patches.

What: ``bitserial_conv2d(x_planes, w_planes, channels, stride, padding, w_signed, x_signed)`` returns
the exact int32 accumulators

    I[n, o, oh, ow] = Σ_{c, kh, kw} q_w[o, c, kh, kw] · q_x[n, c, oh*sh - ph + kh, ow*sw - pw + kw]

of NCHW activation codes q_x with OIHW weight codes q_w, zero padding (a padded tap has code 0:
every plane's bit is 0 there, so it adds nothing). The planes and the bounds of the codes are those
of ``tinycomp_kernels.bitserial`` (int32 because channels*KH*KW * max|q_w| * max|q_x| < 2^31 is
required). ``patch_sums(x_codes, KH, KW, stride, padding)`` gives S[n, oh, ow] = Σ of the patch's
activation codes, the second term of the DoReFa epilogue y = scale_o · (2 I - L_w S) / (L_w L_x) +
bias_o (formulas in ``tinycomp_kernels.bitserial``).

Layout, as the XNOR convolution's (``tinycomp_kernels.xnor``): **channels packed per pixel**.
``pack_activation_planes``: NCHW codes -> (bits, N, H, W, CW) uint64, CW = ceil(C/64), bit c % 64 of
word c // 64 of plane i = bit i of code c. ``pack_weight_planes``: OIHW codes -> (bits, O, KH, KW, CW).
A patch is then a run of whole words per tap (a word-level im2col, KH*KW*CW words per plane instead
of C*KH*KW codes), built transposed, (planes, words, positions), as the GEMM's column operand. When C divides 64 (ResNet-20's 16 and 32) 64 // C taps share a
word: bit t*C + c of the patch is channel c of tap t (the bit order of a C*KH*KW-bit row), so the
GEMM reduces over ceil(C*KH*KW / 64) words rather than KH*KW mostly empty ones. A table of segments
(patch word r <- word c of tap t, shifted left by b bits) describes both cases to one loop; the
weights are re-laid by the same table. The GEMM takes the weights as rows, so its output (O, N*OH*OW)
holds each channel contiguously along positions, then goes to NCHW.

Reference: ``bitserial_conv2d_ref`` (im2col of the int64 codes, ``tinycomp_kernels.im2col.im2col_ref``,
and an int64 matmul) and ``patch_sums_ref`` (the same patches summed) never call the loops.
"""
import numpy as np
from numba import njit, prange

from .bits import n_words
from .checks import is_int
from .bitserial import (TILE_COLS, TILE_ROWS, check_accumulator, check_bits_arg, check_codes, check_flag,
                        check_planes, check_tail, gemm_padded, plane_pairs, round_up)
from .im2col import as_pair, im2col_ref

__all__ = ["bitserial_conv2d", "bitserial_conv2d_ref", "pack_activation_planes", "pack_weight_planes",
           "patch_sums", "patch_sums_ref"]


# --- references ---------------------------------------------------------------------------------
def _geometry(op, H, W, KH, KW, stride, padding):
    (sh, sw), (ph, pw) = as_pair(stride, "stride", op, 1), as_pair(padding, "padding", op, 0)
    OH, OW = (H + 2 * ph - KH) // sh + 1, (W + 2 * pw - KW) // sw + 1
    if OH < 1 or OW < 1:
        raise ValueError(f"{op}: kernel {KH}x{KW} does not fit the padded input {H + 2 * ph}x{W + 2 * pw}")
    return sh, sw, ph, pw, OH, OW


def bitserial_conv2d_ref(x_codes, w_codes, stride=1, padding=0):
    """NumPy oracle: int64 (N, O, OH, OW) conv of NCHW codes with OIHW codes, zero padding."""
    N, C, H, W = x_codes.shape
    O, _, KH, KW = w_codes.shape
    OH, OW = _geometry("bitserial_conv2d_ref", H, W, KH, KW, stride, padding)[4:]
    cols = im2col_ref(np.asarray(x_codes, np.int64), KH, KW, stride, padding)  # (C*KH*KW, N*OH*OW)
    out = np.asarray(w_codes, np.int64).reshape(O, -1) @ cols  # (O, N*OH*OW)
    return out.reshape(O, N, OH, OW).transpose(1, 0, 2, 3)  # (N, O, OH, OW)


def patch_sums_ref(x_codes, KH, KW, stride=1, padding=0):
    """NumPy oracle: (N, OH, OW) int64 sums of each patch's codes (padding adds 0)."""
    N, _, H, W = x_codes.shape
    OH, OW = _geometry("patch_sums_ref", H, W, KH, KW, stride, padding)[4:]
    cols = im2col_ref(np.asarray(x_codes, np.int64), KH, KW, stride, padding)  # (C*KH*KW, N*OH*OW)
    return cols.sum(axis=0).reshape(N, OH, OW)


# --- loops --------------------------------------------------------------------------------------
def _pack_nchw_planes_loops(out, x):
    """out (bits, N, H*W, CW) uint64 <- planes of x (N, C, H*W) uint8 codes, bit c % 64 of word c // 64.

    One work item per (image, word); the inner loop runs along the contiguous pixels of a channel
    (it vectorises, and is branch-free).
    """
    bits, N, HW, CW = out.shape
    C = x.shape[1]
    for item in prange(N * CW):
        n = item // CW
        wd = item % CW
        for b in range(bits):
            for p in range(HW):
                out[b, n, p, wd] = 0
        for cb in range(min(64, C - wd * 64)):
            plane = x[n, wd * 64 + cb]
            pos = np.uint64(cb)
            for b in range(bits):
                dst = out[b, n, :, wd]
                shift = np.uint64(b)
                for p in range(HW):
                    dst[p] |= ((np.uint64(plane[p]) >> shift) & np.uint64(1)) << pos


def _patches_t_loops(patches_t, x, seg_ptr, seg_kh, seg_kw, seg_word, seg_shift, sh, sw, ph, pw, OH, OW):
    """Word-level im2col, transposed: patches_t (bits, R, M_pad) <- x (bits, N, H, W, CW).

    Word r of plane b of position m = (n*OH + oh)*OW + ow is the OR of segments g in seg_ptr[r] ..
    seg_ptr[r+1]: word seg_word[g] of pixel (oh*sh - ph + seg_kh[g], ow*sw - pw + seg_kw[g]) shifted
    left by seg_shift[g], 0 off the image. Columns past N*OH*OW are left as they are.
    """
    bits, N, H, W, _ = x.shape
    R = patches_t.shape[1]
    P = OH * OW
    for item in prange(bits * R * N):
        b = item // (R * N)
        r = (item // N) % R
        n = item % N
        row = patches_t[b, r, n * P:(n + 1) * P]  # this image's positions, contiguous
        for m in range(P):
            row[m] = 0
        for g in range(seg_ptr[r], seg_ptr[r + 1]):
            kh, kw, c = seg_kh[g], seg_kw[g], seg_word[g]
            shift = np.uint64(seg_shift[g])
            # in-image columns ow_lo <= ow < ow_hi, so the inner loop has no branch
            ow_lo = min(OW, max(0, (pw - kw + sw - 1) // sw))
            ow_hi = max(ow_lo, min(OW, (W - 1 + pw - kw) // sw + 1))
            iw_lo = ow_lo * sw - pw + kw
            for oh in range(OH):
                ih = oh * sh - ph + kh
                if 0 <= ih < H:
                    # slices starting at index 0: no negative-index wraparound in the inner loop
                    src = x[b, n, ih, iw_lo::sw, c]
                    dst = row[oh * OW + ow_lo:oh * OW + ow_hi]
                    for k in range(ow_hi - ow_lo):
                        dst[k] |= src[k] << shift


pack_nchw_planes_jit = njit(parallel=True, cache=True)(_pack_nchw_planes_loops)
patches_t_jit = njit(parallel=True, cache=True)(_patches_t_loops)


# --- wrappers -----------------------------------------------------------------------------------
def pack_activation_planes(x_codes, bits, signed=False):
    """NCHW integer codes (N, C, H, W) -> (bits, N, H, W, CW) uint64 planes, the input of ``bitserial_conv2d``."""
    bits = check_bits_arg("pack_activation_planes", "bits", bits)
    signed = check_flag("pack_activation_planes", "signed", signed)
    u8 = check_codes("pack_activation_planes", "x_codes", x_codes, 4, bits, signed)
    N, C, H, W = u8.shape
    out = np.empty((bits, N, H * W, n_words(C)), dtype=np.uint64)
    pack_nchw_planes_jit(out, u8.reshape(N, C, H * W))
    return out.reshape(bits, N, H, W, -1)


def pack_weight_planes(w_codes, bits, signed=False):
    """OIHW integer codes (O, C, KH, KW) -> (bits, O, KH, KW, CW) uint64 planes, the weights of ``bitserial_conv2d``."""
    bits = check_bits_arg("pack_weight_planes", "bits", bits)
    signed = check_flag("pack_weight_planes", "signed", signed)
    u8 = check_codes("pack_weight_planes", "w_codes", w_codes, 4, bits, signed)
    O, C, KH, KW = u8.shape
    # the taps as the pixels of one image: (O, C, KH, KW) -> (1, C, O*KH*KW)
    as_image = np.ascontiguousarray(u8.transpose(1, 0, 2, 3)).reshape(1, C, O * KH * KW)
    out = np.empty((bits, 1, O * KH * KW, n_words(C)), dtype=np.uint64)
    pack_nchw_planes_jit(out, as_image)
    return out.reshape(bits, O, KH, KW, -1)


def _segments(C, CW, taps):
    """(seg_ptr, seg_tap, seg_word, seg_shift, R): how the R words of a patch plane are assembled."""
    if C < 64 and 64 % C == 0 and taps > 1:
        per = 64 // C  # taps sharing a word
        tap = np.arange(taps)
        R = n_words(C * taps)
        seg_ptr = np.minimum(np.arange(R + 1) * per, taps)
        return seg_ptr, tap, np.zeros(taps, np.int64), (tap % per) * C, R
    R = taps * CW
    rows = np.arange(R)
    return np.arange(R + 1), rows // CW, rows % CW, np.zeros(R, np.int64), R


def patch_sums(x_codes, KH, KW, stride=1, padding=0):
    """int64 (N, OH, OW): Σ of the activation codes in each KH x KW patch (padding counts 0).

    Channel sums, then a summed-area table, so each output costs four lookups whatever the kernel size.
    """
    if not isinstance(x_codes, np.ndarray) or x_codes.dtype.kind not in "iu" or x_codes.ndim != 4:
        raise TypeError("patch_sums: x_codes must be a 4-D integer numpy array (N, C, H, W)")
    if not (is_int(KH) and is_int(KW)) or min(KH, KW) < 1:
        raise ValueError(f"patch_sums: KH and KW must be positive ints, got {KH!r}, {KW!r}")
    N, _, H, W = x_codes.shape
    sh, sw, ph, pw, OH, OW = _geometry("patch_sums", H, W, KH, KW, stride, padding)
    plane = x_codes.sum(axis=1, dtype=np.int64)  # (N, H, W)
    table = np.zeros((N, H + 2 * ph + 1, W + 2 * pw + 1), dtype=np.int64)  # (N, Hp+1, Wp+1), row/col 0 = 0
    table[:, ph + 1:ph + 1 + H, pw + 1:pw + 1 + W] = plane
    table = table.cumsum(axis=1).cumsum(axis=2)
    top, left = np.arange(OH) * sh, np.arange(OW) * sw  # patch corners in the padded image
    bottom, right = top[:, None] + KH, left[None, :] + KW
    t, lft = top[:, None], left[None, :]
    return table[:, bottom, right] - table[:, t, right] - table[:, bottom, lft] + table[:, t, lft]


def bitserial_conv2d(x_planes, w_planes, channels, stride=1, padding=0, w_signed=False, x_signed=False):
    """Exact int32 conv2d accumulators (N, O, OH, OW) of packed activation and weight codes.

    x_planes (kx, N, H, W, CW) from ``pack_activation_planes``, w_planes (kw, O, KH, KW, CW) from
    ``pack_weight_planes``, channels = C (CW = ceil(C / 64)); zero padding; ``w_signed``/``x_signed``
    as the codes were packed.
    """
    op = "bitserial_conv2d"
    x = check_planes(op, "x_planes", x_planes, 5)
    w = check_planes(op, "w_planes", w_planes, 5)
    kx, N, H, W, CW = x.shape
    kw, O, KH, KW, CWw = w.shape
    if CWw != CW:
        raise ValueError(f"{op}: w_planes has {CWw} words per tap but x_planes has {CW} per pixel")
    if not is_int(channels):
        raise TypeError(f"{op}: channels must be an int, got {type(channels).__name__}")
    if channels <= 0 or n_words(channels) != CW:
        raise ValueError(f"{op}: channels={channels} needs {n_words(max(int(channels), 0))} words per pixel, "
                         f"but x_planes has {CW}")
    C = int(channels)
    check_tail(op, "x_planes", x, C)
    check_tail(op, "w_planes", w, C)
    w_signed, x_signed = check_flag(op, "w_signed", w_signed), check_flag(op, "x_signed", x_signed)
    sh, sw, ph, pw, OH, OW = _geometry(op, H, W, KH, KW, stride, padding)
    taps = KH * KW
    check_accumulator(op, C * taps, kw, w_signed, kx, x_signed)
    seg_ptr, seg_tap, seg_word, seg_shift, R = _segments(C, CW, taps)
    O_pad = round_up(O, TILE_ROWS)
    w_taps = w.reshape(kw, O, taps, CW)
    w_rows = np.zeros((kw, O_pad, R), dtype=np.uint64)  # (kw, O_pad, R): padded rows stay 0
    if R == taps * CW:
        w_rows[:, :O] = w_taps.reshape(kw, O, R)  # word-aligned taps: already in patch order
    else:
        for r in range(R):
            for g in range(seg_ptr[r], seg_ptr[r + 1]):
                w_rows[:, :O, r] |= w_taps[:, :, seg_tap[g], seg_word[g]] << np.uint64(seg_shift[g])
    M = N * OH * OW
    M_pad = round_up(M, TILE_COLS)
    patches_t = np.empty((kx, R, M_pad), dtype=np.uint64)  # (kx, R, M_pad)
    patches_t[:, :, M:] = 0  # padded columns
    patches_t_jit(patches_t, x, *(np.ascontiguousarray(v, dtype=np.int64) for v in
                                  (seg_ptr, seg_tap // KW, seg_tap % KW, seg_word, seg_shift)), sh, sw, ph, pw, OH, OW)
    pairs = plane_pairs(kw, w_signed, kx, x_signed)
    if (OH * OW) % TILE_COLS == 0:  # every 8-column strip lies in one image: the GEMM writes NCHW
        out = gemm_padded(w_rows, patches_t, pairs, groups=N)  # (N, O_pad, OH*OW)
        return (out if O_pad == O else np.ascontiguousarray(out[:, :O])).reshape(N, O, OH, OW)
    dots = gemm_padded(w_rows, patches_t, pairs)[0]  # (O_pad, M_pad)
    return np.ascontiguousarray(dots[:O, :M].reshape(O, N, OH, OW).transpose(1, 0, 2, 3))
