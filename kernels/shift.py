"""Shift: a per-channel spatial translation with zero fill (Wu et al., CVPR 2018).

Math (METHODS.md, "Shift"): for an input F of shape (N, C, H, W) and integer offsets dy, dx of
length C,

    G[n, c, y, x] = F[n, c, y + dy[c], x + dx[c]]    if 0 <= y + dy[c] < H and 0 <= x + dx[c] < W
                  = 0                                 otherwise.

The backward is the adjoint, the opposite shift: dx = shift2d(dout, -dy, -dx), because
<shift(x), g> = <x, shift(g, -dy, -dx)> (every pair of pixels linked by the shift appears once
on each side; pixels shifted out of the image contribute to neither).

Offsets that move a channel entirely out of the image are allowed: that channel becomes zero.

ShiftNet's fixed assignment (``shiftnet_offsets``) for a k x k neighbourhood and dilation d:
channel c < k^2 * floor(C / k^2) gets dx = d*((c mod k) - k//2), dy = d*((c//k mod k) - k//2);
the remaining C mod k^2 channels are not shifted.

Layout: NCHW, C-contiguous. Each output row is one contiguous copy of the valid x-range of one
input row plus a zero fill of the rest, so the kernel is a memory copy with offsets; it runs in
parallel over the N*C planes.

Reference: ``shift2d_ref`` slices NumPy arrays per channel (the tests also check it against np.roll
with masking).
"""
import numpy as np
from numba import njit, prange

_FLOATS = (np.float32, np.float64)


# --- reference ---------------------------------------------------------------------------------
def shift2d_ref(x, dy, dx):
    """NumPy oracle: per-channel slicing of a zero array."""
    x = np.asarray(x)
    N, C, H, W = x.shape
    out = np.zeros_like(x)
    for c in range(C):
        sy, sx = int(dy[c]), int(dx[c])
        # output rows y with 0 <= y + sy < H, columns likewise
        y0, y1 = max(0, -sy), min(H, H - sy)
        x0, x1 = max(0, -sx), min(W, W - sx)
        if y0 < y1 and x0 < x1:
            out[:, c, y0:y1, x0:x1] = x[:, c, y0 + sy:y1 + sy, x0 + sx:x1 + sx]
    return out


