"""Shift: a per-channel spatial translation with zero fill (Wu et al., CVPR 2018).

Math (docs/methods.md, "Shift"): for an input F of shape (N, C, H, W) and integer offsets shift_y,
shift_x of length C (one per channel; named so that ``dx`` keeps meaning a gradient),

    G[n, c, y, x] = F[n, c, y + shift_y[c], x + shift_x[c]]   if that position lies inside the image
                  = 0                                          otherwise.

The backward is the adjoint, the opposite shift: dx = shift2d(dout, -shift_y, -shift_x), because
<shift(x), g> = <x, shift(g, -shift_y, -shift_x)> (every pair of pixels linked by the shift appears
once on each side; pixels shifted out of the image contribute to neither).

Offsets that move a channel entirely out of the image are allowed: that channel becomes zero.

ShiftNet's fixed assignment (``shiftnet_offsets``) for a k x k neighbourhood and dilation d:
channel c < k^2 * floor(C / k^2) gets shift_x = d*((c mod k) - k//2) and
shift_y = d*((c//k mod k) - k//2); the remaining C mod k^2 channels are not shifted.

Layout: NCHW, C-contiguous; the kernel is a memory copy with offsets, every output element written
exactly once (no zero-fill pass). Per channel, the flat source offset is s = shift_y*W + shift_x:
within a plane, output element i reads input element i + s. Two ways to walk a plane:

- small planes (H*W <= _MASK_PLANE_MAX): ONE loop over the whole plane, out[i] = x[i + s] where a
  precomputed 0/1 mask of the channel's valid pixels says so, else 0. At 8x8 a row is half a vector,
  so per-row loops would be all overhead and remainders; the whole-plane loop is a few full
  512-bit vectors. Reads that fall outside the plane land in a neighbouring plane and are masked
  out; only reads outside the whole array are avoided (the loop is clipped to them, see loops).
- large planes: per output row, zeros before the valid columns, one contiguous copy, zeros after.

Offsets and masks depend only on (shift_y, shift_x, H, W): they are built once and cached (``_plan``).
Parallel over contiguous chunks of the N*C planes, one chunk per thread, but only for arrays of
_PARALLEL_MIN_BYTES or more. Measured on the 2-core machine, ShiftNet offsets, float32: with
OMP_WAIT_POLICY=passive (tinycomp's setting) waking the second thread costs 40-70 us, so two
threads lost up to 4 MB (64x16x32x32: 0.23 ms vs 0.20 ms serial) and only tied at 100 MB
(64x128x56x56: 7.0 ms both), where one core already streams at np.copyto's speed. Masked vs row
loop, serial: 8x8 planes 0.036 vs 0.138 ms (64x64x8x8), 32x32 0.197 vs 0.206 ms, 56x56 8.2 vs
7.0 ms. Benchmark: benchmarks/results/shift.md.

Reference: ``shift2d_ref`` slices NumPy arrays per channel (the tests also check it against np.roll
with masking).
"""
import types

import numpy as np
from numba import get_num_threads, njit, prange

from .checks import is_int


_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))  # native byte order only


# --- reference ---------------------------------------------------------------------------------
def shift2d_ref(x, shift_y, shift_x):
    """NumPy oracle: per-channel slicing of a zero array."""
    x = np.asarray(x)
    N, C, H, W = x.shape
    out = np.zeros_like(x)
    for c in range(C):
        sy, sx = int(shift_y[c]), int(shift_x[c])
        # output rows y with 0 <= y + sy < H, columns likewise
        y0, y1 = max(0, -sy), min(H, H - sy)
        x0, x1 = max(0, -sx), min(W, W - sx)
        if y0 < y1 and x0 < x1:
            out[:, c, y0:y1, x0:x1] = x[:, c, y0 + sy:y1 + sy, x0 + sx:x1 + sx]
    return out


