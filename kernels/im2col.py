"""im2col and col2im: the patch matrix that turns a 2-D convolution into one GEMM.

Layout (stable: other kernels build on it)::

    x    (N, C, H, W)                 NCHW, float32 or float64
    cols (C*KH*KW, N*OH*OW)           row    r = (c*KH + kh)*KW + kw
                                      column j = (n*OH + oh)*OW + ow
    cols[r, j] = x[n, c, oh*sh - ph + kh*dil_h, ow*sw - pw + kw*dil_w]   (0 where that falls in the padding)

    OH = (H + 2*ph - dil_h*(KH-1) - 1) // sh + 1,   OW likewise.

Why this layout: the batch is folded into the GEMM's long dimension, so a convolution is a single
``w.reshape(O, C*KH*KW) @ cols -> (O, N*OH*OW)`` (one big BLAS call instead of N small ones), the
weight gradient is ``dout_mat @ cols.T`` and the input gradient is ``col2im(w_mat.T @ dout_mat)``.
The innermost loop runs along ``ow`` on both sides, so for stride 1 it is a contiguous copy. The rows
of one group of a grouped convolution (channels ``g*C/G .. (g+1)*C/G``) are a contiguous block of rows.

``col2im`` is the adjoint of ``im2col``: ``<im2col(x), c> == <x, col2im(c)>``. It *adds* every column
entry back into the pixel it came from (a pixel read by several kernel taps gets the sum); entries that
came from padding are dropped. Both kernels run in parallel: im2col over rows (each row of ``cols`` is
written by one thread), col2im over (n, c) image planes (each plane is accumulated by one thread, so
no two threads ever add into the same pixel). For stride 1 with "same" padding (every stride-1 3x3
pad-1 conv of the CIFAR ResNets) im2col takes ``_im2col_same_loops`` instead, over (c, n) planes: each
plane is read once and written out as KH*KW shifted blocks (``benchmarks/bench_im2col.py`` times both).

Reference: the "unfold" formulation of convolution (Chellapilla et al., 2006; Caffe's im2col).
"""
import numpy as np
from numba import get_num_threads, njit, prange

from .checks import is_int

__all__ = ["conv_output_size", "im2col", "col2im", "im2col_ref", "col2im_ref", "as_pair"]


MAX_GEOMETRY = 2**31  # bound on every kernel size, stride, padding and dilation


def as_pair(value, name, op="im2col", minimum=0):
    """``value`` as a pair of ints (an int ``v`` means ``(v, v)``), each at least ``minimum``."""
    if is_int(value):
        pair = (int(value), int(value))
    else:
        try:
            items = tuple(value)
        except TypeError:
            raise TypeError(f"{op}: {name} must be an int or a pair of ints, got {value!r}") from None
        if len(items) != 2:
            raise ValueError(f"{op}: {name} must be an int or a pair of ints, got {value!r}")
        if not all(is_int(v) for v in items):  # floats and bools refused, not truncated
            raise TypeError(f"{op}: {name} must be an int or a pair of ints, got {value!r}")
        pair = (int(items[0]), int(items[1]))
    if min(pair) < minimum:
        raise ValueError(f"{op}: {name} must be >= {minimum}, got {value!r}")
    if max(pair) >= MAX_GEOMETRY:  # beyond it the kernels' int64 index arithmetic could overflow
        raise ValueError(f"{op}: {name} must be < 2**31, got {value!r}")
    return pair


def conv_output_size(H, W, KH, KW, stride=1, padding=0, dilation=1):
    """(OH, OW) of a convolution or pooling window sliding over an H x W plane."""
    (sh, sw), (ph, pw), (dil_h, dil_w) = as_pair(stride, "stride"), as_pair(padding, "padding"), as_pair(dilation, "dilation")
    return (H + 2 * ph - dil_h * (KH - 1) - 1) // sh + 1, (W + 2 * pw - dil_w * (KW - 1) - 1) // sw + 1


