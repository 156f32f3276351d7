"""Binary-weight convolution (BinaryConnect / BWN inference): float activations, 1-bit weights.

Math (docs/methods.md, "BC" and "BWN"): with W_b = sign(W) in {-1, +1} (sign(0) = +1) and a scale
alpha (one per output filter for BWN, a single one for BC, where alpha = 1),

    y[n, o, oh, ow] = alpha[o] * sum_{c, kh, kw} W_b[o, c, kh, kw] * x[n, c, oh*sh - ph + kh*dh, ow*sw - pw + kw*dw]

with zero padding (a padded tap contributes 0). No multiplication by a weight ever happens: every
term is added or subtracted, and alpha is applied once per output.

Shapes and conventions:
    x       (N, C, H, W) float32, NCHW
    w_bits  (O, words) uint64: ``tinycomp_kernels.bits.pack_signs(w.reshape(O, C*KH*KW))``, i.e. the
            weight row k = (c*KH + kh)*KW + kw sits in bit k % 64 of word k // 64, bit 1 = +1,
            tail bits 0 (see bits.py); words = ceil(C*KH*KW / 64)
    alpha   float scalar (BC: 1.0, or one per layer) or (O,) float (BWN, per filter)
    y       (N, O, OH, OW) float32

How the adds are organised (the "four Russians" / lookup-table trick): split the reduction index k
into groups of 4 consecutive taps. For one group and one output position there are only 16 sign
patterns, so the 16 signed sums  T[g, p] = sum_{q<4} (+1 if bit q of p else -1) * col[4g + q]
are built once (15 vector adds, shared by ALL output channels), and each output channel then needs
ONE add per group: y[o] = sum_g T[g, nibble(o, g)]. That is 4x fewer adds than a multiply-add per
weight, the table costs 16/O of the work, and the weights stay packed (32x less weight memory than
float32; a nibble is read straight from the packed word). Unpacking the bits into +-1 floats and
calling a float GEMM would only repeat the float convolution.

Execution: columns (output positions of one image) are processed in tiles of _LT; the reduction in
chunks of _KC taps (so that the patch chunk and its table stay in L2). Work items are
(image, column tile, block of output channels), spread over the threads by a static round robin;
each thread owns its scratch (patches, table, accumulators), allocated once by the wrapper.

Reference: ``binary_weight_conv2d_ref`` unpacks the bits in NumPy and runs im2col + matmul.
"""
import numpy as np
from numba import njit, prange, get_num_threads

from .bits import pack_signs
from .fastmath import ALL_FLAGS
from .im2col import as_pair, conv_output_size

_LT = 64    # output positions per tile: 4 AVX-512 vectors of float32
_KC = 256   # taps per reduction chunk: a multiple of 64, so a chunk starts on a word boundary
_OPS = "binary_weight_conv2d"


# --- reference ---------------------------------------------------------------------------------
def _unpack_ref(w_bits, K):
    """(O, words) uint64 -> (O, K) float32 of +-1: bit k % 64 of word k // 64, bit 1 = +1."""
    shifts = np.arange(64, dtype=np.uint64)                      # (64,)
    b = (w_bits[:, :, None] >> shifts) & np.uint64(1)            # (O, words, 64)
    b = b.reshape(w_bits.shape[0], -1)[:, :K]                    # (O, K)
    return np.where(b == 1, 1.0, -1.0).astype(np.float32)


