"""2-D max and average pooling over NCHW planes, forward and backward.

    x (N, C, H, W) -> out (N, C, OH, OW),  OH = (H + 2*ph - KH) // sh + 1  (PyTorch, ceil_mode=False)
    window(oh, ow) = rows oh*sh - ph .. oh*sh - ph + KH - 1, columns likewise, clipped to the image

max:  out = max over the window's in-image pixels (padding never wins, as if it were -inf);
      argmax (N, C, OH, OW) int64 = flat index ih*W + iw of the winner in its plane (the first one on
      ties, scanning rows then columns), as PyTorch's return_indices.
      dx[n, c, argmax[n, c, oh, ow]] += dout[n, c, oh, ow]   (overlapping windows add up).
avg:  out = sum over the window's in-image pixels / divisor, divisor = KH*KW when count_include_pad
      (PyTorch's default: padded zeros count) else the number of in-image pixels.
      dx[n, c, ih, iw] = sum over windows containing (ih, iw) of dout / divisor.

PyTorch requires padding <= kernel_size / 2, so every window holds at least one image pixel; the
wrappers check the same. Parallel over (n, c) planes: each plane is owned by one thread, so the
scattering backward passes need no atomics. Reference: the NumPy formulations ``*_ref`` below, which
stack the KH*KW strided slices of the padded input.
"""
import numpy as np
from numba import njit, prange

from .im2col import as_pair

__all__ = ["max_pool2d_forward", "max_pool2d_backward", "avg_pool2d_forward", "avg_pool2d_backward",
           "max_pool2d_ref", "avg_pool2d_ref", "pool_output_size"]


def pool_output_size(H, W, kernel, stride, padding):
    (KH, KW), (sh, sw), (ph, pw) = kernel, stride, padding
    return (H + 2 * ph - KH) // sh + 1, (W + 2 * pw - KW) // sw + 1


# --- references ---------------------------------------------------------------------------------
def _taps_ref(x, kernel, stride, padding, fill):
    """(KH*KW, N, C, OH, OW): every window tap as a strided slice of the input padded with ``fill``."""
    (KH, KW), (sh, sw), (ph, pw) = kernel, stride, padding
    OH, OW = pool_output_size(x.shape[2], x.shape[3], kernel, stride, padding)
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=fill)
    return np.stack([xp[:, :, kh: kh + sh * (OH - 1) + 1: sh, kw: kw + sw * (OW - 1) + 1: sw]
                     for kh in range(KH) for kw in range(KW)])


def max_pool2d_ref(x, kernel, stride, padding):
    """NumPy oracle: (out, argmax) with argmax the flat in-plane index of the first maximum."""
    (KH, KW), (sh, sw), (ph, pw) = kernel, stride, padding
    W = x.shape[3]
    taps = _taps_ref(x, kernel, stride, padding, -np.inf)
    best = np.argmax(taps, axis=0)                                # (N, C, OH, OW): first max wins
    OH, OW = best.shape[2:]
    kh, kw = best // KW, best % KW
    ih = np.arange(OH)[:, None] * sh - ph + kh
    iw = np.arange(OW)[None, :] * sw - pw + kw
    return np.take_along_axis(taps, best[None], 0)[0], (ih * W + iw).astype(np.int64)


def avg_pool2d_ref(x, kernel, stride, padding, count_include_pad=True):
    taps = _taps_ref(x, kernel, stride, padding, 0.0)
    if count_include_pad:
        return taps.mean(axis=0)
    ones = _taps_ref(np.ones((1, 1) + x.shape[2:], x.dtype), kernel, stride, padding, 0.0)
    return taps.sum(axis=0) / ones.sum(axis=0)