# --- references: NumPy slicing of the zero-padded input -----------------------------------------
def im2col_ref(x, KH, KW, stride=1, padding=0, dilation=1):
    """NumPy oracle: each (kh, kw) tap is a strided slice of the zero-padded input."""
    (sh, sw), (ph, pw), (dil_h, dil_w) = as_pair(stride, "stride"), as_pair(padding, "padding"), as_pair(dilation, "dilation")
    N, C, H, W = x.shape
    OH, OW = conv_output_size(H, W, KH, KW, stride, padding, dilation)
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    taps = np.empty((C, KH, KW, N, OH, OW), dtype=x.dtype)
    for kh in range(KH):
        for kw in range(KW):
            patch = xp[:, :, kh * dil_h: kh * dil_h + sh * (OH - 1) + 1: sh, kw * dil_w: kw * dil_w + sw * (OW - 1) + 1: sw]
            taps[:, kh, kw] = patch.transpose(1, 0, 2, 3)  # (N, C, OH, OW) -> (C, N, OH, OW)
    return taps.reshape(C * KH * KW, N * OH * OW)


def col2im_ref(cols, x_shape, KH, KW, stride=1, padding=0, dilation=1):
    """NumPy oracle of the adjoint: add each tap's slice back into the zero-padded image, then crop."""
    (sh, sw), (ph, pw), (dil_h, dil_w) = as_pair(stride, "stride"), as_pair(padding, "padding"), as_pair(dilation, "dilation")
    N, C, H, W = x_shape
    OH, OW = conv_output_size(H, W, KH, KW, stride, padding, dilation)
    taps = cols.reshape(C, KH, KW, N, OH, OW)
    xp = np.zeros((N, C, H + 2 * ph, W + 2 * pw), dtype=cols.dtype)
    for kh in range(KH):
        for kw in range(KW):
            xp[:, :, kh * dil_h: kh * dil_h + sh * (OH - 1) + 1: sh,
               kw * dil_w: kw * dil_w + sw * (OW - 1) + 1: sw] += taps[:, kh, kw].transpose(1, 0, 2, 3)
    return xp[:, :, ph: ph + H, pw: pw + W].copy()


# --- loops --------------------------------------------------------------------------------------
def valid_range(OW, W, sw, off):
    """[lo, hi): the ow for which iw = ow*sw + off lies inside 0..W-1 (empty when lo >= hi)."""
    lo = 0
    while lo < OW and lo * sw + off < 0:
        lo += 1
    hi = OW
    while hi > lo and (hi - 1) * sw + off >= W:
        hi -= 1
    return lo, hi


valid_range_jit = njit(cache=True, inline="always")(valid_range)


def _copy_plane(flat, plane):
    """flat[i*W + j] = plane[i, j]: an (H, W) image plane into a flat run of H*W elements."""
    h, w = plane.shape
    for i in range(h):
        src = plane[i]
        row = flat[i * w:i * w + w]  # slices: 0-based indices vectorise (no wraparound test)
        for j in range(w):
            row[j] = src[j]


# inlined into the cached im2col and sparse_direct kernels: after editing it, clear __pycache__ (Numba's
# cache does not follow inlined functions across modules)
copy_plane_jit = njit(cache=True, inline="always")(_copy_plane)