def binary_weight_conv2d_ref(x, w_bits, alpha, kernel_size, stride=1, padding=0, dilation=1):
    """NumPy oracle: unpack the bits, scale by alpha, im2col by slicing the padded input, matmul."""
    (KH, KW), (sh, sw) = as_pair(kernel_size, "kernel_size"), as_pair(stride, "stride")
    (ph, pw), (dh, dw) = as_pair(padding, "padding"), as_pair(dilation, "dilation")
    N, C, H, W = x.shape
    O = w_bits.shape[0]
    OH, OW = conv_output_size(H, W, KH, KW, (sh, sw), (ph, pw), (dh, dw))
    wf = _unpack_ref(w_bits, C * KH * KW) * np.broadcast_to(np.asarray(alpha, np.float32), (O,))[:, None]
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (ph, ph), (pw, pw)))  # (N, C, H+2ph, W+2pw)
    cols = np.empty((N, C, KH, KW, OH, OW))
    for kh in range(KH):
        for kw in range(KW):
            cols[:, :, kh, kw] = xp[:, :, kh * dh: kh * dh + sh * (OH - 1) + 1: sh,
                                    kw * dw: kw * dw + sw * (OW - 1) + 1: sw]
    cols = cols.reshape(N, C * KH * KW, OH * OW)                 # (N, K, L)
    y = np.matmul(wf.astype(np.float64), cols)                   # (N, O, L)
    return y.reshape(N, O, OH, OW).astype(np.float32)


