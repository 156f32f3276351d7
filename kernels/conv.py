"""Float 2-D convolution (NCHW input, OIHW weight, no bias) and its two backward passes.

    x (N, C, H, W), w (O, C/G, KH, KW) -> out (N, O, OH, OW), G = groups, Og = O/G, Cg = C/G
    out[n, o, oh, ow] = sum_{ci, kh, kw} w[o, ci, kh, kw] * x[n, g*Cg + ci, oh*sh - ph + kh*dh, ow*sw - pw + kw*dw]
                        (g = o // Og; taps in the zero padding contribute 0)
    dx = the adjoint of x -> out for fixed w;   dw[o, ci, kh, kw] = sum_{n, oh, ow} dout[n, o, oh, ow] * x[...]

Four algorithms, chosen *deterministically from the shapes and dtype* by ``conv2d_algorithm``
(never by timing, so runs are reproducible):

- ``"matmul1x1"``: 1x1 kernel, no padding, groups 1. No im2col at all: the input (strided when the
  stride is > 1) is already the patch matrix, so ``out[n] = w (O, C) @ x[n] (C, H*W)``.
- ``"direct"``: C/G == 1 (depthwise and the like). Each output reads one input channel, so a GEMM's
  reduction would be only KH*KW long; plain parallel loops over (n, o) planes are faster.
- ``"tiles"``: float32, groups 1, OW a multiple of 8, any channel counts (every 3x3 conv of the CIFAR
  ResNets, thinned or not): implicit GEMM on register tiles, no patch matrix
  (``tinycomp_kernels.conv_tiles``). About 2-3x OpenBLAS on im2col's GEMM at 16-64 channels, where
  BLAS's M is too small to reach its peak; a channel count the tiles do not divide (11, 22, 45) costs
  what the next multiple of the tile height costs.
- ``"im2col"``: everything else. ``cols = im2col(x)`` (C*KH*KW, N*OH*OW) with the batch folded into
  the GEMM's long side, one BLAS call per group ``w_g (Og, Cg*KH*KW) @ cols_g -> (O, N*OH*OW)``,
  then a parallel axis swap to (N, O, OH, OW). Backward: ``dout_mat = swap(dout)`` (O, N*OH*OW),
  ``dw_g = dout_mat_g @ cols_g.T``, ``dx = col2im(w_g.T @ dout_mat_g)``.

The two gradients of a "tiles" or "im2col" conv each take the tiles path whenever it fits on its own
(input gradient: float32, groups 1, W a multiple of the stride and W/stride of 8; weight gradient:
with more than 8 input and at least 8 output channels and a dw of at most 4 MiB the channels-last
tiles of ``tinycomp_kernels.conv_dw_nhwc`` (any OW; with the AVX2 tiles only at OW = 8), else
``conv_tiles``' dw_tile for float32, groups 1, OW in 8 (not with the AVX-512 tiles), 16, 32 and any
channel counts) and im2col + GEMM otherwise.

Everything runs in the dtype of the input (float32 or float64; both operands must agree).
Reference: ``conv2d_ref`` below is an independent NumPy formulation (a sum of shifted slices times
weights via einsum); the tests also check against a direct-loop reference.
"""
import numpy as np
from numba import njit, prange

from .checks import is_int
from .conv_dw_nhwc import conv2d_nhwc_backward_weight, nhwc_backward_weight_fit
from .conv_tiles import (TilesPlan, conv2d_tiles, conv2d_tiles_backward_input, conv2d_tiles_backward_weight,
                         tiles_backward_input_fit, tiles_backward_weight_fit, tiles_fit)
from .fastmath import SUM_REASSOC
from .im2col import as_pair, col2im, conv_output_size, im2col, valid_range_jit

__all__ = ["conv2d_forward", "Conv2dPlan", "conv2d_backward_input", "conv2d_backward_weight", "conv2d_backward",
           "conv2d_algorithm", "conv2d_ref", "ALGORITHMS"]

ALGORITHMS = ("matmul1x1", "direct", "tiles", "im2col")