# --- loops --------------------------------------------------------------------------------------
def _max_pool2d_loops(out, argmax, x, KH, KW, sh, sw, ph, pw):
    N, C, H, W = x.shape
    OH, OW = out.shape[2], out.shape[3]
    for t in prange(N * C):
        n = t // C
        c = t % C
        for oh in range(OH):
            h0 = oh * sh - ph
            for ow in range(OW):
                w0 = ow * sw - pw
                best = -np.inf
                where = -1
                for ih in range(max(h0, 0), min(h0 + KH, H)):
                    for iw in range(max(w0, 0), min(w0 + KW, W)):
                        v = x[n, c, ih, iw]
                        if v > best or v != v or where < 0:  # NaN wins, as in PyTorch
                            best = v
                            where = ih * W + iw
                out[n, c, oh, ow] = best
                argmax[n, c, oh, ow] = where


def _max_pool2d_backward_loops(dx, dout, argmax):
    N, C, H, W = dx.shape
    OH, OW = dout.shape[2], dout.shape[3]
    for t in prange(N * C):
        n = t // C
        c = t % C
        for ih in range(H):
            for iw in range(W):
                dx[n, c, ih, iw] = 0
        for oh in range(OH):
            for ow in range(OW):
                k = argmax[n, c, oh, ow]
                dx[n, c, k // W, k % W] += dout[n, c, oh, ow]


def _avg_pool2d_loops(out, x, KH, KW, sh, sw, ph, pw, count_include_pad):
    N, C, H, W = x.shape
    OH, OW = out.shape[2], out.shape[3]
    for t in prange(N * C):
        n = t // C
        c = t % C
        for oh in range(OH):
            h0 = oh * sh - ph
            h_lo, h_hi = max(h0, 0), min(h0 + KH, H)
            for ow in range(OW):
                w0 = ow * sw - pw
                w_lo, w_hi = max(w0, 0), min(w0 + KW, W)
                acc = 0.0
                for ih in range(h_lo, h_hi):
                    for iw in range(w_lo, w_hi):
                        acc += x[n, c, ih, iw]
                div = KH * KW if count_include_pad else (h_hi - h_lo) * (w_hi - w_lo)
                out[n, c, oh, ow] = acc / div


def _avg_pool2d_backward_loops(dx, dout, KH, KW, sh, sw, ph, pw, count_include_pad):
    N, C, H, W = dx.shape
    OH, OW = dout.shape[2], dout.shape[3]
    for t in prange(N * C):
        n = t // C
        c = t % C
        for ih in range(H):
            for iw in range(W):
                dx[n, c, ih, iw] = 0
        for oh in range(OH):
            h0 = oh * sh - ph
            h_lo, h_hi = max(h0, 0), min(h0 + KH, H)
            for ow in range(OW):
                w0 = ow * sw - pw
                w_lo, w_hi = max(w0, 0), min(w0 + KW, W)
                div = KH * KW if count_include_pad else (h_hi - h_lo) * (w_hi - w_lo)
                g = dout[n, c, oh, ow] / div
                for ih in range(h_lo, h_hi):
                    for iw in range(w_lo, w_hi):
                        dx[n, c, ih, iw] += g


max_pool2d_jit = njit(parallel=True, cache=True)(_max_pool2d_loops)
max_pool2d_backward_jit = njit(parallel=True, cache=True)(_max_pool2d_backward_loops)
avg_pool2d_jit = njit(parallel=True, cache=True)(_avg_pool2d_loops)
avg_pool2d_backward_jit = njit(parallel=True, cache=True)(_avg_pool2d_backward_loops)


# --- wrappers -----------------------------------------------------------------------------------
def _geometry(op, x_shape, dtype, kernel_size, stride, padding):
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"{op}: input must be float32 or float64, got {dtype} (shape {tuple(x_shape)})")
    if len(x_shape) != 4:
        raise ValueError(f"{op}: input must be 4-D (N, C, H, W), got shape {tuple(x_shape)}")
    k = as_pair(kernel_size, "kernel_size", op, 1)
    s = k if stride is None else as_pair(stride, "stride", op, 1)
    p = as_pair(padding, "padding", op, 0)
    if p[0] > k[0] // 2 or p[1] > k[1] // 2:
        raise ValueError(f"{op}: padding {p} must be at most half the kernel size {k}")
    OH, OW = pool_output_size(x_shape[2], x_shape[3], k, s, p)
    if OH < 1 or OW < 1:
        raise ValueError(f"{op}: kernel {k} with padding {p} does not fit the input {tuple(x_shape)}")
    return k, s, p, OH, OW