# --- loops -------------------------------------------------------------------------------------
def _bwconv_loops(out, xp, w_bits, alpha, KH, KW, sh, sw, dh, dw, n_oblocks, col, table, acc, offs):
    """out (N, O, OH, OW) <- alpha * (+-1 weights) conv xp, xp the zero-padded input (N, C, Hp, Wp).

    Scratch, one slice per thread t: col (T, _KC, _LT), table (T, _KC//4, 16, _LT),
    acc (T, O, _LT), offs (T, _LT) int64 (offset of each tile column's window in a padded plane).
    """
    N, C, Hp, Wp = xp.shape
    O = w_bits.shape[0]
    OH, OW = out.shape[2], out.shape[3]
    L = OH * OW
    K = C * KH * KW
    K16 = (K + 15) // 16 * 16                    # taps processed: K rounded up to 4 groups of 4
    n_tiles = (L + _LT - 1) // _LT
    n_items = N * n_tiles * n_oblocks
    ob_size = (O + n_oblocks - 1) // n_oblocks
    T = col.shape[0]
    xf = xp.reshape(xp.size)                     # (N*C*Hp*Wp,)
    of = out.reshape(N, O, L)                    # (N, O, L)
    for t in prange(T):
        for item in range(t, n_items, T):
            ob = item % n_oblocks
            tile = (item // n_oblocks) % n_tiles
            n = item // (n_oblocks * n_tiles)
            o0 = ob * ob_size
            o1 = min(O, o0 + ob_size)
            l0 = tile * _LT
            nl = min(_LT, L - l0)
            # window origin of each column of the tile; columns past L repeat the last one
            for j in range(_LT):
                l = l0 + min(j, nl - 1)
                oh = l // OW
                offs[t, j] = (oh * sh) * Wp + (l - oh * OW) * sw
            for o in range(o0, o1):
                for j in range(_LT):
                    acc[t, o, j] = 0.0
            for k0 in range(0, K16, _KC):
                kc = min(_KC, K16 - k0)          # a multiple of 16
                # patches of this chunk: col[kk, j] = xp[n, c, oh*sh + kh*dh, ow*sw + kw*dw]
                for kk in range(kc):
                    k = k0 + kk
                    if k < K:
                        c = k // (KH * KW)
                        kh = (k // KW) % KH
                        kw = k % KW
                        base = ((n * C + c) * Hp + kh * dh) * Wp + kw * dw
                        for j in range(_LT):
                            col[t, kk, j] = xf[base + offs[t, j]]
                    else:  # taps past K: zero rows, so the tail bits add nothing
                        for j in range(_LT):
                            col[t, kk, j] = 0.0
                # table[g, p] = sum over the 4 taps of group g of (+1 if bit q of p else -1) * col
                for g in range(kc // 4):
                    for j in range(_LT):
                        table[t, g, 0, j] = -(col[t, 4 * g, j] + col[t, 4 * g + 1, j]
                                              + col[t, 4 * g + 2, j] + col[t, 4 * g + 3, j])
                    for p in range(1, 16):
                        q = 0  # the lowest set bit of p: flipping it from -1 to +1 adds 2*col
                        while (p >> q) & 1 == 0:
                            q += 1
                        prev = p & (p - 1)
                        for j in range(_LT):
                            table[t, g, p, j] = table[t, g, prev, j] + 2.0 * col[t, 4 * g + q, j]
                # one add per group of 4 taps and output channel; 4 groups per pass keep the
                # accumulator in registers across 4 table rows
                for o in range(o0, o1):
                    for ps in range(kc // 16):
                        k = k0 + 16 * ps         # 16 taps = 4 nibbles, never straddling a word
                        word = w_bits[o, k // 64] >> np.uint64(k % 64)
                        g = 4 * ps
                        p0 = np.int64(word & np.uint64(15))
                        p1 = np.int64((word >> np.uint64(4)) & np.uint64(15))
                        p2 = np.int64((word >> np.uint64(8)) & np.uint64(15))
                        p3 = np.int64((word >> np.uint64(12)) & np.uint64(15))
                        for j in range(_LT):
                            acc[t, o, j] += ((table[t, g, p0, j] + table[t, g + 1, p1, j])
                                             + (table[t, g + 2, p2, j] + table[t, g + 3, p3, j]))
            for o in range(o0, o1):
                a = alpha[o]
                for j in range(nl):
                    of[n, o, l0 + j] = a * acc[t, o, j]


# ALL_FLAGS: the table and accumulator sums vectorise re-associated; finite x is the wrapper's contract
binary_weight_conv2d_jit = njit(parallel=True, cache=True, fastmath=ALL_FLAGS)(_bwconv_loops)


# --- wrappers ----------------------------------------------------------------------------------
def pack_weights_per_filter(w, scale="filter"):
    """Float weights (O, C, KH, KW) -> (w_bits (O, words) uint64, alpha (O,) float32): each filter's
    C*KH*KW signs as one bit row (``bits.pack_signs(w.reshape(O, -1))``, words = ceil(C*KH*KW / 64)),
    the weight layout of ``binary_weight_conv2d``, and its scale.

    ``scale``: "filter" (BWN: alpha[o] = mean |w[o]|), "layer" (one mean |w| for the layer) or
    "none" (BinaryConnect: alpha = 1)."""
    if not isinstance(w, np.ndarray) or w.dtype.kind != "f":
        raise TypeError(f"pack_weights_per_filter: w must be a float numpy array, "
                        f"got {getattr(w, 'dtype', type(w))}")
    if w.ndim != 4 or w.size == 0:
        raise ValueError(f"pack_weights_per_filter: w must be a non-empty 4-D (O, C, KH, KW) array, "
                         f"got shape {w.shape}")
    O = w.shape[0]
    w2 = w.reshape(O, -1)                                          # (O, C*KH*KW)
    if scale == "filter":
        alpha = np.abs(w2).mean(axis=1, dtype=np.float64)
    elif scale == "layer":
        alpha = np.full(O, np.abs(w2).mean(dtype=np.float64))
    elif scale == "none":
        alpha = np.ones(O)
    else:
        raise ValueError(f"pack_weights_per_filter: scale must be 'filter', 'layer' or 'none', "
                         f"got {scale!r}")
    return pack_signs(w2, axis=-1), alpha.astype(np.float32)


def _n_oblocks(N, L, O, threads):
    """Split the output channels when there are too few (image, tile) items to feed the threads."""
    items = N * ((L + _LT - 1) // _LT)
    if items >= 2 * threads:
        return 1
    return max(1, min((2 * threads + items - 1) // items, O // 8 if O >= 8 else 1))


def binary_weight_conv2d(x, w_bits, alpha, kernel_size, stride=1, padding=0, dilation=1):
    """Convolution of float32 ``x`` (N, C, H, W) with packed binary weights, scaled by ``alpha``.

    ``w_bits`` (O, ceil(C*KH*KW/64)) uint64 as made by ``pack_weights_per_filter`` or
    ``bits.pack_signs(w.reshape(O, -1))``; ``alpha`` a float (BC: 1.0) or an (O,) array (BWN);
    ``kernel_size``, ``stride``, ``padding``, ``dilation``: int or (h, w) pair (zero padding).
    Returns float32 (N, O, OH, OW) equal to conv2d(x, alpha * sign(w)) up to float rounding, for
    finite x whose partial sums stay finite: the lookup table starts from -sum and adds 2 * x, so an
    Inf in x gives NaN and sums near the float32 limit may overflow (not checked: a pass over x).
    """
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{_OPS}: x must be a numpy array, got {type(x).__name__}")
    if x.dtype != np.float32:
        raise TypeError(f"{_OPS}: x must be float32, got {x.dtype}")
    if x.ndim != 4:
        raise ValueError(f"{_OPS}: x must be 4-D (N, C, H, W), got shape {x.shape}")
    if not isinstance(w_bits, np.ndarray):
        raise TypeError(f"{_OPS}: w_bits must be a numpy array, got {type(w_bits).__name__}")
    if w_bits.dtype != np.uint64:
        raise TypeError(f"{_OPS}: w_bits must be uint64 (from bits.pack_signs), got {w_bits.dtype}")
    KH, KW = as_pair(kernel_size, "kernel_size", _OPS, 1)
    (sh, sw), (ph, pw) = as_pair(stride, "stride", _OPS, 1), as_pair(padding, "padding", _OPS, 0)
    dh, dw = as_pair(dilation, "dilation", _OPS, 1)
    N, C, H, W = x.shape
    K = C * KH * KW
    words = (K + 63) // 64
    if w_bits.ndim != 2 or w_bits.shape[1] != words or w_bits.shape[0] < 1:
        raise ValueError(f"{_OPS}: w_bits must have shape (O, {words}) for C={C} and a {KH}x{KW} kernel, "
                         f"got {w_bits.shape}")
    O = w_bits.shape[0]
    if K > 0 and np.any(w_bits[:, -1] >> np.uint64(K % 64) if K % 64 else False):
        raise ValueError(f"{_OPS}: w_bits has nonzero tail bits past K={K}; pack with bits.pack_signs")
    a = np.asarray(alpha)
    if a.dtype.kind not in "fiu" or a.ndim > 1 or (a.ndim == 1 and a.shape[0] != O):
        raise ValueError(f"{_OPS}: alpha must be a float or an ({O},) float array, got {a.dtype} {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{_OPS}: alpha must be finite")
    alpha = np.ascontiguousarray(np.broadcast_to(a.astype(np.float32), (O,)))
    OH, OW = conv_output_size(H, W, KH, KW, (sh, sw), (ph, pw), (dh, dw))
    if OH < 1 or OW < 1:
        raise ValueError(f"{_OPS}: a {KH}x{KW} kernel with dilation {(dh, dw)} and padding {(ph, pw)} "
                         f"does not fit a {H}x{W} input")
    out = np.empty((N, O, OH, OW), dtype=np.float32)
    if N == 0:
        return out
    # zero padding done once, so the patch gather has no bounds tests
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw))) if ph or pw else np.ascontiguousarray(x)
    threads = get_num_threads()
    col = np.empty((threads, _KC, _LT), np.float32)
    table = np.empty((threads, _KC // 4, 16, _LT), np.float32)
    acc = np.empty((threads, O, _LT), np.float32)
    offs = np.empty((threads, _LT), np.int64)
    binary_weight_conv2d_jit(out, xp, w_bits, alpha, KH, KW, sh, sw, dh, dw,
                             _n_oblocks(N, OH * OW, O, threads), col, table, acc, offs)
    return out
