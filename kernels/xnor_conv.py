"""Binary (XNOR) convolution on bit-packed ±1 activations and weights: one XNOR GEMM per layer.

``binary_conv2d(x_bits, w_bits, channels, ...)``, layout **NHWC with the channels packed**: x_bits
(N, H, W, CW) and w_bits (O, KH, KW, CW) uint64 with CW = ceil(C / 64) words per pixel (tap). Why NHWC:
every tap of a patch is CW whole words, so a patch is a concatenation of word runs (a word-level
im2col, KH*KW*CW words instead of C*KH*KW floats) and the layer is one XNOR GEMM (``xnor_gemm``: the
identity a . b = n - 2 * popcount(a XOR b)). The GEMM takes the weights (O, KH*KW*CW) as its row
operand and the patches, built transposed (KH*KW*CW, N*OH*OW), as its column operand, so its output
(O, N*OH*OW) holds each output channel contiguously along positions and the epilogue writes NCHW with
contiguous runs. ``pack_activations`` packs float NCHW (or NHWC) activations into this layout;
``pack_weights_per_tap`` packs OIHW weights. Channels are padded to whole words per tap, except when C
divides 64 (ResNet-20's C = 16, 32): then 64 // C taps share a word (``_patches_t_tight_loops``), the
bit order of a packed C*KH*KW-bit row.

    y[n, o, oh, ow] = (n_valid - 2 * popcount(patch XOR w[o]))  * alpha[o] * bn_scale[o] + bn_bias[o]

Padding (``pad_mode``):
- ``"zero"`` (default, the float model's semantics): a padded tap has no sign and contributes 0. The
  patch holds zero words there, so the popcount counts the weight's own set bits on those taps;
  they are subtracted again (per tap and output channel, precomputed), and n_valid = C * (number of
  in-bounds taps). The integer part then equals float conv2d(sign(x), sign(w)) with zero padding.
- ``"one"`` (Larq's choice; changes the model): padded taps are +1 on every channel, n_valid = C*KH*KW.

The output is float32 (N, O, OH, OW) (``layout="NHWC"``: (N, OH, OW, O)); without alpha and BN it
holds the exact integers (|value| <= C*KH*KW < 2^24). Dilation and groups are not supported.

Reference: ``binary_conv2d_ref`` (unpack, pad, im2col, matmul, all NumPy) never calls the loops.
"""
import numpy as np
from numba import njit, prange

from .bits import n_words, pack_signs, pack_signs_jit
from .im2col import as_pair
from .xnor_gemm import ROW_CHUNK, STRIP, check_bits, check_n_bits, check_tail, xnor_dot_block

__all__ = ["binary_conv2d", "BinaryConv2dPlan", "binary_conv2d_ref", "pack_activations", "pack_weights_per_tap", "PAD_MODES"]

PAD_MODES = ("zero", "one")


# --- reference ---------------------------------------------------------------------------------
def binary_conv2d_ref(x_sign, w_sign, stride=1, padding=0, pad_mode="zero"):
    """NumPy oracle: float conv2d of ±1 NCHW x with ±1 OIHW w by explicit padding, im2col and matmul.

    ``pad_mode="zero"`` pads with 0 (the float model), ``"one"`` with +1 (Larq). Returns float64.
    """
    (sh, sw) = as_pair(stride, "stride", "binary_conv2d_ref", 1)
    (ph, pw) = as_pair(padding, "padding", "binary_conv2d_ref", 0)
    N, C, H, W = x_sign.shape
    O, _, KH, KW = w_sign.shape
    OH, OW = (H + 2 * ph - KH) // sh + 1, (W + 2 * pw - KW) // sw + 1
    xp = np.pad(np.asarray(x_sign, np.float64), ((0, 0), (0, 0), (ph, ph), (pw, pw)),
                constant_values=0.0 if pad_mode == "zero" else 1.0)  # (N, C, H+2ph, W+2pw)
    cols = np.empty((N, OH, OW, C, KH, KW))
    for kh in range(KH):
        for kw in range(KW):
            tap = xp[:, :, kh:kh + sh * (OH - 1) + 1:sh, kw:kw + sw * (OW - 1) + 1:sw]  # (N, C, OH, OW)
            cols[..., kh, kw] = tap.transpose(0, 2, 3, 1)
    out = cols.reshape(N * OH * OW, C * KH * KW) @ np.asarray(w_sign, np.float64).reshape(O, -1).T  # (N*OH*OW, O)
    return out.reshape(N, OH, OW, O).transpose(0, 3, 1, 2)  # (N, O, OH, OW)