# --- reference ----------------------------------------------------------------------------------
def conv2d_ref(x, w, stride=1, padding=0, dilation=1, groups=1):
    """NumPy oracle: for each tap (kh, kw), a strided slice of the padded input, contracted by einsum."""
    (sh, sw), (ph, pw), (dh, dw) = as_pair(stride, "stride"), as_pair(padding, "padding"), as_pair(dilation, "dilation")
    N, C, H, W = x.shape
    O, Cg, KH, KW = w.shape
    OH, OW = conv_output_size(H, W, KH, KW, stride, padding, dilation)
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    Og = O // groups
    out = np.zeros((N, O, OH, OW), dtype=np.result_type(x, w))
    for g in range(groups):
        for kh in range(KH):
            for kw in range(KW):
                tap = xp[:, g * Cg:(g + 1) * Cg, kh * dh: kh * dh + sh * (OH - 1) + 1: sh,
                         kw * dw: kw * dw + sw * (OW - 1) + 1: sw]
                out[:, g * Og:(g + 1) * Og] += np.einsum("nchw,oc->nohw", tap, w[g * Og:(g + 1) * Og, :, kh, kw])
    return out


# --- loops --------------------------------------------------------------------------------------
def _swap01_loops(out, a):
    """out[j, i, :] = a[i, j, :] for 3-D arrays: (O, N, P) <-> (N, O, P) without a strided NumPy copy."""
    I, J, P = a.shape
    for t in prange(I * J):
        i = t // J
        j = t % J
        for p in range(P):
            out[j, i, p] = a[i, j, p]


def _conv2d_direct_loops(out, x, w, sh, sw, ph, pw, dil_h, dil_w, groups):
    N, C, H, W = x.shape
    O, Cg, KH, KW = w.shape
    OH, OW = out.shape[2], out.shape[3]
    Og = O // groups
    for t in prange(N * O):
        n = t // O
        o = t % O
        g = o // Og
        for oh in range(OH):
            for ow in range(OW):
                out[n, o, oh, ow] = 0
        for ci in range(Cg):
            c = g * Cg + ci
            for kh in range(KH):
                for kw in range(KW):
                    wv = w[o, ci, kh, kw]
                    off = kw * dil_w - pw
                    lo, hi = valid_range_jit(OW, W, sw, off)
                    for oh in range(OH):
                        ih = oh * sh - ph + kh * dil_h
                        if ih < 0 or ih >= H:
                            continue
                        for ow in range(lo, hi):
                            out[n, o, oh, ow] += wv * x[n, c, ih, ow * sw + off]


def _conv2d_direct_backward_input_loops(dx, dout, w, sh, sw, ph, pw, dil_h, dil_w, groups):
    N, C, H, W = dx.shape
    O, Cg, KH, KW = w.shape
    OH, OW = dout.shape[2], dout.shape[3]
    Og = O // groups
    for t in prange(N * C):  # one thread owns one dx plane: no two threads add into one pixel
        n = t // C
        c = t % C
        g = c // Cg
        ci = c % Cg
        for ih in range(H):
            for iw in range(W):
                dx[n, c, ih, iw] = 0
        for oo in range(Og):
            o = g * Og + oo
            for kh in range(KH):
                for kw in range(KW):
                    wv = w[o, ci, kh, kw]
                    off = kw * dil_w - pw
                    lo, hi = valid_range_jit(OW, W, sw, off)
                    for oh in range(OH):
                        ih = oh * sh - ph + kh * dil_h
                        if ih < 0 or ih >= H:
                            continue
                        for ow in range(lo, hi):
                            dx[n, c, ih, ow * sw + off] += wv * dout[n, o, oh, ow]


