"""The float32 "tiles" convolution: implicit GEMM on register tiles, forward and both gradients.

Used by ``tinycomp_kernels.conv`` (which chooses it from the shapes) for float32, groups 1, any
number of channels:

- forward (OW a multiple of 8): the input is zero-padded and split into its stride phases once,
      xq[n, (c*sh + a)*sw + b, i, j] = xpad[n, c, i*sh + a, j*sw + b]      (N, C*sh*sw, Hq, Wq)
  after which tap (c, kh, kw) of output row (n, oh) reads the *contiguous* segment
      xq_flat[n*plane + oh*Wq + koff[(c*KH + kh)*KW + kw] + ow],
      koff = (((c*sh + kh*dh % sh)*sw + kw*dw % sw)*Hq + kh*dh // sh)*Wq + kw*dw // sw.
  ``fma_tile`` register tiles compute 4, 8 or 16 output channels x 8-32 columns per call, in parallel
  over (n, oh); no patch matrix is written. Where the tile height does not divide O (thinned layers:
  11, 22, 45 channels), a row's last tile starts at O - height and overlaps the one before it: the
  overlapped outputs are summed again in the same order and rewritten with the same bits, so O costs
  what O rounded up to the tile height costs, with no copy. Under 8 channels the weights get zero
  filters up to 8 (cut off again).
- input gradient (W/sw a multiple of 8, any C): per stride phase (a, b) of dx, the pixels
  (i*sh + a, j*sw + b) are reached only by the taps with (a + ph - kh*dh) % sh == 0 (columns alike),
  each reading dout at the fixed row shift (a + ph - kh*dh) / sh. So each phase is a stride-1 tiles
  conv of zero-padded dout with the (C, O*taps) block of those taps (stride 1: one phase, the
  flipped transposed kernel), C playing the forward's O; the phases are interleaved into dx.
- weight gradient (OW in 8, 16, 32, any O; OW = 8 only with the AVX2 set, see
  ``tiles_backward_weight_fit``; layers of more than 8 input channels take the channels-last tiles of
  ``conv_dw_nhwc`` instead, up to a 4 MiB dw: at any OW with the AVX-512 set, at OW = 8 with the AVX2
  one): ``dw_tile`` accumulates 4 dout rows x 4 (or 3) patch
  rows over fixed chunks of 128 output rows (into one partial per chunk, summed in a fixed order:
  the result does not depend on the thread count). When 4 does not divide O, dout gets zero channels
  up to a multiple of 4 (one copy of dout, small beside the products) whose rows of dw are dropped.

Two tile sets, chosen once from the CPU Numba compiles for (``WIDE_VECTORS``: AVX-512F or not), never
by timing: 16-lane tiles of 16 accumulators for 32 zmm registers, and on AVX2 (16 ymm registers) 8-lane
tiles of 4 channels x 16 columns and 4 x 3 weight-gradient blocks, which keep their accumulators in
registers (the 16-lane tiles spill them to the stack there). The forward sums every output in the same order with
either set; the weight gradient's partial sums differ, so dw is deterministic per tile set.

Reference: ``tinycomp_kernels.conv.conv2d_ref``; the tests compare with it and with im2col + GEMM.
"""
import numpy as np
from llvmlite.binding import get_host_cpu_name
from numba import njit, prange
from numba.core import config
from numba.core.codegen import get_host_cpu_features

from .fma_tile import (dw_tile_4x3_8x1, dw_tile_4x3_8x2, dw_tile_4x3_8x4, dw_tile_4x4_8x1, dw_tile_4x4_16x1,
                       dw_tile_4x4_16x2, fma_tile_4_8x2, fma_tile_8_8x1, fma_tile_8_8x2, fma_tile_8_16x1,
                       fma_tile_8_16hx2, fma_tile_8_16x2, fma_tile_16_16x1)
from .im2col import conv_output_size

__all__ = ["conv2d_tiles", "TilesPlan", "conv2d_tiles_backward_input", "conv2d_tiles_backward_weight", "tiles_fit",
           "tiles_backward_input_fit", "tiles_backward_weight_fit", "phase_split_offsets", "tap_offsets",
           "WIDE_VECTORS"]

