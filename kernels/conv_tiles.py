"""The float32 "tiles" convolution: implicit GEMM on register tiles, forward and both gradients.

Used by ``tinycomp_kernels.conv`` (which chooses it from the shapes) for float32, groups 1, any
number of channels:

- forward (OW a multiple of 8): the input is zero-padded and split into its stride phases,
      xq[n, (c*sh + a)*sw + b, i, j] = xpad[n, c, i*sh + a, j*sw + b]      (N, C*sh*sw, Hq, Wq)
  after which tap (c, kh, kw) of output row (n, oh) reads the *contiguous* segment
      xq_flat[n*plane + oh*Wq + koff[(c*KH + kh)*KW + kw] + ow],
      koff = (((c*sh + kh*dh % sh)*sw + kw*dw % sw)*Hq + kh*dh // sh)*Wq + kw*dw // sw.
  ``fma_tile`` register tiles compute 4, 8 or 16 output channels x 8-32 columns per call; no patch
  matrix is written. Where the tile height does not divide O (thinned layers:
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

Where the phase planes are made: for a batch of at least two images per thread (``by_image_fit``)
the forward and the input gradient run image by image, each thread splitting (or padding) one image
into a buffer of its own right before that image's tiles read it, so the reads come from L2. Smaller
batches, and strided input gradients with a phase of dx that no tap reaches or that has no rows
(H < stride), split the whole batch first and run in parallel over (n, oh). Same sums, same bits.
The weight gradient's chunks always split their own images.

Two tile sets, chosen once from the CPU Numba compiles for (``WIDE_VECTORS``: AVX-512F or not), never
by timing: 16-lane tiles of 16 accumulators for 32 zmm registers, and on AVX2 (16 ymm registers) 8-lane
tiles of 4 channels x 16 columns and 4 x 3 weight-gradient blocks, which keep their accumulators in
registers (the 16-lane tiles spill them to the stack there). The forward sums every output in the same order with
either set; the weight gradient's partial sums differ, so dw is deterministic per tile set.

Reference: ``tinycomp_kernels.conv.conv2d_ref``; the tests compare with it and with im2col + GEMM.
"""
import functools