def _im2col_loops(cols, x, KH, KW, sh, sw, ph, pw, dil_h, dil_w, OH, OW):
    N, C, H, W = x.shape
    P = OH * OW
    for r in prange(C * KH * KW):
        c = r // (KH * KW)
        kh = (r // KW) % KH
        kw = r % KW
        off = kw * dil_w - pw
        lo, hi = valid_range_jit(OW, W, sw, off)
        for n in range(N):
            for oh in range(OH):
                base = n * P + oh * OW
                ih = oh * sh - ph + kh * dil_h
                if ih < 0 or ih >= H:
                    for ow in range(OW):
                        cols[r, base + ow] = 0
                    continue
                for ow in range(lo):
                    cols[r, base + ow] = 0
                for ow in range(lo, hi):
                    cols[r, base + ow] = x[n, c, ih, ow * sw + off]
                for ow in range(hi, OW):
                    cols[r, base + ow] = 0


def same_padding_tables(H, W, KW, ph, pw):
    """For a stride-1 "same" convolution on H x W planes, flattened (t = i*W + j): the guard G
    (= ph*W + pw, the zeros on each side of a plane that stand for the rows above and below) and
    col_ok (KW, H*W) bool, True where tap column kw of output t stays inside its row (0 <= j + kw -
    pw < W). Shared by ``_im2col_same_loops`` and ``sparse_direct``."""
    j = np.arange(H * W) % W
    col_ok = np.array([(j + kw - pw >= 0) & (j + kw - pw < W) for kw in range(KW)]).reshape(KW, H * W)
    return ph * W + pw, col_ok


def same_padding_taps(rows, KH, KW, W):
    """For patch rows r = (c*KH + kh)*KW + kw of a stride-1 "same" convolution on planes W wide:
    (c, tap = kh*KW + kw, shift = (kh - ph)*W + (kw - pw), the flat offset that tap reads at), int64
    arrays. Shared by ``sparse_direct`` (per kept weight) and ``sparse_implicit`` (per patch row)."""
    r = np.asarray(rows, dtype=np.int64)
    tap = r % (KH * KW)
    return r // (KH * KW), tap, (tap // KW - (KH - 1) // 2) * W + (tap % KW - (KW - 1) // 2)


def _im2col_same_loops(cols, x, KH, KW, ph, pw, col_ok, bufs):
    """im2col for stride 1, dilation 1 and "same" padding (OH = H, OW = W: 2*ph = KH - 1, 2*pw = KW - 1).

    Then the block of row r = (c, kh, kw) for image n, cols[r, n*P : (n+1)*P] (P = H*W), is the plane
    x[n, c] read at a constant flat offset (kh - ph)*W + (kw - pw): each worker copies the plane once
    into the middle of its zero-guarded buffer (G = ph*W + pw zeros on each side stand for the rows
    above and below) and writes all KH*KW blocks from it; the taps that would wrap around a row edge
    are selected to 0 by ``col_ok[kw, t]`` (a select, not a multiply: an inf in x must not become NaN).
    The generic loops run 8-element rows on 8x8 maps, too short for LLVM's 16-wide vector body, and
    read every pixel KH*KW times; here every block is one vectorised pass of P elements: 2.8-3.9x
    faster into a reused buffer on the CIFAR ResNet-20 and ResNet-18 layers at batch 64-256, 2.2-3.8x
    when the call allocates its result (two runs of ``benchmarks/bench_im2col.py``)."""
    N, C, H, W = x.shape
    P = H * W
    G = ph * W + pw
    n_workers = bufs.shape[0]
    n_tasks = C * N
    for wk in prange(n_workers):
        buf = bufs[wk]
        zero = buf[0]  # 0 in x's dtype: read before any plane is copied in (with G = 0 it is a plane element)
        plane = buf[G:G + P]
        for task in range(wk * n_tasks // n_workers, (wk + 1) * n_tasks // n_workers):
            c = task // N
            n = task % N
            copy_plane_jit(plane, x[n, c])
            for kh in range(KH):
                for kw in range(KW):
                    start = G + (kh - ph) * W + (kw - pw)
                    seg = buf[start:start + P]
                    ok = col_ok[kw]
                    dst = cols[(c * KH + kh) * KW + kw, n * P:n * P + P]
                    for t in range(P):
                        dst[t] = seg[t] if ok[t] else zero


def _col2im_loops(x, cols, KH, KW, sh, sw, ph, pw, dil_h, dil_w, OH, OW):
    N, C, H, W = x.shape
    P = OH * OW
    for t in prange(N * C):
        n = t // C
        c = t % C
        for ih in range(H):
            for iw in range(W):
                x[n, c, ih, iw] = 0
        for kh in range(KH):
            for kw in range(KW):
                r = (c * KH + kh) * KW + kw
                off = kw * dil_w - pw
                lo, hi = valid_range_jit(OW, W, sw, off)
                for oh in range(OH):
                    ih = oh * sh - ph + kh * dil_h
                    if ih < 0 or ih >= H:
                        continue
                    base = n * P + oh * OW
                    for ow in range(lo, hi):
                        x[n, c, ih, ow * sw + off] += cols[r, base + ow]


im2col_jit = njit(parallel=True, cache=True)(_im2col_loops)
im2col_same_jit = njit(parallel=True, cache=True)(_im2col_same_loops)
col2im_jit = njit(parallel=True, cache=True)(_col2im_loops)


# --- wrappers -----------------------------------------------------------------------------------
def _check_float(name, arr, op):
    if not isinstance(arr, np.ndarray):
        raise TypeError(f"{op}: {name} must be a NumPy array, got {type(arr).__name__}")
    if arr.dtype not in (np.float32, np.float64):
        raise TypeError(f"{op}: {name} must be float32 or float64, got {arr.dtype} (shape {arr.shape})")


def _geometry(op, H, W, KH, KW, stride, padding, dilation):
    if int(KH) != KH or int(KW) != KW or KH < 1 or KW < 1:
        raise ValueError(f"{op}: kernel size must be positive ints, got ({KH}, {KW})")
    s = as_pair(stride, "stride", op, 1)
    p = as_pair(padding, "padding", op, 0)
    d = as_pair(dilation, "dilation", op, 1)
    OH, OW = conv_output_size(H, W, KH, KW, s, p, d)
    if OH < 1 or OW < 1:
        raise ValueError(f"{op}: a {KH}x{KW} kernel with dilation {d} and padding {p} does not fit a "
                         f"{H}x{W} input (output would be {OH}x{OW})")
    return s, p, d, OH, OW


def im2col(x, KH, KW, stride=1, padding=0, dilation=1, out=None):
    """Patch matrix of ``x`` (N, C, H, W): returns cols (C*KH*KW, N*OH*OW), see the module docstring.

    ``stride``, ``padding``, ``dilation``: int or (h, w) pair. ``out``, if given, is a C-contiguous
    array of that shape and dtype to fill (lets callers reuse a buffer)."""
    _check_float("x", x, "im2col")
    if x.ndim != 4:
        raise ValueError(f"im2col: x must be 4-D (N, C, H, W), got shape {x.shape}")
    N, C, H, W = x.shape
    (sh, sw), (ph, pw), (dil_h, dil_w), OH, OW = _geometry("im2col", H, W, KH, KW, stride, padding, dilation)
    shape = (C * KH * KW, N * OH * OW)
    if out is None:
        out = np.empty(shape, dtype=x.dtype)
    elif out.shape != shape or out.dtype != x.dtype or not out.flags.c_contiguous:
        raise ValueError(f"im2col: out must be C-contiguous {x.dtype} of shape {shape}, got {out.dtype} {out.shape}")
    x = np.ascontiguousarray(x)
    if (sh, sw, dil_h, dil_w) == (1, 1, 1, 1) and (OH, OW) == (H, W) and out.size:
        G, col_ok = same_padding_tables(H, W, int(KW), ph, pw)
        bufs = np.zeros((get_num_threads(), H * W + 2 * G), dtype=x.dtype)
        im2col_same_jit(out, x, int(KH), int(KW), ph, pw, col_ok, bufs)
    else:
        im2col_jit(out, x, int(KH), int(KW), sh, sw, ph, pw, dil_h, dil_w, OH, OW)
    return out


def col2im(cols, x_shape, KH, KW, stride=1, padding=0, dilation=1):
    """Adjoint of ``im2col``: cols (C*KH*KW, N*OH*OW) -> x (N, C, H, W), summing overlapping taps."""
    _check_float("cols", cols, "col2im")
    if len(x_shape) != 4:
        raise ValueError(f"col2im: x_shape must be (N, C, H, W), got {x_shape}")
    N, C, H, W = (int(v) for v in x_shape)
    (sh, sw), (ph, pw), (dil_h, dil_w), OH, OW = _geometry("col2im", H, W, KH, KW, stride, padding, dilation)
    if cols.shape != (C * KH * KW, N * OH * OW):
        raise ValueError(f"col2im: cols has shape {cols.shape} but x_shape {tuple(x_shape)} with a {KH}x{KW} "
                         f"kernel needs {(C * KH * KW, N * OH * OW)}")
    x = np.empty((N, C, H, W), dtype=cols.dtype)
    col2im_jit(x, np.ascontiguousarray(cols), int(KH), int(KW), sh, sw, ph, pw, dil_h, dil_w, OH, OW)
    return x