def shiftnet_offsets(C, k=3, dilation=1):
    """ShiftNet's fixed offsets for C channels: (shift_y, shift_x), two int64 arrays of length C."""
    if not is_int(C) or C < 0:
        raise ValueError(f"shiftnet_offsets: C must be a non-negative int, got {C!r}")
    if not is_int(k) or k < 1:
        raise ValueError(f"shiftnet_offsets: k must be a positive int, got {k!r}")
    if not is_int(dilation) or dilation < 1:
        raise ValueError(f"shiftnet_offsets: dilation must be a positive int, got {dilation!r}")
    C, k, dilation = int(C), int(k), int(dilation)  # NumPy ints would overflow in k * k below
    if k * k > 2**62 or dilation * (k // 2) >= 2**62:
        raise ValueError(f"shiftnet_offsets: k={k}, dilation={dilation} give offsets beyond int64")
    c = np.arange(C, dtype=np.int64)
    shifted = c < k * k * (C // (k * k))
    shift_x = np.where(shifted, dilation * ((c % k) - k // 2), 0).astype(np.int64)
    shift_y = np.where(shifted, dilation * (((c // k) % k) - k // 2), 0).astype(np.int64)
    return shift_y, shift_x


# --- plan: per-channel offsets and masks --------------------------------------------------------
_MASK_PLANE_MAX = 1024  # H*W up to which the whole-plane masked loop is used (32x32)
_PARALLEL_MIN_BYTES = 16 << 20  # see the module docstring
_PLANS = {}  # (sign, C, H, W, dtypes, shapes, offset bytes) -> (table, masks, by_rows)
_PLANS_MAX = 64
_LAST = {}  # sign -> (shift_y, shift_x, their dtypes, (C, H, W), their bytes, plan) of the last call


def _shift_plan(shift_y, shift_x, H, W, by_rows):
    """Per-channel table (C, 6) int64 and the distinct masks for offsets ``shift_y``, ``shift_x``
    (int64, (C,)).

    table[c] = (s, mask offset, y0, y1, x0, x1): flat source offset s = shift_y*W + shift_x, where the
    channel's mask starts in ``masks``, and the valid output rows [y0, y1) and columns [x0, x1). A channel
    shifted entirely out of the image gets s = 0 and an empty valid block (all zero output).
    masks: uint8, the distinct (H*W,) masks back to back (one per distinct valid block); a dummy
    of length 1 when ``by_rows`` (the row loop does not use them).
    """
    # |offset| >= the side means "entirely out": clipping keeps that and rules out overflow
    sy = np.clip(shift_y, -H, H)  # (C,)
    sx = np.clip(shift_x, -W, W)  # (C,)
    y0, y1 = np.maximum(0, -sy), np.minimum(H, H - sy)
    x0, x1 = np.maximum(0, -sx), np.minimum(W, W - sx)
    empty = (y0 >= y1) | (x0 >= x1)
    block = np.where(empty[:, None], 0, np.stack([y0, y1, x0, x1], axis=1))  # (C, 4)
    s = np.where(empty, 0, sy * W + sx)  # (C,)
    if by_rows:
        moff, masks = np.zeros_like(s), np.zeros(1, np.uint8)
    else:
        uniq, inv = np.unique(block, axis=0, return_inverse=True)  # (K, 4), (C,)
        rows, cols = np.arange(H), np.arange(W)
        row_ok = (rows >= uniq[:, 0:1]) & (rows < uniq[:, 1:2])  # (K, H)
        col_ok = (cols >= uniq[:, 2:3]) & (cols < uniq[:, 3:4])  # (K, W)
        masks = (row_ok[:, :, None] & col_ok[:, None, :]).astype(np.uint8).reshape(-1)  # (K*H*W,)
        moff = inv.reshape(-1) * (H * W)  # (C,)
    table = np.concatenate([s[:, None], moff[:, None], block], axis=1).astype(np.int64)  # (C, 6)
    return table, masks, by_rows


def _plan(name, shift_y, shift_x, C, H, W, sign):
    """Validated, cached ``_shift_plan`` for offsets ``sign * (shift_y, shift_x)``; raises like
    ``_check_offsets``.

    A layer passes the same offset arrays every call, so the last arrays seen are checked first, by
    identity, dtype and bytes (a few hundred ns cheaper than hashing a key: that matters for the
    1x64x8x8 shift, a 1 us copy).
    """
    key = None
    if type(shift_y) is np.ndarray and type(shift_x) is np.ndarray:
        yb, xb = shift_y.tobytes(), shift_x.tobytes()
        last = _LAST.get(sign)
        if (last is not None and last[0] is shift_y and last[1] is shift_x and last[2] is shift_y.dtype
                and last[3] is shift_x.dtype and last[4] == (C, H, W) and last[5] == yb and last[6] == xb):
            return last[7]
        # the key holds dtype, shape and bytes, so a hit means an input that passed validation before
        key = (sign, C, H, W, shift_y.dtype, shift_x.dtype, shift_y.shape, shift_x.shape, yb, xb)
        plan = _PLANS.get(key)
        if plan is None:
            plan = _new_plan(name, shift_y, shift_x, C, H, W, sign)
            if len(_PLANS) >= _PLANS_MAX:
                _PLANS.clear()
            _PLANS[key] = plan
        _LAST[sign] = (shift_y, shift_x, shift_y.dtype, shift_x.dtype, (C, H, W), yb, xb, plan)
        return plan
    return _new_plan(name, shift_y, shift_x, C, H, W, sign)


def _new_plan(name, shift_y, shift_x, C, H, W, sign):
    shift_y = _check_offsets(name, "shift_y", shift_y, C)
    shift_x = _check_offsets(name, "shift_x", shift_x, C)
    if sign < 0:
        # clip first: -(-2**63) overflows
        shift_y, shift_x = -np.clip(shift_y, -H, H), -np.clip(shift_x, -W, W)
    return _shift_plan(shift_y, shift_x, H, W, by_rows=H * W > _MASK_PLANE_MAX)


# --- loops -------------------------------------------------------------------------------------
# Both loops cut the N*C planes into ``nchunks`` contiguous chunks, one per parallel task, and step
# the channel index within a chunk (no division per plane). Flat indices are unsigned: Numba adds a
# negative-index wraparound test to signed ones, which stops LLVM from vectorising.

def _shift2d_loops(out, x, table, masks, nchunks):
    """Small planes: out[n, c] = x[n, c] shifted by (s, mask) = table[c, 0:2], one masked loop per plane.

    out[base + i] = x[base + i + s] if masks[moff + i] else 0, for i in 0 .. H*W - 1.
    """
    N, C, H, W = x.shape
    plane = H * W
    nplanes = N * C
    total = nplanes * plane
    xf = x.reshape(total)             # (N*C*H*W,) views: planes are contiguous
    of = out.reshape(total)           # (N*C*H*W,)
    tf = table.reshape(table.size)    # (C*6,): an unsigned channel index needs no wraparound test
    uplane = np.uint64(plane)
    for k in prange(nchunks):
        p0 = k * nplanes // nchunks
        p1 = (k + 1) * nplanes // nchunks
        c = np.uint64(p0 % C if C > 0 else 0)
        base = p0 * plane
        for _ in range(p0, p1):
            src = base + tf[c * np.uint64(6)]  # output element 0 of the plane reads here
            moff = tf[c * np.uint64(6) + np.uint64(1)]
            ub = np.uint64(base)
            if src >= 0 and src <= total - plane:  # every plane but (maybe) the first and the last
                sp = np.uint64(src)
                mp = np.uint64(moff)
                for i in range(np.uint64(0), uplane):
                    v = xf[sp + i]
                    of[ub + i] = v if masks[mp + i] else 0
            else:
                # clip the loop to reads inside the array; the clipped-off outputs read outside
                # their own plane, so their mask is 0 anyway
                lo = max(0, -src)
                hi = min(plane, total - src)
                for i in range(ub, ub + np.uint64(lo)):
                    of[i] = 0
                d = ub + np.uint64(lo)
                sp = np.uint64(src + lo)
                mp = np.uint64(moff + lo)
                for i in range(np.uint64(0), np.uint64(hi - lo)):
                    v = xf[sp + i]
                    of[d + i] = v if masks[mp + i] else 0
                for i in range(ub + np.uint64(hi), ub + uplane):
                    of[i] = 0
            base += plane
            c += np.uint64(1)
            if c == C:
                c = np.uint64(0)


def _shift2d_rows_loops(out, x, table, nchunks):
    """Large planes: per output row, zeros before the valid columns, one copy, zeros after.

    table[c, 0] = s, table[c, 2:6] = (y0, y1, x0, x1), the valid output block of channel c.
    """
    N, C, H, W = x.shape
    plane = H * W
    nplanes = N * C
    total = nplanes * plane
    xf = x.reshape(total)      # (N*C*H*W,)
    of = out.reshape(total)    # (N*C*H*W,)
    for k in prange(nchunks):
        p0 = k * nplanes // nchunks
        p1 = (k + 1) * nplanes // nchunks
        c = p0 % C if C > 0 else 0
        base = p0 * plane
        for _ in range(p0, p1):
            src = base + table[c, 0]
            y0, y1, x0, x1 = table[c, 2], table[c, 3], table[c, 4], table[c, 5]
            ub = np.uint64(base)
            for i in range(ub, ub + np.uint64(y0 * W)):
                of[i] = 0
            for y in range(y0, y1):
                r = ub + np.uint64(y * W)
                for i in range(r, r + np.uint64(x0)):
                    of[i] = 0
                d = r + np.uint64(x0)
                sr = np.uint64(src + y * W + x0)  # >= 0: the source of a valid pixel
                for i in range(np.uint64(0), np.uint64(x1 - x0)):
                    of[d + i] = xf[sr + i]
                for i in range(r + np.uint64(x1), r + np.uint64(W)):
                    of[i] = 0
            for i in range(ub + np.uint64(y1 * W), ub + np.uint64(plane)):
                of[i] = 0
            base += plane
            c += 1
            if c == C:
                c = 0


def _renamed(fn, suffix):
    """``fn`` under another name. Numba's on-disk cache files a function under its name and line
    and keys the entries by signature only, not by options: a serial and a parallel JIT of the same
    function would load each other's machine code (seen here: the "parallel" one ran serially)."""
    clone = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__ + suffix)
    clone.__qualname__ = fn.__qualname__ + suffix
    return clone


shift2d_jit = njit(parallel=True, cache=True)(_shift2d_loops)
shift2d_rows_jit = njit(parallel=True, cache=True)(_shift2d_rows_loops)
# small arrays: waking the threads costs more than the copy itself
shift2d_serial_jit = njit(cache=True)(_renamed(_shift2d_loops, "_serial"))
shift2d_rows_serial_jit = njit(cache=True)(_renamed(_shift2d_rows_loops, "_serial"))


# --- wrappers ----------------------------------------------------------------------------------
def _check_offsets(name, arg, value, C):
    a = np.asarray(value)
    if a.dtype.kind not in "iu" and a.size:
        raise TypeError(f"{name}: {arg} must be an integer array, got dtype {a.dtype}")
    if a.ndim != 1 or a.shape[0] != C:
        raise ValueError(f"{name}: {arg} must have shape ({C},) (one offset per channel), got {a.shape}")
    if a.dtype.kind == "u":  # uint64 values >= 2**63 would wrap to negative offsets: any shift this large
        a = np.minimum(a, np.uint64(2**62))  # empties the channel all the same
    return np.ascontiguousarray(a, dtype=np.int64)


def _check_input(name, arg, x):
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name}: {arg} must be a numpy array, got {type(x).__name__}")
    if x.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"{name}: {arg} must be float32 or float64, got {x.dtype}")
    if x.ndim != 4:
        raise ValueError(f"{name}: {arg} must be 4-D (N, C, H, W), got shape {x.shape}")
    return np.ascontiguousarray(x)


def _run(name, out, x, shift_y, shift_x, sign):
    N, C, H, W = x.shape
    table, masks, by_rows = _plan(name, shift_y, shift_x, C, H, W, sign)
    if x.size == 0:
        return
    parallel = x.nbytes >= _PARALLEL_MIN_BYTES
    nchunks = get_num_threads() if parallel else 1
    if by_rows:
        (shift2d_rows_jit if parallel else shift2d_rows_serial_jit)(out, x, table, nchunks)
    else:
        (shift2d_jit if parallel else shift2d_serial_jit)(out, x, table, masks, nchunks)


def shift2d(x, shift_y, shift_x, out=None):
    """Shift every channel of ``x`` (N, C, H, W) by (shift_y[c], shift_x[c]) with zero fill.

    G[n, c, y, x] = F[n, c, y + shift_y[c], x + shift_x[c]], zero outside the image. ``x`` float32 or
    float64 (non-contiguous input is copied); ``shift_y``, ``shift_x`` integer arrays of length C.
    ``out``: optional C-contiguous array of x's shape and dtype to write into (not aliasing x).
    Returns the shifted array, same shape and dtype as ``x``.
    """
    x = _check_input("shift2d", "x", x)
    if out is None:
        out = np.empty_like(x)
    else:
        if not isinstance(out, np.ndarray) or out.dtype != x.dtype:
            raise TypeError(f"shift2d: out must be a numpy array of dtype {x.dtype}")
        flags = out.flags
        if out.shape != x.shape or not flags.c_contiguous or not flags.writeable:
            raise ValueError(f"shift2d: out must be a writeable C-contiguous array of shape {x.shape}")
        # two arrays that own their memory are distinct allocations (a cheap test for the usual
        # case); otherwise both are contiguous here, so overlapping bounds means shared memory
        if out is x or not (out.base is None and x.base is None) and np.may_share_memory(out, x):
            raise ValueError("shift2d: out must not overlap x")
    _run("shift2d", out, x, shift_y, shift_x, 1)
    return out


def shift2d_backward(dout, shift_y, shift_x):
    """Gradient of ``shift2d`` w.r.t. its input: the opposite shift of ``dout`` (N, C, H, W)."""
    dout = _check_input("shift2d_backward", "dout", dout)
    out = np.empty_like(dout)
    _run("shift2d_backward", out, dout, shift_y, shift_x, -1)
    return out