def max_pool2d_forward(x, kernel_size, stride=None, padding=0):
    """(out (N, C, OH, OW), argmax int64 of the same shape); stride defaults to kernel_size."""
    k, s, p, OH, OW = _geometry("max_pool2d", x.shape, x.dtype, kernel_size, stride, padding)
    out = np.empty(x.shape[:2] + (OH, OW), dtype=x.dtype)
    argmax = np.empty(out.shape, dtype=np.int64)
    max_pool2d_jit(out, argmax, np.ascontiguousarray(x), *k, *s, *p)
    return out, argmax


def max_pool2d_backward(dout, argmax, x_shape):
    """dx (x_shape): each dout entry added to the input pixel that won its window.

    ``argmax`` is the forward's (flat in-plane indices); it is range-checked because the kernel
    scatters into dx at those indices without bounds checks."""
    for name, arr in (("dout", dout), ("argmax", argmax)):
        if not isinstance(arr, np.ndarray):
            raise TypeError(f"max_pool2d_backward: {name} must be a numpy array, got {type(arr).__name__}")
    if dout.dtype not in (np.float32, np.float64):
        raise TypeError(f"max_pool2d_backward: dout must be float32 or float64, got {dout.dtype}")
    if argmax.dtype.kind not in "iu":
        raise TypeError(f"max_pool2d_backward: argmax must be integers, got {argmax.dtype}")
    if dout.shape != argmax.shape or len(x_shape) != 4 or dout.shape[:2] != tuple(x_shape[:2]):
        raise ValueError(f"max_pool2d_backward: dout {dout.shape}, argmax {argmax.shape} and input "
                         f"{tuple(x_shape)} do not agree")
    plane = int(x_shape[2]) * int(x_shape[3])
    if argmax.size and (argmax.min() < 0 or argmax.max() >= plane):
        raise ValueError(f"max_pool2d_backward: argmax values must lie in [0, {plane}) (H*W of input "
                         f"{tuple(x_shape)}), got {argmax.min()} .. {argmax.max()}")
    dx = np.empty(tuple(x_shape), dtype=dout.dtype)
    max_pool2d_backward_jit(dx, np.ascontiguousarray(dout), np.ascontiguousarray(argmax, dtype=np.int64))
    return dx


def avg_pool2d_forward(x, kernel_size, stride=None, padding=0, count_include_pad=True):
    k, s, p, OH, OW = _geometry("avg_pool2d", x.shape, x.dtype, kernel_size, stride, padding)
    out = np.empty(x.shape[:2] + (OH, OW), dtype=x.dtype)
    avg_pool2d_jit(out, np.ascontiguousarray(x), *k, *s, *p, bool(count_include_pad))
    return out


def avg_pool2d_backward(dout, x_shape, kernel_size, stride=None, padding=0, count_include_pad=True):
    k, s, p, OH, OW = _geometry("avg_pool2d_backward", x_shape, dout.dtype, kernel_size, stride, padding)
    if dout.shape != tuple(x_shape[:2]) + (OH, OW):
        raise ValueError(f"avg_pool2d_backward: dout has shape {dout.shape}, expected "
                         f"{tuple(x_shape[:2]) + (OH, OW)} for input {tuple(x_shape)}")
    dx = np.empty(tuple(x_shape), dtype=dout.dtype)
    avg_pool2d_backward_jit(dx, np.ascontiguousarray(dout), *k, *s, *p, bool(count_include_pad))
    return dx