def shiftnet_offsets(C, k=3, dilation=1):
    """ShiftNet's fixed offsets for C channels: (dy, dx), two int64 arrays of length C."""
    if isinstance(C, bool) or not isinstance(C, (int, np.integer)) or C < 0:
        raise ValueError(f"shiftnet_offsets: C must be a non-negative int, got {C!r}")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"shiftnet_offsets: k must be a positive int, got {k!r}")
    if isinstance(dilation, bool) or not isinstance(dilation, (int, np.integer)) or dilation < 1:
        raise ValueError(f"shiftnet_offsets: dilation must be a positive int, got {dilation!r}")
    c = np.arange(C, dtype=np.int64)
    shifted = c < k * k * (C // (k * k))
    dx = np.where(shifted, dilation * ((c % k) - k // 2), 0).astype(np.int64)
    dy = np.where(shifted, dilation * (((c // k) % k) - k // 2), 0).astype(np.int64)
    return dy, dx


# --- loops -------------------------------------------------------------------------------------
def _shift2d_loops(out, x, dy, dx):
    """out[n, c] = x[n, c] shifted by (dy[c], dx[c]), zero outside. Parallel over the N*C planes.

    Per plane: the valid output block runs from (y0, x0) to (y1 - 1, x1 - 1); in the flattened plane
    it is ONE contiguous range whose source is the same range moved by sy*W + sx. Copy it in one go
    (rows wrap into the neighbouring row's invalid columns), then zero the invalid rows and the
    |sx| invalid columns of every valid row. Per-row copies cost three short loops per row, which
    dominates for the 8x8 and 16x16 planes of small networks.
    """
    N, C, H, W = x.shape
    xf = x.reshape(x.size)      # (N*C*H*W,) views: planes are contiguous
    of = out.reshape(out.size)  # (N*C*H*W,)
    plane = H * W
    for p in prange(N * C):
        c = p % C
        sy = dy[c]
        sx = dx[c]
        base = p * plane
        # valid output columns [x0, x1) and rows [y0, y1); clamped so that a huge shift gives empty
        x0 = min(max(0, -sx), W)
        x1 = max(min(W, W - sx), x0)
        y0 = min(max(0, -sy), H)
        y1 = max(min(H, H - sy), y0)
        # unsigned indices: Numba adds a negative-index wraparound test to signed indices, which
        # stops LLVM from vectorising the copy (measured 2-4x slower)
        if x0 == x1 or y0 == y1:
            for j in range(np.uint64(base), np.uint64(base + plane)):
                of[j] = 0
            continue
        a = np.uint64(base + y0 * W + x0)            # first valid output element
        b = np.uint64(base + (y1 - 1) * W + x1)      # one past the last valid output element
        s = np.uint64(base + (y0 + sy) * W + x0 + sx)  # its source, inside the same plane
        for j in range(np.uint64(0), b - a):
            of[a + j] = xf[s + j]
        for j in range(np.uint64(base), np.uint64(base + y0 * W)):
            of[j] = 0
        for j in range(np.uint64(base + y1 * W), np.uint64(base + plane)):
            of[j] = 0
        for y in range(y0, y1):
            r = np.uint64(base + y * W)
            for j in range(np.uint64(0), np.uint64(x0)):
                of[r + j] = 0
            for j in range(np.uint64(x1), np.uint64(W)):
                of[r + j] = 0


shift2d_jit = njit(parallel=True, cache=True)(_shift2d_loops)
# small arrays: a parallel launch costs more than the copy itself
shift2d_serial_jit = njit(cache=True)(_shift2d_loops)
_PARALLEL_MIN_BYTES = 1 << 19


# --- wrappers ----------------------------------------------------------------------------------
def _check_offsets(name, arg, value, C):
    a = np.asarray(value)
    if a.dtype.kind not in "iu" and a.size:
        raise TypeError(f"{name}: {arg} must be an integer array, got dtype {a.dtype}")
    if a.ndim != 1 or a.shape[0] != C:
        raise ValueError(f"{name}: {arg} must have shape ({C},) (one offset per channel), got {a.shape}")
    return np.ascontiguousarray(a, dtype=np.int64)


def _check_input(name, arg, x):
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name}: {arg} must be a numpy array, got {type(x).__name__}")
    if x.dtype not in _FLOATS:
        raise TypeError(f"{name}: {arg} must be float32 or float64, got {x.dtype}")
    if x.ndim != 4:
        raise ValueError(f"{name}: {arg} must be 4-D (N, C, H, W), got shape {x.shape}")
    return np.ascontiguousarray(x)


def _run(out, x, dy, dx):
    if x.size == 0:
        return
    if x.nbytes >= _PARALLEL_MIN_BYTES:
        shift2d_jit(out, x, dy, dx)
    else:
        shift2d_serial_jit(out, x, dy, dx)


def shift2d(x, dy, dx, out=None):
    """Shift every channel of ``x`` (N, C, H, W) by (dy[c], dx[c]) with zero fill.

    G[n, c, y, x] = F[n, c, y + dy[c], x + dx[c]], zero outside the image. ``x`` float32 or
    float64 (non-contiguous input is copied); ``dy``, ``dx`` integer arrays of length C.
    ``out``: optional C-contiguous array of x's shape and dtype to write into (not aliasing x).
    Returns the shifted array, same shape and dtype as ``x``.
    """
    x = _check_input("shift2d", "x", x)
    C = x.shape[1]
    dy = _check_offsets("shift2d", "dy", dy, C)
    dx = _check_offsets("shift2d", "dx", dx, C)
    if out is None:
        out = np.empty_like(x)
    else:
        if not isinstance(out, np.ndarray) or out.dtype != x.dtype:
            raise TypeError(f"shift2d: out must be a numpy array of dtype {x.dtype}")
        if out.shape != x.shape or not out.flags.c_contiguous or not out.flags.writeable:
            raise ValueError(f"shift2d: out must be a writeable C-contiguous array of shape {x.shape}")
        if np.shares_memory(out, x):
            raise ValueError("shift2d: out must not overlap x")
    _run(out, x, dy, dx)
    return out


def shift2d_backward(dout, dy, dx):
    """Gradient of ``shift2d`` w.r.t. its input: the opposite shift of ``dout`` (N, C, H, W)."""
    dout = _check_input("shift2d_backward", "dout", dout)
    C = dout.shape[1]
    dy = _check_offsets("shift2d_backward", "dy", dy, C)
    dx = _check_offsets("shift2d_backward", "dx", dx, C)
    out = np.empty_like(dout)
    _run(out, dout, -dy, -dx)
    return out
