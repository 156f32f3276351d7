"""Packing the signs of a float array into 64-bit words, and unpacking them.

What: ``pack_signs(x, axis=-1)`` turns the signs of ``x`` along one axis into uint64 words, and
``unpack_signs(bits, n, axis=-1)`` turns them back into a ±1 float32 array. These are the operands of
the XNOR/popcount kernels (``tinycomp_kernels.xnor_gemm``, ``xnor_conv``) and of the binary-weight convolution.

Conventions (stated once, used by every bit kernel of tinycomp):
- sign(v) = +1 if v >= 0 else -1, so **sign(0) = +1** (docs/methods.md, "Sign and straight-through
  estimators"). NaN is rejected.
- **bit 1 <-> +1, bit 0 <-> -1.**
- Element j of a packed row sits in **bit (j % 64) of word j // 64** (bit 0 = least significant),
  so a row of n elements takes ceil(n / 64) words.
- The **tail bits** of the last word (positions n .. 64·words - 1) are **always 0**. Two packed rows
  therefore agree on their tails, their XOR is 0 there, and the kernel identity
  a·b = n - 2·popcount(a XOR b) holds without masking.

Shapes: ``x`` of shape (..., n, ...) with the packed axis of length n becomes (..., words, ...) with
words = ceil(n / 64); the packed axis keeps its position.

Reference: ``pack_signs_ref`` builds each word as the sum of ``bit << position`` in NumPy
(independent of the loops); ``unpack_signs_ref`` tests each bit with a shift and a mask.
"""
import numpy as np
from numba import njit, prange

from .checks import is_int

WORD_BITS = 64


def n_words(n):
    """Number of uint64 words holding ``n`` bits: ceil(n / 64)."""
    return (int(n) + WORD_BITS - 1) // WORD_BITS


def pack_signs_ref(x2d):
    """NumPy oracle: (R, n) float -> (R, ceil(n/64)) uint64, bit j%64 of word j//64 = (x[:, j] >= 0)."""
    rows, n = x2d.shape
    words = n_words(n)
    bits = np.zeros((rows, words * WORD_BITS), dtype=np.uint64)  # (R, 64·words), tail stays 0
    bits[:, :n] = x2d >= 0
    shifts = np.arange(WORD_BITS, dtype=np.uint64)  # (64,)
    return (bits.reshape(rows, words, WORD_BITS) << shifts).sum(axis=2, dtype=np.uint64)  # (R, words)


def unpack_signs_ref(bits2d, n):
    """NumPy oracle: (R, words) uint64 -> (R, n) float32 of ±1."""
    shifts = np.arange(WORD_BITS, dtype=np.uint64)  # (64,)
    b = (bits2d[:, :, None] >> shifts) & np.uint64(1)  # (R, words, 64)
    b = b.reshape(bits2d.shape[0], -1)[:, :n]  # (R, n)
    return np.where(b == 1, 1.0, -1.0).astype(np.float32)


def _pack_signs_loops(out, x2d):
    """out (R, words) uint64 <- signs of x2d (R, n); one output word built in a register."""
    rows, n = x2d.shape
    words = out.shape[1]
    for r in prange(rows):
        for wd in range(words):
            lo = wd * 64
            hi = min(lo + 64, n)
            acc = np.uint64(0)
            for j in range(lo, hi):  # branch-free: random signs would defeat the branch predictor
                acc |= np.uint64(x2d[r, j] >= 0) << np.uint64(j - lo)
            out[r, wd] = acc


def _unpack_signs_loops(out, bits2d):
    """out (R, n) float32 <- ±1 from bits2d (R, words)."""
    rows, n = out.shape
    for r in prange(rows):
        for j in range(n):
            word = bits2d[r, j // 64]
            if (word >> np.uint64(j % 64)) & np.uint64(1):
                out[r, j] = 1.0
            else:
                out[r, j] = -1.0


pack_signs_jit = njit(parallel=True, cache=True)(_pack_signs_loops)
unpack_signs_jit = njit(parallel=True, cache=True)(_unpack_signs_loops)


def _check_axis(name, ndim, axis):
    if not is_int(axis):
        raise TypeError(f"{name}: axis must be an int, got {type(axis).__name__}")
    if ndim == 0:
        raise ValueError(f"{name}: argument must have at least one dimension")
    if not -ndim <= axis < ndim:
        raise ValueError(f"{name}: axis {axis} out of range for an array of {ndim} dimensions")
    return int(axis) % ndim


def pack_signs(x, axis=-1):
    """Pack the signs of the float array ``x`` along ``axis`` into uint64 words.

    Returns a C-contiguous uint64 array with the packed axis of length ceil(n / 64). Bit order:
    element j -> bit j % 64 of word j // 64, bit 1 means +1 (x >= 0, so sign(0) = +1), tail bits 0.
    """
    if not isinstance(x, np.ndarray):
        raise TypeError(f"pack_signs: x must be a numpy array, got {type(x).__name__}")
    if x.dtype.kind not in "fiu":
        raise TypeError(f"pack_signs: x must be a real numeric (not bool) array, got dtype {x.dtype}")
    axis = _check_axis("pack_signs", x.ndim, axis)
    if x.shape[axis] == 0:
        raise ValueError("pack_signs: the packed axis of x has length 0")
    if x.dtype.kind == "f" and np.isnan(x).any():
        raise ValueError("pack_signs: x contains NaN, which has no sign")
    if x.dtype not in (np.float32, np.float64):
        x = x.astype(np.float64)  # exact for the sign of any integer or float16
    moved = np.moveaxis(x, axis, -1)  # (..., n)
    lead = moved.shape[:-1]
    n = moved.shape[-1]
    x2d = np.ascontiguousarray(moved.reshape(-1, n))  # (R, n); copies only if x was not laid out so
    out = np.empty((x2d.shape[0], n_words(n)), dtype=np.uint64)  # (R, words)
    pack_signs_jit(out, x2d)
    return np.ascontiguousarray(np.moveaxis(out.reshape(lead + (out.shape[1],)), -1, axis))


def unpack_signs(bits, n, axis=-1):
    """Inverse of ``pack_signs``: uint64 words along ``axis`` -> ±1 float32 with ``n`` elements there."""
    if not isinstance(bits, np.ndarray):
        raise TypeError(f"unpack_signs: bits must be a numpy array, got {type(bits).__name__}")
    if bits.dtype != np.uint64:
        raise TypeError(f"unpack_signs: bits must have dtype uint64, got {bits.dtype}")
    if not is_int(n):
        raise TypeError(f"unpack_signs: n must be an int, got {type(n).__name__}")
    axis = _check_axis("unpack_signs", bits.ndim, axis)
    if n <= 0 or n_words(n) != bits.shape[axis]:
        raise ValueError(f"unpack_signs: n={n} needs {n_words(max(int(n), 0))} words but bits has "
                         f"{bits.shape[axis]} along axis {axis}")
    moved = np.moveaxis(bits, axis, -1)  # (..., words)
    lead = moved.shape[:-1]
    b2d = np.ascontiguousarray(moved.reshape(-1, moved.shape[-1]))  # (R, words)
    out = np.empty((b2d.shape[0], int(n)), dtype=np.float32)  # (R, n)
    unpack_signs_jit(out, b2d)
    return np.ascontiguousarray(np.moveaxis(out.reshape(lead + (int(n),)), -1, axis))