# --- loops --------------------------------------------------------------------------------------
def _patches_t_loops(patches_t, x_bits, pad_word, KH, KW, sh, sw, ph, pw, OH, OW):
    """Word-level im2col, transposed: patches_t (KH*KW*CW, N*OH*OW) <- x_bits (N, H, W, CW).

    Row (kh*KW + kw)*CW + c, column m = (n*OH + oh)*OW + ow holds word c of pixel (oh*sh - ph + kh,
    ow*sw - pw + kw) of image n, or pad_word[c] outside the image. Rows are written contiguously.
    """
    N, H, W, CW = x_bits.shape
    rows = KH * KW * CW
    for t in prange(rows * N):
        r = t // N
        n = t % N
        c = r % CW
        kh = r // (CW * KW)
        kw = (r // CW) % KW
        for oh in range(OH):
            ih = oh * sh - ph + kh
            base = (n * OH + oh) * OW
            for ow in range(OW):
                iw = ow * sw - pw + kw
                if 0 <= ih < H and 0 <= iw < W:
                    patches_t[r, base + ow] = x_bits[n, ih, iw, c]
                else:
                    patches_t[r, base + ow] = pad_word[c]


def _patches_t_tight_loops(patches_t, x_bits, pad_word, C, KH, KW, sh, sw, ph, pw, OH, OW):
    """Bit-tight transposed im2col for C dividing 64: 64 // C taps share a word.

    patches_t (ceil(KH*KW*C / 64), N*OH*OW): tap t = kh*KW + kw occupies bits (t*C) % 64 .. + C - 1 of
    word (t*C) // 64, i.e. bit j of the patch is channel j % C of tap j // C, exactly the bit order of
    a C*KH*KW-bit row packed by ``pack_signs``. x_bits (N, H, W, 1); pad_word[0] fills padded taps.
    """
    N, H, W, _ = x_bits.shape
    rows = patches_t.shape[0]
    per = 64 // C
    taps = KH * KW
    for item in prange(rows * N):
        r = item // N
        n = item % N
        row = patches_t[r, n * OH * OW:(n + 1) * OH * OW]  # this image's positions, contiguous
        for p in range(OH * OW):
            row[p] = 0
        for t in range(r * per, min(taps, (r + 1) * per)):  # taps outermost: no division per position
            kh = t // KW
            kw = t % KW
            shift = np.uint64((t - r * per) * C)
            pad = pad_word[0] << shift
            for oh in range(OH):
                ih = oh * sh - ph + kh
                out_row = row[oh * OW:(oh + 1) * OW]
                if ih < 0 or ih >= H:
                    for ow in range(OW):
                        out_row[ow] |= pad
                else:
                    for ow in range(OW):
                        iw = ow * sw - pw + kw
                        if 0 <= iw < W:
                            out_row[ow] |= x_bits[n, ih, iw, 0] << shift
                        else:
                            out_row[ow] |= pad


def _padding_adjust_loops(adjust_t, tap_pop, C, H, W, KH, KW, sh, sw, ph, pw, OW):
    """adjust_t (O, OH*OW) int32: what zero padding adds to the all-taps dot product at each position.

    A padded tap's patch words are 0, so the popcount counted the weight's own set bits there
    (tap_pop (KH*KW, O)); and the n of the identity must count in-bounds taps only. Hence
    n_valid - 2 * (pop - corr) = dot_all_taps - C * (padded taps) + 2 * corr. 0 inside the image.
    """
    O, P = adjust_t.shape
    for pos in prange(P):
        ih0 = (pos // OW) * sh - ph
        iw0 = (pos % OW) * sw - pw
        kh0, kh1 = max(0, -ih0), min(KH, H - ih0)  # in-bounds taps: kh0 <= kh < kh1, kw0 <= kw < kw1
        kw0, kw1 = max(0, -iw0), min(KW, W - iw0)
        missing = C * (KH * KW - max(0, kh1 - kh0) * max(0, kw1 - kw0))
        for o in range(O):
            v = -missing
            if missing:
                for kh in range(KH):
                    for kw in range(KW):
                        if not (kh0 <= kh < kh1 and kw0 <= kw < kw1):
                            v += 2 * tap_pop[kh * KW + kw, o]
            adjust_t[o, pos] = v


def _binary_conv2d_loops(out, w_bits, patches_t, adjust_t, mult, add, n_bits, nchw, col_group, res, has_res):
    """out <- (dot + adjust_t[o, position]) * mult[o] + add[o] (+ res, flat like out, when has_res),
    dot = n_bits - 2 * popcount(w[o] XOR patch).

    The GEMM runs with the weights as the row operand: w_bits (O, KH*KW*CW) against patches_t
    (KH*KW*CW, N*OH*OW); each work item collects its block of dots (int32, a row per output channel
    along positions) in a buffer of its own, which the epilogue reads back from cache (an (O, N*OH*OW)
    array of dots instead cost its size twice in memory traffic: 2-11 % of the layer), and writes
    NCHW in contiguous runs (one per image). adjust_t
    (O, OH*OW) from ``_padding_adjust_loops`` (zeros for +1 padding); mult, add (O,) float32; out flat
    float32 in NCHW order, or NHWC (then written at a stride of O).
    """
    O = w_bits.shape[0]
    M = patches_t.shape[1]
    P = adjust_t.shape[1]
    n_rows = (O + ROW_CHUNK - 1) // ROW_CHUNK
    n_cols = (M + col_group - 1) // col_group
    for item in prange(n_rows * n_cols):
        r0 = (item // n_cols) * ROW_CHUNK
        c0 = (item % n_cols) * col_group
        r1 = min(r0 + ROW_CHUNK, O)
        c1 = min(c0 + col_group, M)
        dots = np.empty((r1 - r0, c1 - c0), dtype=np.int32)
        xnor_dot_block(dots, w_bits, patches_t, n_bits, r0, r1, c0, c1, 0, 0)
        m0 = c0
        while m0 < c1:  # one image at a time: columns m0..m1 are positions p0..p0+L of image n
            n = m0 // P
            p0 = m0 - n * P
            m1 = min(c1, (n + 1) * P)
            L = m1 - m0
            for o in range(r0, r1):
                # slices, so that the inner index starts at 0 and LLVM vectorises without wraparound checks
                dot_run = dots[o - r0, m0 - c0:m1 - c0]
                adj_run = adjust_t[o, p0:p0 + L]
                scale, shift = mult[o], add[o]
                if nchw:  # a contiguous slice: its own loop keeps Numba's 'C' layout type
                    at = (n * O + o) * P + p0
                    out_run = out[at:at + L]
                    if has_res:
                        res_run = res[at:at + L]
                        for k in range(L):
                            out_run[k] = (np.float32(dot_run[k] + adj_run[k]) * scale + shift) + res_run[k]
                    else:
                        for k in range(L):
                            out_run[k] = np.float32(dot_run[k] + adj_run[k]) * scale + shift
                else:
                    out_strided = out[m0 * O + o:m1 * O:O]
                    for k in range(L):
                        out_strided[k] = np.float32(dot_run[k] + adj_run[k]) * scale + shift
                    if has_res:
                        res_strided = res[m0 * O + o:m1 * O:O]
                        for k in range(L):
                            out_strided[k] = out_strided[k] + res_strided[k]
            m0 = m1


def _pack_nchw_loops(out, x, scratch):
    """out (N, H*W, CW) uint64 <- signs of x (N, C, H*W): bit c % 64 of word c // 64 at each pixel.

    One work item per (image, word): scratch[item] (H*W,) collects the word of every pixel with the
    inner loop running along the contiguous pixels of one channel plane (so it vectorises, and it
    is branch-free: random signs would defeat the branch predictor), then goes to the strided column.
    """
    N, C, HW = x.shape
    CW = out.shape[2]
    for item in prange(N * CW):
        n = item // CW
        wd = item % CW
        for p in range(HW):
            scratch[item, p] = 0
        for b in range(min(64, C - wd * 64)):
            plane = x[n, wd * 64 + b]
            shift = np.uint64(b)
            for p in range(HW):
                scratch[item, p] |= np.uint64(plane[p] >= 0) << shift
        for p in range(HW):
            out[n, p, wd] = scratch[item, p]


patches_t_jit = njit(parallel=True, cache=True)(_patches_t_loops)
patches_t_tight_jit = njit(parallel=True, cache=True)(_patches_t_tight_loops)
padding_adjust_jit = njit(parallel=True, cache=True)(_padding_adjust_loops)
binary_conv2d_jit = njit(parallel=True, cache=True)(_binary_conv2d_loops)
pack_nchw_jit = njit(parallel=True, cache=True)(_pack_nchw_loops)


# --- wrappers -----------------------------------------------------------------------------------
def _col_group_conv(rows, cols):
    """Positions per work item of the convolution: 8 micro-tile strips, fewer if that leaves a thread idle."""
    import numba
    row_items = -(-rows // ROW_CHUNK)
    per = -(-cols // max(1, -(-4 * numba.get_num_threads() // row_items)))  # >= 4 items per thread
    return max(STRIP, min(8 * STRIP, -(-per // STRIP) * STRIP))


def pack_activations(x, layout="NCHW"):
    """Signs of float activations -> (N, H, W, CW) uint64, the input layout of ``binary_conv2d``.

    ``layout`` is the layout of ``x``: "NCHW" (N, C, H, W) or "NHWC" (N, H, W, C). Bit c % 64 of word
    c // 64 at each pixel is 1 where x >= 0 (sign(0) = +1); tail bits 0. NaN packs as -1 (not checked:
    this runs in every binary layer's forward pass; ``bits.pack_signs`` rejects NaN).
    """
    if not isinstance(x, np.ndarray):
        raise TypeError(f"pack_activations: x must be a numpy array, got {type(x).__name__}")
    if x.dtype not in (np.float32, np.float64):
        raise TypeError(f"pack_activations: x must be float32 or float64, got {x.dtype}")
    if x.ndim != 4 or 0 in x.shape:
        raise ValueError(f"pack_activations: x must be a non-empty 4-D array, got shape {x.shape}")
    if layout == "NHWC":
        N, H, W, C = x.shape
        flat = np.ascontiguousarray(x).reshape(N * H * W, C)  # (N*H*W, C)
        out = np.empty((N * H * W, n_words(C)), dtype=np.uint64)
        pack_signs_jit(out, flat)
        return out.reshape(N, H, W, -1)
    if layout != "NCHW":
        raise ValueError(f"pack_activations: layout must be 'NCHW' or 'NHWC', got {layout!r}")
    N, C, H, W = x.shape
    CW = n_words(C)
    out = np.empty((N, H * W, CW), dtype=np.uint64)
    pack_nchw_jit(out, np.ascontiguousarray(x).reshape(N, C, H * W), np.empty((N * CW, H * W), dtype=np.uint64))
    return out.reshape(N, H, W, CW)


def pack_weights_per_tap(w):
    """Signs of float OIHW weights (O, C, KH, KW) -> (O, KH, KW, CW) uint64, CW = ceil(C / 64): each
    tap's C channel signs in whole words of their own (bit c % 64 of word c // 64, tail bits 0), the
    weight layout of ``binary_conv2d``. No scale: alpha is an argument of the convolution."""
    if not isinstance(w, np.ndarray) or w.ndim != 4:
        raise TypeError("pack_weights_per_tap: w must be a 4-D numpy array (O, C, KH, KW)")
    return pack_signs(np.transpose(w, (0, 2, 3, 1)), axis=-1)  # (O, KH, KW, C) -> (O, KH, KW, CW)


def _channel_vector(name, v, O, default):
    if v is None:
        return np.full(O, default, dtype=np.float32)
    if not isinstance(v, np.ndarray) or v.dtype.kind not in "fiu":
        raise TypeError(f"binary_conv2d: {name} must be a real numpy array of shape ({O},) or None")
    if v.shape != (O,):
        raise ValueError(f"binary_conv2d: {name} must have shape ({O},) (one per output channel), got {v.shape}")
    return v.astype(np.float32)


def binary_conv2d(x_bits, w_bits, channels, stride=1, padding=0, alpha=None, bn_scale=None, bn_bias=None,
                  pad_mode="zero", layout="NCHW"):
    """Binary (XNOR) convolution of packed NHWC activations with packed weights; float32 output.

    x_bits (N, H, W, CW) from ``pack_activations``; w_bits (O, KH, KW, CW) from ``pack_weights_per_tap``;
    channels = C (CW = ceil(C / 64)). Returns (N, O, OH, OW) (``layout="NHWC"``: (N, OH, OW, O)) with
    y = conv(sign x, sign w) * alpha[o] * bn_scale[o] + bn_bias[o] (each factor optional). ``pad_mode``
    "zero": padded taps contribute 0 (exact float-model semantics); "one": padded taps are +1 (Larq).
    One call of a ``BinaryConv2dPlan`` made for x_bits' size: a layer run many times keeps the plan.
    """
    op = "binary_conv2d"
    x = check_bits(op, "x_bits", x_bits, 4)
    w = check_bits(op, "w_bits", w_bits, 4)
    if w.shape[3] != x.shape[3]:
        raise ValueError(f"{op}: w_bits has {w.shape[3]} words per tap but x_bits has {x.shape[3]} per pixel")
    check_n_bits(op, "channels", channels, x.shape[3], "x_bits")
    if 0 in x.shape or 0 in w.shape:
        raise ValueError(f"{op}: empty x_bits {x.shape} or w_bits {w.shape}")
    plan = BinaryConv2dPlan(w_bits, channels, x.shape[1:3], stride, padding, alpha, bn_scale, bn_bias, pad_mode,
                            layout)
    return plan(x)


class BinaryConv2dPlan:
    """``binary_conv2d`` for fixed weights and input size, with what depends only on them done once:
    the checks of the weights, the weight rows of the GEMM (taps sharing words when C divides 64), the
    zero-padding correction of every output position (``_padding_adjust_loops``) and the epilogue's
    per-channel factors. ``plan(x_bits)`` then packs patches, runs the GEMM and the epilogue, checking
    only x_bits' shape and (when C is not a multiple of 64) its tail bits. ``input_hw`` = (H, W)."""

    def __init__(self, w_bits, channels, input_hw, stride=1, padding=0, alpha=None, bn_scale=None, bn_bias=None,
                 pad_mode="zero", layout="NCHW"):
        op = "binary_conv2d"
        w = check_bits(op, "w_bits", w_bits, 4)
        O, KH, KW, CW = w.shape
        channels = check_n_bits(op, "channels", channels, CW, "w_bits")
        H, W = (int(v) for v in input_hw)
        if 0 in w.shape or H < 1 or W < 1:
            raise ValueError(f"{op}: empty w_bits {w.shape} or input size {H}x{W}")
        check_tail(op, "w_bits", w, channels)
        (sh, sw), (ph, pw) = as_pair(stride, "stride", op, 1), as_pair(padding, "padding", op, 0)
        if pad_mode not in PAD_MODES:
            raise ValueError(f"{op}: pad_mode must be one of {PAD_MODES}, got {pad_mode!r}")
        if layout not in ("NCHW", "NHWC"):
            raise ValueError(f"{op}: layout must be 'NCHW' or 'NHWC', got {layout!r}")
        OH, OW = (H + 2 * ph - KH) // sh + 1, (W + 2 * pw - KW) // sw + 1
        if OH < 1 or OW < 1:
            raise ValueError(f"{op}: kernel {KH}x{KW} does not fit the padded input {H + 2 * ph}x{W + 2 * pw}")
        if channels * KH * KW >= 2 ** 24:
            raise ValueError(f"{op}: channels*KH*KW = {channels * KH * KW} is too large for exact float32 output")
        self.mult = _channel_vector("alpha", alpha, O, 1.0) * _channel_vector("bn_scale", bn_scale, O, 1.0)
        self.add = _channel_vector("bn_bias", bn_bias, O, 0.0)
        taps = KH * KW
        self.adjust_t = np.zeros((O, OH * OW), dtype=np.int32)  # +1 padding (or none): the all-taps dot is right
        if pad_mode == "zero" and (ph or pw):
            # set bits of each weight tap: (O, KH*KW, CW*8 bytes) -> (O, KH*KW) counts
            tap_pop = np.unpackbits(w.view(np.uint8).reshape(O, taps, CW * 8), axis=2).sum(axis=2, dtype=np.int32)
            padding_adjust_jit(self.adjust_t, np.ascontiguousarray(tap_pop.T), channels, H, W, KH, KW, sh, sw, ph,
                               pw, OW)
        self.pad_word = np.zeros(CW, dtype=np.uint64)
        if pad_mode == "one":
            self.pad_word[:] = np.uint64(0xFFFFFFFFFFFFFFFF)
            if channels % 64:
                self.pad_word[-1] = np.uint64((1 << (channels % 64)) - 1)  # +1 on real channels, tail stays 0
        self.pixels = KH == KW == 1 and sh == sw == 1 and ph == pw == 0   # a 1x1 conv's patches are the pixels
        # C divides 64 (ResNet-20's 16 and 32): pack 64 // C taps per word instead of one, so the GEMM
        # reduces over ceil(C*KH*KW / 64) words rather than KH*KW mostly empty ones
        self.tight = not self.pixels and channels < 64 and 64 % channels == 0 and taps > 1
        if self.tight:
            per = 64 // channels
            self.w_rows = np.zeros((O, n_words(channels * taps)), dtype=np.uint64)
            for t in range(taps):
                self.w_rows[:, t // per] |= w[:, t // KW, t % KW, 0] << np.uint64((t % per) * channels)
        else:
            self.w_rows = w.reshape(O, taps * CW)  # (O, KH*KW*CW)
        self.channels, self.geometry, self.nchw = channels, (KH, KW, sh, sw, ph, pw, OH, OW), layout == "NCHW"
        self.x_shape = (H, W, CW)

    def __call__(self, x_bits, residual=None):
        """The convolution of x_bits; ``residual`` (the output's shape, float32) is added in the epilogue
        (y = ... + bn_bias[o] + residual, rounded after each add as two passes would round)."""
        if not isinstance(x_bits, np.ndarray) or x_bits.dtype != np.uint64 or x_bits.shape[1:] != self.x_shape \
                or x_bits.ndim != 4 or x_bits.shape[0] < 1:
            raise ValueError(f"binary_conv2d: x_bits must be uint64 (N, {', '.join(map(str, self.x_shape))}) for this "
                             f"plan, got {getattr(x_bits, 'dtype', type(x_bits).__name__)} "
                             f"{getattr(x_bits, 'shape', '')}")
        x = np.ascontiguousarray(x_bits)
        check_tail("binary_conv2d", "x_bits", x, self.channels)  # a no-op when C is a multiple of 64
        KH, KW, sh, sw, ph, pw, OH, OW = self.geometry
        N, CW, O = x.shape[0], self.x_shape[2], self.w_rows.shape[0]
        M = N * OH * OW
        if self.pixels:
            patches_t = np.ascontiguousarray(x.reshape(M, CW).T)
        elif self.tight:
            patches_t = np.empty((self.w_rows.shape[1], M), dtype=np.uint64)  # (ceil(C*KH*KW/64), N*OH*OW)
            patches_t_tight_jit(patches_t, x, self.pad_word, self.channels, KH, KW, sh, sw, ph, pw, OH, OW)
        else:
            patches_t = np.empty((KH * KW * CW, M), dtype=np.uint64)  # (KH*KW*CW, N*OH*OW)
            patches_t_jit(patches_t, x, self.pad_word, KH, KW, sh, sw, ph, pw, OH, OW)
        shape = (N, O, OH, OW) if self.nchw else (N, OH, OW, O)
        if residual is not None and (not isinstance(residual, np.ndarray) or residual.shape != shape
                                     or residual.dtype != np.float32):
            raise ValueError(f"binary_conv2d: residual must be float32 {shape}, got "
                             f"{getattr(residual, 'dtype', type(residual).__name__)} {getattr(residual, 'shape', '')}")
        res = np.zeros(1, np.float32) if residual is None else np.ascontiguousarray(residual).reshape(-1)
        out = np.empty(M * O, dtype=np.float32)
        binary_conv2d_jit(out, self.w_rows, patches_t, self.adjust_t, self.mult, self.add,
                          self.channels * KH * KW, self.nchw, _col_group_conv(O, M), res, residual is not None)
        return out.reshape(shape)