# the features Numba compiles for: NUMBA_CPU_FEATURES if set, else the host's (as numba.core.codegen does)
COMPILE_FEATURES = frozenset((config.CPU_FEATURES if config.CPU_FEATURES is not None
                              else get_host_cpu_features()).split(","))   # e.g. "+avx512f", "-avx512vpopcntdq"
WIDE_VECTORS = "+avx512f" in COMPILE_FEATURES   # True: the 16-lane tiles; False: the AVX2 ones
COMPILE_CPU = config.CPU_NAME or get_host_cpu_name()  # LLVM's name of it, e.g. "znver4", "rocketlake"


# --- loops ----------------------------------------------------------------------------------------
def _phase_split_loops(xq, x, ph, pw, sh, sw):
    """xq[n, (c*sh + a)*sw + b, i, j] = x[n, c, i*sh + a - ph, j*sw + b - pw], 0 outside x. Each row
    is its zero border and the columns j_lo <= j < j_hi that land inside x, copied with unsigned flat
    indices: no wraparound test per element, so the copy vectorises (than a bounds test per element:
    2.9x faster on 16 channels at 32x32, 1.2x on 32 at 16x16, 1.0x on 64 at 8x8, 1.3x at stride 2;
    batch 128, quiet Zen 3)."""
    N, C, H, W = x.shape
    Cq, Hq, Wq = xq.shape[1], xq.shape[2], xq.shape[3]
    xf = x.reshape(-1)
    qf = xq.reshape(-1)
    usw = np.uint64(sw)
    for t in prange(N * C):
        n = t // C
        c = t % C
        for a in range(sh):
            for b in range(sw):
                q = (c * sh + a) * sw + b
                j_lo = min(Wq, max(0, -((b - pw) // sw)))          # first j with j*sw + b - pw >= 0
                j_hi = max(j_lo, min(Wq, (W - 1 + pw - b) // sw + 1))  # past the last with it < W
                for i in range(Hq):
                    row = np.uint64(((n * Cq + q) * Hq + i) * Wq)
                    ih = i * sh + a - ph
                    if ih < 0 or ih >= H:
                        for j in range(np.uint64(Wq)):
                            qf[row + j] = 0
                        continue
                    for j in range(np.uint64(j_lo)):
                        qf[row + j] = 0
                    src = np.uint64(((n * C + c) * H + ih) * W + j_lo * sw + b - pw)  # wraps only when unread
                    dst = row + np.uint64(j_lo)
                    for j in range(np.uint64(j_hi - j_lo)):
                        qf[dst + j] = xf[src + j * usw]
                    for j in range(np.uint64(j_hi), np.uint64(Wq)):
                        qf[row + j] = 0


def _conv2d_tiles_loops(out, xq, wm, koff, wide):
    """out (N, O, OH, OW) from the phase-split input xq (N, C*sh*sw, Hq, Wq), weights wm (O, K) and
    tap offsets koff (K,): row (n, oh) of every output channel starts at n*plane + oh*Wq in xq.
    ``wide`` (AVX-512): tiles keep 16 vector accumulators of 16 lanes: 8 channels x 32 columns, x two
    rows of 16 (OW = 16), x four rows of 8 (OW = 8, two rows per vector: ``fma_tile_8_16hx2``), or 16
    channels x 16 columns; other widths (multiples of 8) use 8 x 16 or 8 x 8 tiles. On an Intel
    AVX-512 core (two 512-bit FMA ports) the row pairs at OW = 16 ran 1.17x and the four rows at OW = 8
    1.38x faster than 16 x 16 and two 8-lane rows (2026-12-02; equal bits: each sum keeps its order).
    Not ``wide`` (AVX2, 16 ymm registers): 4 channels x 16 columns or x two rows of 8 (8 accumulators),
    other widths 8 x 8. Needs O >= 8: where the tiles do not divide O, a row's last tile starts at
    O - rows, overlapping the one before it (those channels get the same sums again)."""
    N, O, OH, OW = out.shape
    Wq = xq.shape[3]
    plane = xq.shape[1] * xq.shape[2] * Wq
    P = OH * OW
    of = out.reshape(-1)                  # flat views: the tiles address both by offsets
    xf = xq.reshape(-1)
    quads = wide and OW == 8 and OH % 4 == 0               # four output rows per tile
    pairs = not quads and (OW == 8 or (wide and OW == 16)) and OH % 2 == 0   # two output rows per tile
    step = 4 if quads else 2 if pairs else 1
    for t in prange(N * (OH // step)):
        n = t // (OH // step)
        oh = (t % (OH // step)) * step
        base = n * plane + oh * Wq
        o0 = 0
        while o0 < O:
            if not wide:
                rows = 4 if pairs or OW % 16 == 0 else 8
            else:
                rows = 16 if OW % 32 == 16 and not pairs and O - o0 >= 16 else 8
            oc = min(o0, O - rows)        # = o0 unless this tile would run past channel O
            ob = (n * O + oc) * P + oh * OW
            if not wide:
                if pairs:
                    fma_tile_4_8x2(of, ob, P, wm, oc, xf, base, koff, Wq, OW)
                elif OW % 16 == 0:
                    for ow0 in range(0, OW, 16):
                        fma_tile_4_8x2(of, ob + ow0, P, wm, oc, xf, base + ow0, koff, 8, 8)
                else:
                    for ow0 in range(0, OW, 8):
                        fma_tile_8_8x1(of, ob + ow0, P, wm, oc, xf, base + ow0, koff, 8, 8)
            elif quads:
                fma_tile_8_16hx2(of, ob, P, wm, oc, xf, base, koff, Wq, 2 * OW)
            elif pairs and OW == 16:
                fma_tile_8_16x2(of, ob, P, wm, oc, xf, base, koff, Wq, OW)
            elif pairs:
                fma_tile_8_8x2(of, ob, P, wm, oc, xf, base, koff, Wq, OW)
            elif OW % 32 == 0:
                for ow0 in range(0, OW, 32):
                    fma_tile_8_16x2(of, ob + ow0, P, wm, oc, xf, base + ow0, koff, 16, 16)
            elif rows == 16:
                for ow0 in range(0, OW, 16):
                    fma_tile_16_16x1(of, ob + ow0, P, wm, oc, xf, base + ow0, koff, 16, 16)
            elif OW % 16 == 0:
                for ow0 in range(0, OW, 16):
                    fma_tile_8_16x1(of, ob + ow0, P, wm, oc, xf, base + ow0, koff, 16, 16)
            else:
                for ow0 in range(0, OW, 8):
                    fma_tile_8_8x1(of, ob + ow0, P, wm, oc, xf, base + ow0, koff, 8, 8)
            o0 += rows


def _conv2d_tiles_backward_weight_loops(parts, dout, xq, koff, rows_per_chunk, wide):
    """parts[ch] (O, Kpad) += the weight gradient of output rows ch*rows_per_chunk .. (+rows_per_chunk)
    (rows m = n*OH + oh); the caller sums the chunks in a fixed order, so the result does not depend on
    the thread count. Tiles of 4 dout rows x 4 patch rows of 16 lanes (``wide``, AVX-512) or x 3 of 8
    lanes (AVX2: 12 ymm accumulators); koff is padded to Kpad (a multiple of 4 or 3) with valid
    offsets, those columns are dropped."""
    nchunks, O, Kpad = parts.shape
    N, _, OH, OW = dout.shape
    Wq = xq.shape[3]
    plane = xq.shape[1] * xq.shape[2] * Wq
    P = OH * OW
    df = dout.reshape(-1)                 # flat views: the tiles address both by offsets
    xf = xq.reshape(-1)
    taps = 4 if wide else 3
    for ch in prange(nchunks):
        m0 = ch * rows_per_chunk
        m1 = min(N * OH, m0 + rows_per_chunk)
        part = parts[ch]
        for o0 in range(0, O, 4):
            for k0 in range(0, Kpad, taps):
                if wide and OW == 32:
                    dw_tile_4x4_16x2(part, o0, k0, df, xf, koff, m0, m1, OH, OW, O * P, P, plane, Wq)
                elif wide and OW == 16:
                    dw_tile_4x4_16x1(part, o0, k0, df, xf, koff, m0, m1, OH, OW, O * P, P, plane, Wq)
                elif wide:
                    dw_tile_4x4_8x1(part, o0, k0, df, xf, koff, m0, m1, OH, OW, O * P, P, plane, Wq)
                elif OW == 32:
                    dw_tile_4x3_8x4(part, o0, k0, df, xf, koff, m0, m1, OH, OW, O * P, P, plane, Wq)
                elif OW == 16:
                    dw_tile_4x3_8x2(part, o0, k0, df, xf, koff, m0, m1, OH, OW, O * P, P, plane, Wq)
                else:
                    dw_tile_4x3_8x1(part, o0, k0, df, xf, koff, m0, m1, OH, OW, O * P, P, plane, Wq)


def _phase_merge_loops(dx, out, a, b, sh, sw):
    """dx[n, c, i*sh + a, j*sw + b] = out[n, c, i, j]: one stride phase of the input gradient into dx
    (NumPy's strided assignment does this on one core)."""
    N, C, Ha, Wi = out.shape
    for t in prange(N * C):
        n = t // C
        c = t % C
        for i in range(Ha):
            src = out[n, c, i]
            dst = dx[n, c, i * sh + a]
            for j in range(Wi):
                dst[j * sw + b] = src[j]


conv2d_tiles_backward_weight_jit = njit(parallel=True, cache=True)(_conv2d_tiles_backward_weight_loops)
phase_merge_jit = njit(parallel=True, cache=True)(_phase_merge_loops)
phase_split_jit = njit(parallel=True, cache=True)(_phase_split_loops)
conv2d_tiles_jit = njit(parallel=True, cache=True)(_conv2d_tiles_loops)


# --- wrappers: arguments as conv2d_forward / conv2d_backward checked them (pairs s, p, d) ----------
TILE_ROWS = 8  # channels the tallest last tile of a row covers: conv2d_tiles_jit needs that many


def tiles_fit(x_shape, w_shape, stride, padding, dilation, groups, dtype):
    """The forward runs on tiles: float32, groups 1, OW a multiple of 8 (any number of channels)."""
    OW = conv_output_size(x_shape[2], x_shape[3], w_shape[2], w_shape[3], stride, padding, dilation)[1]
    return np.dtype(dtype) == np.float32 and groups == 1 and OW % 8 == 0


def tiles_backward_input_fit(x_shape, stride, groups, dtype):
    """Each stride phase of dx is a tiles conv of dout with C output channels over W/sw columns."""
    sw, W = stride[1], x_shape[3]
    return np.dtype(dtype) == np.float32 and groups == 1 and W % sw == 0 and (W // sw) % 8 == 0


def tiles_backward_weight_fit(OW, groups, dtype):
    """Whether the weight gradient runs on the tiles. Not at OW = 8 with the AVX-512 set: its 8-wide
    rows fill half a vector there, and im2col + GEMM measured 1.3-2.0x faster (Intel Xeon, 2026-12-02:
    ResNet-20's 64-channel 8x8 layers 6.4 -> 5.0 ms, ResNet-18's 256-channel ones 44 -> 25 ms)."""
    if WIDE_VECTORS and OW == 8:
        return False
    return np.dtype(dtype) == np.float32 and groups == 1 and OW in (8, 16, 32)


def _tiles_conv(xq, wm, koff, N, OH, OW):
    """out (N, M, OH, OW) of conv2d_tiles_jit for weights wm (M, K); fewer than TILE_ROWS rows get
    zero rows (whose channels are cut off again), since a last tile cannot start before channel 0."""
    M = wm.shape[0]
    rows = max(M, TILE_ROWS)
    if rows != M:
        wm = np.concatenate([wm, np.zeros((rows - M, wm.shape[1]), np.float32)])  # (TILE_ROWS, K)
    out = np.empty((N, rows, OH, OW), dtype=np.float32)
    conv2d_tiles_jit(out, xq, wm, koff, WIDE_VECTORS)
    return out if rows == M else np.ascontiguousarray(out[:, :M])


def _phase_taps(a, k, s, p, d):
    """The taps of a kernel axis that reach input positions of phase a (i*s + a), with their shifts:
    position i*s + a reads dout row i + delta, delta = (a + p - kh*d) / s, for each kh listed."""
    return [(kh, (a + p - kh * d) // s) for kh in range(k) if (a + p - kh * d) % s == 0]


def conv2d_tiles_backward_input(dout, w, x_shape, s, p, d):
    """dx by stride phases: the pixels (i*sh + a, j*sw + b) of dx only meet the taps listed by
    _phase_taps, each at a fixed shift of dout, so each phase is a stride-1 tiles conv of zero-padded
    dout with the (C, O*taps) weight block of its taps; the phases are then interleaved into dx."""
    N, C, H, W = x_shape
    O, _, KH, KW = w.shape
    (sh, sw), (ph, pw), (dh, dw) = s, p, d
    OH, OW = dout.shape[2:]
    rows = [_phase_taps(a, KH, sh, ph, dh) for a in range(sh)]
    cols = [_phase_taps(b, KW, sw, pw, dw) for b in range(sw)]
    shifts_h = [t for r in rows for _, t in r] or [0]
    shifts_w = [t for c in cols for _, t in c] or [0]
    top, left = max(0, -min(shifts_h)), max(0, -min(shifts_w))
    Hi, Wi = -(-H // sh), W // sw
    Hd = top + max(OH, Hi + max(shifts_h))
    Wd = left + max(OW, Wi + max(shifts_w))
    dpad = np.empty((N, O, Hd, Wd), dtype=np.float32)                # dout, zero-padded for every shift
    phase_split_jit(dpad, np.ascontiguousarray(dout), top, left, 1, 1)  # (a parallel pad: one phase)
    dx = np.empty(x_shape, dtype=np.float32) if (sh, sw) != (1, 1) else None
    for a in range(sh):
        for b in range(sw):
            Ha = -(-(H - a) // sh)                                        # rows of dx in phase a
            taps = [(kh, th, kw, tw) for kh, th in rows[a] for kw, tw in cols[b]]
            if Ha <= 0:
                continue
            if not taps:
                dx[:, :, a::sh, b::sw] = 0
                continue
            kh, th, kw, tw = (np.array(v) for v in zip(*taps))
            wm = np.ascontiguousarray(w[:, :, kh, kw].transpose(1, 0, 2)).reshape(C, O * len(taps))  # (C, O*T)
            o = np.arange(O)[:, None]
            koff = ((o * Hd + top + th[None, :]) * Wd + left + tw[None, :]).reshape(-1).astype(np.int64)  # (O*T,)
            order = np.argsort(koff, kind="stable")  # ascending reads: the flipped kernel's descending
            koff, wm = koff[order], np.ascontiguousarray(wm[:, order])  # ones ran 1.2-1.5x slower (Zen 3)
            out = _tiles_conv(dpad, wm, koff, N, Ha, Wi)                  # (N, C, Ha, Wi)
            if dx is None:
                return out
            phase_merge_jit(dx, out, a, b, sh, sw)  # dx[:, :, a::sh, b::sw] = out, in parallel
    return dx


def _split_shape(H, W, s, p):
    """(Hq, Wq): a phase plane of the padded input."""
    return -(-(H + 2 * p[0]) // s[0]), -(-(W + 2 * p[1]) // s[1])


def tap_offsets(chans, kh, kw, s, d, Hq, Wq):
    """int64 offsets where taps (chans, kh, kw) (arrays of one shape) first read a phase-split image
    of Hq x Wq phase planes: the module docstring's koff, for any list of taps (``sparse_tiles``'s
    kept weights too)."""
    (sh, sw), (dh, dw) = s, d
    c, kh, kw = (np.asarray(v, dtype=np.int64) for v in (chans, kh, kw))
    return (((c * sh + kh * dh % sh) * sw + kw * dw % sw) * Hq + kh * dh // sh) * Wq + kw * dw // sw


def _tap_offsets(C, KH, KW, s, d, Hq, Wq):
    """koff (C*KH*KW,) int64 of every tap, in (c, kh, kw) order."""
    c, kh, kw = np.meshgrid(np.arange(C), np.arange(KH), np.arange(KW), indexing="ij")
    return tap_offsets(c, kh, kw, s, d, Hq, Wq).reshape(-1)


def _phase_split(x, s, p):
    """The padded, phase-split input (N, C*sh*sw, Hq, Wq) of x (N, C, H, W)."""
    N, C, H, W = x.shape
    Hq, Wq = _split_shape(H, W, s, p)
    xq = np.empty((N, C * s[0] * s[1], Hq, Wq), dtype=np.float32)
    phase_split_jit(xq, np.ascontiguousarray(x), p[0], p[1], s[0], s[1])
    return xq


def phase_split_offsets(x, KH, KW, s, p, d):
    """(xq, koff): the padded, phase-split input (N, C*sh*sw, Hq, Wq) and the offset of each tap."""
    xq = _phase_split(x, s, p)
    return xq, _tap_offsets(x.shape[1], KH, KW, s, d, xq.shape[2], xq.shape[3])   # koff (C*KH*KW,)


def conv2d_tiles(x, w, s, p, d, OH, OW):
    """The "tiles" forward (module docstring): phase split, tap offsets, register tiles."""
    O, C, KH, KW = w.shape
    xq, koff = phase_split_offsets(x, KH, KW, s, p, d)
    return _tiles_conv(xq, np.ascontiguousarray(w).reshape(O, C * KH * KW), koff, x.shape[0], OH, OW)  # (O, K) rows


class TilesPlan:
    """``conv2d_tiles`` for fixed weights w (O, C, KH, KW) and input size (H, W), with the (O, K) weight
    rows and the tap offsets made once: a call does the phase split and the tiles, the same
    arithmetic as conv2d_tiles (equal bits). Geometry s, p, d as pairs; the caller checked that the
    tiles fit (``tiles_fit``)."""

    def __init__(self, w, input_hw, s, p, d):
        O, C, KH, KW = w.shape
        H, W = input_hw
        self.s, self.p = s, p
        self.OH, self.OW = conv_output_size(H, W, KH, KW, s, p, d)
        self.wm = np.ascontiguousarray(w, dtype=np.float32).reshape(O, C * KH * KW)  # (O, K) rows
        self.koff = _tap_offsets(C, KH, KW, s, d, *_split_shape(H, W, s, p))

    def __call__(self, x):
        return _tiles_conv(_phase_split(x, self.s, self.p), self.wm, self.koff, x.shape[0], self.OH, self.OW)


def conv2d_tiles_backward_weight(dout, x, w_shape, s, p, d):
    """dw (O, C, KH, KW) = sum over output rows of dout-rows x patch-rows, in fixed row chunks."""
    O, C, KH, KW = w_shape
    N, _, OH, OW = dout.shape
    xq, koff = phase_split_offsets(x, KH, KW, s, p, d)
    K = C * KH * KW
    taps = 4 if WIDE_VECTORS else 3                                       # patch rows per tile
    koff = np.concatenate([koff, np.full(-K % taps, koff[0], np.int64)])  # pad K to a multiple of taps
    dout = np.ascontiguousarray(dout)
    if O % 4:  # the tiles read 4 dout channels at a time: zero channels up to a multiple of 4, dropped below
        dout = np.concatenate([dout, np.zeros((N, -O % 4, OH, OW), np.float32)], axis=1)  # (N, O4, OH, OW)
    rows_per_chunk = 128  # 4 CIFAR images at 32x32: per-chunk horizontal sums stay ~5 % of the work
    parts = np.zeros((-(-N * OH // rows_per_chunk), dout.shape[1], koff.size), dtype=np.float32)
    conv2d_tiles_backward_weight_jit(parts, dout, xq, koff, rows_per_chunk, WIDE_VECTORS)
    return parts.sum(axis=0, dtype=np.float64)[:O, :K].astype(np.float32).reshape(w_shape)  # (O, K) -> OIHW