def _conv2d_direct_backward_weight_loops(dw, dout, x, sh, sw, ph, pw, dil_h, dil_w, groups):
    N, C, H, W = x.shape
    O, Cg, KH, KW = dw.shape
    OH, OW = dout.shape[2], dout.shape[3]
    Og = O // groups
    for t in prange(O * Cg * KH * KW):
        o = t // (Cg * KH * KW)
        ci = (t // (KH * KW)) % Cg
        kh = (t // KW) % KH
        kw = t % KW
        c = (o // Og) * Cg + ci
        off = kw * dil_w - pw
        lo, hi = valid_range_jit(OW, W, sw, off)
        acc = 0.0
        for n in range(N):
            for oh in range(OH):
                ih = oh * sh - ph + kh * dil_h
                if ih < 0 or ih >= H:
                    continue
                for ow in range(lo, hi):
                    acc += dout[n, o, oh, ow] * x[n, c, ih, ow * sw + off]
        dw[o, ci, kh, kw] = acc


swap01_jit = njit(parallel=True, cache=True)(_swap01_loops)
# SUM_REASSOC: each output is a sum over taps and channels, vectorised only when re-associated
conv2d_direct_jit = njit(parallel=True, cache=True, fastmath=SUM_REASSOC)(_conv2d_direct_loops)
conv2d_direct_backward_input_jit = njit(parallel=True, cache=True, fastmath=SUM_REASSOC)(
    _conv2d_direct_backward_input_loops)
conv2d_direct_backward_weight_jit = njit(parallel=True, cache=True, fastmath=SUM_REASSOC)(
    _conv2d_direct_backward_weight_loops)


# --- wrappers -----------------------------------------------------------------------------------
def _swap01(a):
    """(I, J, P) -> contiguous (J, I, P)."""
    out = np.empty((a.shape[1], a.shape[0], a.shape[2]), dtype=a.dtype)
    swap01_jit(out, np.ascontiguousarray(a))
    return out


def conv2d_algorithm(x_shape, w_shape, stride=1, padding=0, dilation=1, groups=1, dtype=np.float32):
    """The algorithm used for these shapes and dtype: one of ALGORITHMS (see the module docstring)."""
    O, Cg, KH, KW = w_shape
    if KH == 1 and KW == 1 and as_pair(padding, "padding") == (0, 0) and groups == 1:
        return "matmul1x1"
    if Cg == 1:
        return "direct"
    if tiles_fit(x_shape, w_shape, stride, padding, dilation, groups, dtype):
        return "tiles"
    return "im2col"


def _validate(op, x_shape, w_shape, stride, padding, dilation, groups, x_dtype, w_dtype):
    for name, dt in (("input", x_dtype), ("weight", w_dtype)):
        if dt not in (np.float32, np.float64):
            raise TypeError(f"{op}: {name} must be float32 or float64, got {dt}")
    if x_dtype != w_dtype:
        raise TypeError(f"{op}: input is {x_dtype} but weight is {w_dtype}; input {tuple(x_shape)}, "
                        f"weight {tuple(w_shape)}")
    if len(x_shape) != 4 or len(w_shape) != 4:
        raise ValueError(f"{op}: input must be (N, C, H, W) and weight (O, C/groups, KH, KW); "
                         f"got input {tuple(x_shape)}, weight {tuple(w_shape)}")
    if not is_int(groups) or groups < 1:
        raise ValueError(f"{op}: groups must be a positive int, got {groups!r}")
    N, C, H, W = x_shape
    O, Cg, KH, KW = w_shape
    if C != Cg * groups or O % groups or min(O, Cg, KH, KW) < 1:
        raise ValueError(f"{op}: input has {C} channels but weight expects {Cg * groups} (groups={groups}, "
                         f"out channels {O} must be a multiple of groups); input {tuple(x_shape)}, "
                         f"weight {tuple(w_shape)}")
    s = as_pair(stride, "stride", op, 1)
    p = as_pair(padding, "padding", op, 0)
    d = as_pair(dilation, "dilation", op, 1)
    OH, OW = conv_output_size(H, W, KH, KW, s, p, d)
    if OH < 1 or OW < 1:
        raise ValueError(f"{op}: kernel {KH}x{KW} (dilation {d}, padding {p}) is larger than the input "
                         f"{H}x{W}; input {tuple(x_shape)}, weight {tuple(w_shape)}")
    return s, p, d, OH, OW


def _pick(algorithm, x_shape, w_shape, stride, padding, dilation, groups, op, dtype):
    if algorithm is None:
        return conv2d_algorithm(x_shape, w_shape, stride, padding, dilation, groups, dtype)
    if algorithm not in ALGORITHMS:
        raise ValueError(f"{op}: algorithm must be one of {ALGORITHMS}, got {algorithm!r}")
    if algorithm == "matmul1x1" and conv2d_algorithm(x_shape, w_shape, stride, padding, dilation, groups) != algorithm:
        raise ValueError(f"{op}: matmul1x1 needs a 1x1 kernel, padding 0 and groups 1; weight {tuple(w_shape)}")
    if algorithm == "tiles" and not tiles_fit(x_shape, w_shape, stride, padding, dilation, groups, dtype):
        raise ValueError(f"{op}: tiles needs float32, groups 1 and an output width that is a multiple of 8; "
                         f"input {tuple(x_shape)}, weight {tuple(w_shape)}")
    return algorithm


def conv2d_forward(x, w, stride=1, padding=0, dilation=1, groups=1, algorithm=None):
    """out (N, O, OH, OW) = conv of x (N, C, H, W) with w (O, C/groups, KH, KW); no bias.
    ``algorithm`` (None = chosen from the shapes) forces one of ALGORITHMS, for tests and benchmarks."""
    s, p, d, OH, OW = _validate("conv2d_forward", x.shape, w.shape, stride, padding, dilation, groups, x.dtype, w.dtype)
    N, C, H, W = x.shape
    O, Cg, KH, KW = w.shape
    algo = _pick(algorithm, x.shape, w.shape, s, p, d, groups, "conv2d_forward", x.dtype)
    if algo == "matmul1x1":
        xs = x[:, :, ::s[0], ::s[1]] if s != (1, 1) else x
        xs = np.ascontiguousarray(xs).reshape(N, C, OH * OW)             # (N, C, P)
        return np.matmul(w.reshape(O, C), xs).reshape(N, O, OH, OW)      # (N, O, P) -> NCHW
    if algo == "direct":
        out = np.empty((N, O, OH, OW), dtype=x.dtype)
        conv2d_direct_jit(out, np.ascontiguousarray(x), np.ascontiguousarray(w), *s, *p, *d, groups)
        return out
    if algo == "tiles":
        return conv2d_tiles(x, w, s, p, d, OH, OW)
    cols = im2col(x, KH, KW, s, p, d)                                   # (C*KH*KW, N*P)
    wm = np.ascontiguousarray(w).reshape(groups, O // groups, Cg * KH * KW)  # (G, Og, Cg*KH*KW)
    if groups == 1:
        out_mat = np.matmul(wm[0], cols)                                 # (O, N*P)
    else:
        out_mat = np.empty((O, N * OH * OW), dtype=x.dtype)
        Og, Kg = O // groups, Cg * KH * KW
        for g in range(groups):
            np.matmul(wm[g], cols[g * Kg:(g + 1) * Kg], out=out_mat[g * Og:(g + 1) * Og])
    return _swap01(out_mat.reshape(O, N, OH * OW)).reshape(N, O, OH, OW)  # (O, N, P) -> (N, O, OH, OW)


class Conv2dPlan:
    """``conv2d_forward`` for fixed weights and input size (H, W): the checks, the algorithm and, on
    the tiles, the weight rows and tap offsets done once (``TilesPlan``), for a layer run many times
    (an inference runtime). ``plan(x)`` checks only x's shape and dtype and gives the bits
    conv2d_forward gives."""

    def __init__(self, w, input_hw, stride=1, padding=0, dilation=1, groups=1):
        if not isinstance(w, np.ndarray):
            raise TypeError(f"Conv2dPlan: w must be a numpy array, got {type(w).__name__}")
        x_shape = (1, w.shape[1] * groups if w.ndim == 4 else 0) + tuple(int(v) for v in input_hw)
        self.s, self.p, self.d, _, _ = _validate("Conv2dPlan", x_shape, w.shape, stride, padding, dilation, groups,
                                                 w.dtype, w.dtype)
        self.w, self.groups, self.x_shape, self.dtype = w, groups, x_shape[1:], w.dtype
        self.algorithm = conv2d_algorithm(x_shape, w.shape, self.s, self.p, self.d, groups, w.dtype)
        self.tiles = TilesPlan(w, x_shape[2:], self.s, self.p, self.d) if self.algorithm == "tiles" else None

    def __call__(self, x):
        if not isinstance(x, np.ndarray) or x.ndim != 4 or x.shape[1:] != self.x_shape or x.dtype != self.dtype \
                or x.shape[0] < 1:
            raise ValueError(f"Conv2dPlan: x must be {self.dtype} (N, {', '.join(map(str, self.x_shape))}) for this "
                             f"plan, got {getattr(x, 'dtype', type(x).__name__)} {getattr(x, 'shape', '')}")
        if self.tiles is not None:
            return self.tiles(x)
        return conv2d_forward(x, self.w, self.s, self.p, self.d, self.groups, algorithm=self.algorithm)


def conv2d_backward(dout, x, w, stride=1, padding=0, dilation=1, groups=1, need_input=True, need_weight=True,
                    algorithm=None):
    """(dx or None, dw or None) of conv2d_forward for upstream dout (N, O, OH, OW); shares the
    rearranged dout between the two when both are needed. A forced ``algorithm="im2col"`` keeps both
    gradients on im2col + GEMM (chosen, each takes the tiles where they fit)."""
    s, p, d, OH, OW = _validate("conv2d_backward", x.shape, w.shape, stride, padding, dilation, groups, x.dtype, w.dtype)
    N, C, H, W = x.shape
    O, Cg, KH, KW = w.shape
    if dout.shape != (N, O, OH, OW):
        raise ValueError(f"conv2d_backward: dout has shape {dout.shape}, expected {(N, O, OH, OW)} for input "
                         f"{x.shape}, weight {w.shape}")
    dout = np.ascontiguousarray(dout, dtype=x.dtype)
    algo = _pick(algorithm, x.shape, w.shape, s, p, d, groups, "conv2d_backward", x.dtype)
    dx = dw = None
    if algo == "direct":
        if need_input:
            dx = np.empty(x.shape, dtype=x.dtype)
            conv2d_direct_backward_input_jit(dx, dout, np.ascontiguousarray(w), *s, *p, *d, groups)
        if need_weight:
            dw = np.empty(w.shape, dtype=x.dtype)
            conv2d_direct_backward_weight_jit(dw, dout, np.ascontiguousarray(x), *s, *p, *d, groups)
        return dx, dw
    if algo == "matmul1x1":
        if need_input:
            dxs = np.matmul(w.reshape(O, C).T, dout.reshape(N, O, OH * OW))     # (N, C, P)
            if s == (1, 1):
                dx = dxs.reshape(N, C, H, W)                                 # P = H*W at stride 1
            else:
                dx = np.zeros(x.shape, dtype=x.dtype)
                dx[:, :, ::s[0], ::s[1]] = dxs.reshape(N, C, OH, OW)  # the pixels a strided 1x1 conv read
        if need_weight:
            dout_mat = _swap01(dout.reshape(N, O, OH * OW)).reshape(O, N * OH * OW)  # (O, N*P)
            xs = np.ascontiguousarray(x[:, :, ::s[0], ::s[1]]).reshape(N, C, OH * OW)      # (N, C, P)
            dw = np.matmul(dout_mat, _swap01(xs).reshape(C, N * OH * OW).T).reshape(w.shape)  # (O, C)
        return dx, dw
    Og, Kg = O // groups, Cg * KH * KW
    tiles_ok = algo == "tiles" or algorithm is None
    if need_input and tiles_ok and tiles_backward_input_fit(x.shape, s, groups, x.dtype):
        dx = conv2d_tiles_backward_input(dout, w, x.shape, s, p, d)
        need_input = False
    if need_weight and tiles_ok and nhwc_backward_weight_fit(x.shape, w.shape, OW, groups, x.dtype):
        dw = conv2d_nhwc_backward_weight(dout, x, w.shape, s, p, d)
        need_weight = False
    if need_weight and tiles_ok and tiles_backward_weight_fit(OW, groups, x.dtype):
        dw = conv2d_tiles_backward_weight(dout, x, w.shape, s, p, d)
        need_weight = False
    if not need_weight and not need_input:
        return dx, dw
    dout_mat = _swap01(dout.reshape(N, O, OH * OW)).reshape(O, N * OH * OW)  # (O, N*P)
    if need_input:
        wm = np.ascontiguousarray(w).reshape(groups, Og, Kg)            # (G, Og, Cg*KH*KW)
        dcols = np.empty((C * KH * KW, N * OH * OW), dtype=x.dtype)     # (C*KH*KW, N*P)
        for g in range(groups):
            np.matmul(wm[g].T, dout_mat[g * Og:(g + 1) * Og], out=dcols[g * Kg:(g + 1) * Kg])
        dx = col2im(dcols, x.shape, KH, KW, s, p, d)
        del dcols
    if need_weight:
        cols = im2col(x, KH, KW, s, p, d)                               # (C*KH*KW, N*P), recomputed
        dwm = np.empty((groups, Og, Kg), dtype=x.dtype)
        for g in range(groups):
            np.matmul(dout_mat[g * Og:(g + 1) * Og], cols[g * Kg:(g + 1) * Kg].T, out=dwm[g])
        dw = dwm.reshape(w.shape)                                       # (O, Cg, KH, KW)
    return dx, dw


def conv2d_backward_input(dout, w, x_shape, stride=1, padding=0, dilation=1, groups=1, algorithm=None):
    """dx (N, C, H, W) of conv2d_forward for upstream dout (N, O, OH, OW)."""
    x_stub = np.lib.stride_tricks.as_strided(np.zeros((), w.dtype), shape=tuple(x_shape), strides=(0,) * len(x_shape))
    return conv2d_backward(dout, x_stub, w, stride, padding, dilation, groups, True, False, algorithm)[0]


def conv2d_backward_weight(dout, x, w_shape, stride=1, padding=0, dilation=1, groups=1, algorithm=None):
    """dw (O, C/groups, KH, KW) of conv2d_forward for upstream dout (N, O, OH, OW)."""
    w_stub = np.lib.stride_tricks.as_strided(np.zeros((), x.dtype), shape=tuple(w_shape), strides=(0,) * len(w_shape))
    return conv2d_backward(dout, x, w_stub, stride, padding, dilation, groups, False, True, algorithm)[1]