import numba
import numpy as np
from llvmlite.binding import get_host_cpu_name
from numba import njit, prange
from numba.core import config
from numba.core.codegen import get_host_cpu_features
from numba.extending import register_jitable

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
def _split_channel(qf, q0, xf, x0, H, W, ph, pw, sh, sw, Hq, Wq):
    """The sh*sw phase planes of one channel, from qf[q0] on: qf[q0 + ((a*sw + b)*Hq + i)*Wq + j] =
    xf[x0 + (i*sh + a - ph)*W + j*sw + b - pw], 0 outside the channel's H x W plane at xf[x0]. Each row
    is its zero border and the columns j_lo <= j < j_hi that land inside x, copied with unsigned flat
    indices: no wraparound test per element, so the copy vectorises (than a bounds test per element:
    2.9x faster on 16 channels at 32x32, 1.2x on 32 at 16x16, 1.0x on 64 at 8x8, 1.3x at stride 2;
    batch 128, quiet Zen 3)."""
    usw = np.uint64(sw)
    for a in range(sh):
        for b in range(sw):
            j_lo = min(Wq, max(0, -((b - pw) // sw)))          # first j with j*sw + b - pw >= 0
            j_hi = max(j_lo, min(Wq, (W - 1 + pw - b) // sw + 1))  # past the last with it < W
            for i in range(Hq):
                row = np.uint64(q0 + ((a * sw + b) * Hq + i) * Wq)
                ih = i * sh + a - ph
                if ih < 0 or ih >= H:
                    for j in range(np.uint64(Wq)):
                        qf[row + j] = 0
                    continue
                for j in range(np.uint64(j_lo)):
                    qf[row + j] = 0
                src = np.uint64(x0 + ih * W + j_lo * sw + b - pw)  # wraps only when unread
                dst = row + np.uint64(j_lo)
                for j in range(np.uint64(j_hi - j_lo)):
                    qf[dst + j] = xf[src + j * usw]
                for j in range(np.uint64(j_hi), np.uint64(Wq)):
                    qf[row + j] = 0


split_channel = register_jitable(_split_channel)


def _phase_split_loops(xq, x, ph, pw, sh, sw):
    """xq[n, (c*sh + a)*sw + b, i, j] = x[n, c, i*sh + a - ph, j*sw + b - pw], 0 outside x: the phase
    planes of each (n, c) by ``split_channel``, in parallel over them."""
    N, C, H, W = x.shape
    Hq, Wq = xq.shape[2], xq.shape[3]
    qf = xq.reshape(-1)
    xf = x.reshape(-1)
    for t in prange(N * C):
        split_channel(qf, t * sh * sw * Hq * Wq, xf, t * H * W, H, W, ph, pw, sh, sw, Hq, Wq)


def _row_tiles(OH, OW, wide):
    """(quads, pairs, step): whether a tile covers four or two output rows, and rows per tile."""
    quads = wide and OW == 8 and OH % 4 == 0               # four output rows per tile
    pairs = not quads and (OW == 8 or (wide and OW == 16)) and OH % 2 == 0   # two output rows per tile
    return quads, pairs, 4 if quads else 2 if pairs else 1


def _tile_row(of, ob, P, wm, xf, base, koff, Wq, OW, wide, quads, pairs):
    """Every output channel of one output row (or ``_row_tiles``' pair or quad of rows): out channel
    o's row starts at of[ob + o*P], its inputs at xf[base + koff[k]]. Tile shapes: see
    ``_conv2d_tiles_loops``."""
    O = wm.shape[0]
    o0 = 0
    while o0 < O:
        if not wide:
            rows = 4 if pairs or OW % 16 == 0 else 8
        else:
            rows = 16 if OW % 32 == 16 and not pairs and O - o0 >= 16 else 8
        oc = min(o0, O - rows)        # = o0 unless this tile would run past channel O
        oo = ob + oc * P
        if not wide:
            if pairs:
                fma_tile_4_8x2(of, oo, P, wm, oc, xf, base, koff, Wq, OW)
            elif OW % 16 == 0:
                for ow0 in range(0, OW, 16):
                    fma_tile_4_8x2(of, oo + ow0, P, wm, oc, xf, base + ow0, koff, 8, 8)
            else:
                for ow0 in range(0, OW, 8):
                    fma_tile_8_8x1(of, oo + ow0, P, wm, oc, xf, base + ow0, koff, 8, 8)
        elif quads:
            fma_tile_8_16hx2(of, oo, P, wm, oc, xf, base, koff, Wq, 2 * OW)
        elif pairs and OW == 16:
            fma_tile_8_16x2(of, oo, P, wm, oc, xf, base, koff, Wq, OW)
        elif pairs:
            fma_tile_8_8x2(of, oo, P, wm, oc, xf, base, koff, Wq, OW)
        elif OW % 32 == 0:
            for ow0 in range(0, OW, 32):
                fma_tile_8_16x2(of, oo + ow0, P, wm, oc, xf, base + ow0, koff, 16, 16)
        elif rows == 16:
            for ow0 in range(0, OW, 16):
                fma_tile_16_16x1(of, oo + ow0, P, wm, oc, xf, base + ow0, koff, 16, 16)
        elif OW % 16 == 0:
            for ow0 in range(0, OW, 16):
                fma_tile_8_16x1(of, oo + ow0, P, wm, oc, xf, base + ow0, koff, 16, 16)
        else:
            for ow0 in range(0, OW, 8):
                fma_tile_8_8x1(of, oo + ow0, P, wm, oc, xf, base + ow0, koff, 8, 8)
        o0 += rows


row_tiles = register_jitable(_row_tiles)
tile_row = register_jitable(_tile_row)


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
    quads, pairs, step = row_tiles(OH, OW, wide)
    for t in prange(N * (OH // step)):
        n = t // (OH // step)
        oh = (t % (OH // step)) * step
        tile_row(of, n * O * P + oh * OW, P, wm, xf, n * plane + oh * Wq, koff, Wq, OW, wide, quads, pairs)


def _conv2d_tiles_by_image_loops(out, x, wm, koff, ph, pw, sh, sw, Hq, Wq, wide):
    """The same outputs as ``_conv2d_tiles_loops(out, phase split of x, ...)``, bit for bit (each
    output is the same tile's same sum), one image at a time: each image's phase planes (C*sh*sw
    planes of Hq x Wq: 20-150 KiB for CIFAR's layers) are made in a buffer of the thread's own just
    before its rows' tiles read them, so the tiles read them from L2 instead of reading the batch's
    split (2.6-9.5 MiB at batch 128) back from L3 or DRAM, at 2-3 GB/s on Zen 3 (the prefetchers do
    not follow reads that jump between 16-64 planes): 1.1-2.1x faster there (ResNet-20's layers,
    batch 128, 2026-12-03). Parallel over images only: for two images per thread or more
    (``by_image_fit``)."""
    N, O, OH, OW = out.shape
    C, H, W = x.shape[1], x.shape[2], x.shape[3]
    image = C * sh * sw * Hq * Wq
    P = OH * OW
    of = out.reshape(-1)
    xf = x.reshape(-1)
    quads, pairs, step = row_tiles(OH, OW, wide)
    for n in prange(N):
        buf = np.empty(image, dtype=np.float32)
        for c in range(C):
            split_channel(buf, c * sh * sw * Hq * Wq, xf, (n * C + c) * H * W, H, W, ph, pw, sh, sw, Hq, Wq)
        for oh in range(0, OH, step):
            tile_row(of, n * O * P + oh * OW, P, wm, buf, oh * Wq, koff, Wq, OW, wide, quads, pairs)


def _conv2d_tiles_backward_input_by_image_loops(dx, dout, wms, koffs, phases, sh, sw, top, left, Hd, Wd, wide):
    """dx (N, C, H, W) of a strided conv, one image at a time: its dout (N, O, OH, OW) zero-padded by
    (top, left) to O planes of Hd x Wd in a buffer of the thread's own, then for each stride phase
    phases[i] = (a, b, Ha, Wi) the stride-1 tiles conv with weights wms[i] (M >= C rows, at least
    TILE_ROWS; O*T_i columns) and offsets koffs[i] into a second buffer (M planes of Ha x Wi),
    merged into dx[n, :, a::sh, b::sw]. The same sums as the whole batch's pad, phase convs and
    merges, bit for bit, with both buffers in L2 (``_conv2d_tiles_by_image_loops`` says why). Every
    phase of dx is listed, each with at least one tap."""
    N, C = dx.shape[0], dx.shape[1]
    O, OH, OW = dout.shape[1], dout.shape[2], dout.shape[3]
    M = wms[0].shape[0]
    df = dout.reshape(-1)
    most = 0
    for i in range(phases.shape[0]):
        most = max(most, phases[i, 2] * phases[i, 3])
    for n in prange(N):
        pad = np.empty(O * Hd * Wd, dtype=np.float32)
        loc = np.empty(M * most, dtype=np.float32)
        for o in range(O):
            split_channel(pad, o * Hd * Wd, df, (n * O + o) * OH * OW, OH, OW, top, left, 1, 1, Hd, Wd)
        for i in range(phases.shape[0]):
            a, b, Ha, Wi = phases[i, 0], phases[i, 1], phases[i, 2], phases[i, 3]
            quads, pairs, step = row_tiles(Ha, Wi, wide)
            for ih in range(0, Ha, step):
                tile_row(loc, ih * Wi, Ha * Wi, wms[i], pad, ih * Wd, koffs[i], Wd, Wi, wide, quads, pairs)
            for c in range(C):
                for ih in range(Ha):
                    src = (c * Ha + ih) * Wi
                    dst = dx[n, c, ih * sh + a]
                    for j in range(Wi):
                        dst[j * sw + b] = loc[src + j]


def _conv2d_tiles_backward_weight_loops(parts, dout, x, koff, rows_per_chunk, ph, pw, sh, sw, Hq, Wq, wide):
    """parts[ch] (O, Kpad) += the weight gradient of output rows ch*rows_per_chunk .. (+rows_per_chunk)
    (rows m = n*OH + oh); the caller sums the chunks in a fixed order, so the result does not depend on
    the thread count. Each chunk first splits its images of x (N, C, H, W) into their phase planes
    (C*sh*sw planes of Hq x Wq per image, padded by ph, pw) in a buffer of the thread's own, which its
    tiles then read from L2 (``_conv2d_tiles_by_image_loops`` says why). Tiles of 4 dout rows x 4 patch
    rows of 16 lanes (``wide``, AVX-512) or x 3 of 8 lanes (AVX2: 12 ymm accumulators); koff is padded
    to Kpad (a multiple of 4 or 3) with valid offsets, those columns are dropped."""
    nchunks, O, Kpad = parts.shape
    N, _, OH, OW = dout.shape
    C, H, W = x.shape[1], x.shape[2], x.shape[3]
    plane = C * sh * sw * Hq * Wq           # one image's phase planes
    P = OH * OW
    df = dout.reshape(-1)                   # flat views: the tiles address both by offsets
    xf = x.reshape(-1)
    taps = 4 if wide else 3
    for ch in prange(nchunks):
        m0 = ch * rows_per_chunk
        m1 = min(N * OH, m0 + rows_per_chunk)
        n0 = m0 // OH                       # the chunk's images: n0 .. n1 - 1
        n1 = (m1 - 1) // OH + 1
        buf = np.empty((n1 - n0) * plane, dtype=np.float32)
        for n in range(n0, n1):
            for c in range(C):
                split_channel(buf, ((n - n0) * C + c) * sh * sw * Hq * Wq, xf, (n * C + c) * H * W, H, W,
                              ph, pw, sh, sw, Hq, Wq)
        d = df[n0 * O * P:]                 # both from image n0 on: rows m - n0*OH
        r0 = m0 - n0 * OH
        r1 = m1 - n0 * OH
        part = parts[ch]
        for o0 in range(0, O, 4):
            for k0 in range(0, Kpad, taps):
                if wide and OW == 32:
                    dw_tile_4x4_16x2(part, o0, k0, d, buf, koff, r0, r1, OH, OW, O * P, P, plane, Wq)
                elif wide and OW == 16:
                    dw_tile_4x4_16x1(part, o0, k0, d, buf, koff, r0, r1, OH, OW, O * P, P, plane, Wq)
                elif wide:
                    dw_tile_4x4_8x1(part, o0, k0, d, buf, koff, r0, r1, OH, OW, O * P, P, plane, Wq)
                elif OW == 32:
                    dw_tile_4x3_8x4(part, o0, k0, d, buf, koff, r0, r1, OH, OW, O * P, P, plane, Wq)
                elif OW == 16:
                    dw_tile_4x3_8x2(part, o0, k0, d, buf, koff, r0, r1, OH, OW, O * P, P, plane, Wq)
                else:
                    dw_tile_4x3_8x1(part, o0, k0, d, buf, koff, r0, r1, OH, OW, O * P, P, plane, Wq)


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
conv2d_tiles_by_image_jit = njit(parallel=True, cache=True)(_conv2d_tiles_by_image_loops)
conv2d_tiles_backward_input_by_image_jit = njit(parallel=True, cache=True)(_conv2d_tiles_backward_input_by_image_loops)


# --- wrappers: arguments as conv2d_forward / conv2d_backward checked them (pairs s, p, d) ----------
TILE_ROWS = 8  # channels the tallest last tile of a row covers: every loop that calls tile_row needs that many


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


def _tile_rows(wm):
    """wm (M, K) with zero rows up to TILE_ROWS when M is smaller: a last tile cannot start before
    channel 0 (those channels are cut off again by ``_first_channels``)."""
    M = wm.shape[0]
    return wm if M >= TILE_ROWS else np.concatenate([wm, np.zeros((TILE_ROWS - M, wm.shape[1]), np.float32)])


def _first_channels(out, M):
    """out (N, M', ...) cut to its first M channels (the zero rows of ``_tile_rows`` dropped)."""
    return out if out.shape[1] == M else np.ascontiguousarray(out[:, :M])


def _tiles_conv(xq, wm, koff, N, OH, OW):
    """out (N, M, OH, OW) of conv2d_tiles_jit on the phase-split input xq, weights wm (M, K)."""
    rows = _tile_rows(wm)
    out = np.empty((N, rows.shape[0], OH, OW), dtype=np.float32)
    conv2d_tiles_jit(out, xq, rows, koff, WIDE_VECTORS)
    return _first_channels(out, wm.shape[0])


def by_image_fit(N):
    """Whether the tiles run image by image (``_conv2d_tiles_by_image_loops``): at least two images
    per thread, so that every thread has work. The bits are the same either way (each output is the
    same tile's same sum); only which thread computes it and where its inputs are held differ."""
    return N >= 2 * numba.get_num_threads()


def _tiles_conv_of(x, wm, koff, s, p, split_hw, OH, OW):
    """out (N, M, OH, OW) of the tiles on x (N, C, H, W) zero-padded by p (top, left) and split into
    its stride-s phase planes of split_hw = (Hq, Wq): image by image where ``by_image_fit``, else from
    the whole batch's phase split."""
    x = np.ascontiguousarray(x)
    N = x.shape[0]
    if not by_image_fit(N):
        return _tiles_conv(_phase_split(x, s, p, split_hw), wm, koff, N, OH, OW)
    rows = _tile_rows(wm)
    out = np.empty((N, rows.shape[0], OH, OW), dtype=np.float32)
    conv2d_tiles_by_image_jit(out, x, rows, koff, p[0], p[1], s[0], s[1], split_hw[0], split_hw[1], WIDE_VECTORS)
    return _first_channels(out, wm.shape[0])


def _phase_taps(a, k, s, p, d):
    """The taps of a kernel axis that reach input positions of phase a (i*s + a), with their shifts:
    position i*s + a reads dout row i + delta, delta = (a + p - kh*d) / s, for each kh listed."""
    return [(kh, (a + p - kh * d) // s) for kh in range(k) if (a + p - kh * d) % s == 0]


def _phase_weights(w, rows, cols, top, left, Hd, Wd):
    """(wm (C, O*T), koff (O*T,)): the weight block and dout offsets of one phase's T taps (rows x
    cols of ``_phase_taps``) on dout zero-padded by (top, left) to Hd x Wd, in ascending offsets."""
    gather, koff = _phase_layout(w.shape, tuple(rows), tuple(cols), top, left, Hd, Wd)
    return np.ascontiguousarray(w).reshape(-1)[gather], koff


@functools.lru_cache(maxsize=256)
def _phase_layout(w_shape, rows, cols, top, left, Hd, Wd):
    """(gather (C, O*T), koff (O*T,)), read-only and made once per geometry: wm = w.flat[gather]. Column
    j of wm is tap t of output channel o, columns ordered by ascending dout offset koff (the flipped
    kernel's descending reads ran 1.2-1.5x slower, Zen 3)."""
    O, C, KH, KW = w_shape
    kh, th, kw, tw = (np.array(v) for v in zip(*[(kh, th, kw, tw) for kh, th in rows for kw, tw in cols]))
    o = np.arange(O)[:, None]
    koff = ((o * Hd + top + th[None, :]) * Wd + left + tw[None, :]).reshape(-1).astype(np.int64)  # (O*T,) by (o, t)
    first = ((o * C) * KH + kh[None, :]) * KW + kw[None, :]        # w.flat index of (o, c = 0, kh_t, kw_t)
    order = np.argsort(koff, kind="stable")
    gather = first.reshape(-1)[order][None, :] + (np.arange(C) * KH * KW)[:, None]  # (C, O*T)
    koff = koff[order]
    gather.flags.writeable = koff.flags.writeable = False
    return gather, koff


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
    if (sh, sw) == (1, 1):  # one phase: a tiles conv of dout zero-padded to Hd x Wd
        wm, koff = _phase_weights(w, rows[0], cols[0], top, left, Hd, Wd)
        return _tiles_conv_of(dout, wm, koff, (1, 1), (top, left), (Hd, Wd), H, W)
    phases = [(a, b, -(-(H - a) // sh), Wi) for a in range(sh) for b in range(sw)]  # Ha: rows of dx in phase a
    if by_image_fit(N) and all(Ha > 0 and rows[a] and cols[b] for a, b, Ha, _ in phases):
        blocks = [_phase_weights(w, rows[a], cols[b], top, left, Hd, Wd) for a, b, _, _ in phases]
        dx = np.empty(x_shape, dtype=np.float32)
        conv2d_tiles_backward_input_by_image_jit(dx, np.ascontiguousarray(dout), tuple(_tile_rows(wm) for wm, _ in blocks),
                                                 tuple(koff for _, koff in blocks), np.array(phases, np.int64),
                                                 sh, sw, top, left, Hd, Wd, WIDE_VECTORS)
        return dx
    dpad = np.empty((N, O, Hd, Wd), dtype=np.float32)                # dout, zero-padded for every shift
    phase_split_jit(dpad, np.ascontiguousarray(dout), top, left, 1, 1)  # (a parallel pad: one phase)
    dx = np.empty(x_shape, dtype=np.float32)
    for a in range(sh):
        for b in range(sw):
            Ha = -(-(H - a) // sh)                                        # rows of dx in phase a
            if Ha <= 0:
                continue
            if not (rows[a] and cols[b]):                                 # no tap reaches this phase
                dx[:, :, a::sh, b::sw] = 0
                continue
            wm, koff = _phase_weights(w, rows[a], cols[b], top, left, Hd, Wd)
            out = _tiles_conv(dpad, wm, koff, N, Ha, Wi)                  # (N, C, Ha, Wi)
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
    """koff (C*KH*KW,) int64 of every tap, in (c, kh, kw) order; read-only, made once per geometry (a
    training step asks for each layer's in all three passes). s, d: pairs of any kind (tuple, list)."""
    return _tap_offsets_once(int(C), int(KH), int(KW), tuple(map(int, s)), tuple(map(int, d)), int(Hq), int(Wq))


@functools.lru_cache(maxsize=256)
def _tap_offsets_once(C, KH, KW, s, d, Hq, Wq):
    """``_tap_offsets`` on ints and int pairs (hashable, so one cache entry per geometry whatever kind
    of pair the caller passed); the array is shared by every caller, hence read-only."""
    c, kh, kw = np.meshgrid(np.arange(C), np.arange(KH), np.arange(KW), indexing="ij")
    koff = tap_offsets(c, kh, kw, s, d, Hq, Wq).reshape(-1)
    koff.flags.writeable = False
    return koff


def _phase_split(x, s, p, split_hw=None):
    """The padded, phase-split input (N, C*sh*sw, Hq, Wq) of x (N, C, H, W); (Hq, Wq) = ``split_hw``,
    by default ``_split_shape``'s (p on every side)."""
    N, C, H, W = x.shape
    Hq, Wq = split_hw or _split_shape(H, W, s, p)
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
    split_hw = _split_shape(x.shape[2], x.shape[3], s, p)
    koff = _tap_offsets(C, KH, KW, s, d, *split_hw)
    return _tiles_conv_of(x, np.ascontiguousarray(w).reshape(O, C * KH * KW), koff, s, p, split_hw, OH, OW)  # (O, K) rows


class TilesPlan:
    """``conv2d_tiles`` for fixed weights w (O, C, KH, KW) and input size (H, W), with the (O, K) weight
    rows and the tap offsets made once: a call does the phase split and the tiles, the same
    arithmetic as conv2d_tiles (equal bits). Geometry s, p, d as pairs; the caller checked that the
    tiles fit (``tiles_fit``)."""

    def __init__(self, w, input_hw, s, p, d):
        O, C, KH, KW = w.shape
        H, W = input_hw
        self.s, self.p, self.split_hw = s, p, _split_shape(H, W, s, p)
        self.OH, self.OW = conv_output_size(H, W, KH, KW, s, p, d)
        self.wm = np.ascontiguousarray(w, dtype=np.float32).reshape(O, C * KH * KW)  # (O, K) rows
        self.koff = _tap_offsets(C, KH, KW, s, d, *self.split_hw)

    def __call__(self, x):
        return _tiles_conv_of(x, self.wm, self.koff, self.s, self.p, self.split_hw, self.OH, self.OW)


def conv2d_tiles_backward_weight(dout, x, w_shape, s, p, d):
    """dw (O, C, KH, KW) = sum over output rows of dout-rows x patch-rows, in fixed row chunks."""
    O, C, KH, KW = w_shape
    N, _, OH, OW = dout.shape
    split_hw = _split_shape(x.shape[2], x.shape[3], s, p)
    koff = _tap_offsets(C, KH, KW, s, d, *split_hw)
    K = C * KH * KW
    taps = 4 if WIDE_VECTORS else 3                                       # patch rows per tile
    koff = np.concatenate([koff, np.full(-K % taps, koff[0], np.int64)])  # pad K to a multiple of taps
    dout = np.ascontiguousarray(dout)
    if O % 4:  # the tiles read 4 dout channels at a time: zero channels up to a multiple of 4, dropped below
        dout = np.concatenate([dout, np.zeros((N, -O % 4, OH, OW), np.float32)], axis=1)  # (N, O4, OH, OW)
    rows_per_chunk = 128  # 4 CIFAR images at 32x32: per-chunk horizontal sums stay ~5 % of the work
    parts = np.zeros((-(-N * OH // rows_per_chunk), dout.shape[1], koff.size), dtype=np.float32)
    conv2d_tiles_backward_weight_jit(parts, dout, np.ascontiguousarray(x), koff, rows_per_chunk, p[0], p[1], s[0], s[1],
                                     split_hw[0], split_hw[1], WIDE_VECTORS)
    return parts.sum(axis=0, dtype=np.float64)[:O, :K].astype(np.float32).reshape(w_shape)  # (O, K) -> OIHW
