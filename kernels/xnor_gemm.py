"""XNOR/popcount GEMM on bit-packed ±1 matrices.

The identity (docs/methods.md, "The kernel identity"): for a, b in {-1,+1}^n packed as bits (bit 1 <-> +1,
``tinycomp_kernels.bits``; tail bits 0 in every operand, so they never differ),

    a . b = n - 2 * popcount(a XOR b)

``xnor_gemm(a_bits, b_bits, n_bits)``: a (M, words), b (N, words) uint64 packed along the last axis from
±1 matrices with n_bits columns (words = ceil(n_bits / 64)); returns int32 (M, N) equal to
``a_sign @ b_sign.T``. Internally b is transposed to (words, N) so that one word of one row of a,
broadcast to 8 lanes, meets 8 consecutive columns of b in one 512-bit XOR + VPOPCNTQ + add. The
micro-kernel (``tinycomp_kernels.popcount.xor_popcount_tile_4x32``) keeps a 4 x 32 block of counts in
16 zmm registers while it walks all words; the loops around it (``xnor_dot_block``) cut the output into
work items of ROW_CHUNK rows x (a multiple of STRIP) columns, run in parallel (``prange``). For a work
item the 32-column strip of b (words x 256 bytes, <= 18 KiB for K <= 4608) stays in L1 while the 4-row
tiles of a stream from L2, so no further K-blocking is needed for the layer sizes of ResNets. Columns
left over after the 32-wide strips go through a 4 x 8 tile, then scalar loops; rows left over (M % 4)
are scalar. Without AVX-512 (``WIDE_VECTORS`` false: 16 ymm registers) the 4 x 32 tile's 16
accumulators of 8 words take 32 registers and spill, and each strip runs as four 4 x 8 tiles instead:
15-20 % faster on Zen 3 (paired, 64-512 rows; docs/kernels/xnor-gemm.md). Integer sums: the same
result either way.

``xnor_dot_block`` and the operand checks (``check_bits``, ``check_n_bits``, ``check_tail``) also serve
the binary convolution (``xnor_conv``), whose layer is one such GEMM. Which vector width the compiled
GEMM uses, and what was measured: docs/kernels/xnor-gemm.md (``popcount_instruction_counts`` counts it).

Reference: ``xnor_gemm_ref`` (unpack, float matmul) never calls the loops.
"""
import numpy as np
from numba import njit, prange

from .bits import n_words
from .checks import is_int
from .conv_tiles import WIDE_VECTORS
from .popcount import TILE_ROWS, popcount64, xor_popcount_tile_4x8, xor_popcount_tile_4x32

__all__ = ["xnor_gemm", "xnor_gemm_ref", "popcount_instruction_counts"]

ROW_CHUNK = 64  # rows per parallel work item: 16 micro-tiles of 4 rows
STRIP = 32  # columns per micro-tile strip


# --- reference ---------------------------------------------------------------------------------
def xnor_gemm_ref(a_sign, b_sign):
    """NumPy oracle: (M, K) ±1 @ (N, K).T ±1 -> int32 (M, N), by float64 matmul."""
    return (np.asarray(a_sign, np.float64) @ np.asarray(b_sign, np.float64).T).astype(np.int32)


# --- loops --------------------------------------------------------------------------------------
@njit(cache=True)
def xnor_dot_block(out, a, b_t, n_bits, r0, r1, c0, c1, or0, oc0):
    """out[i - r0 + or0, j - c0 + oc0] = n_bits - 2 * sum_w popcount(a[i, w] ^ b_t[w, j]) for r0 <= i < r1,
    c0 <= j < c1: in place (or0, oc0 = r0, c0) or into a block buffer of the caller (0, 0)."""
    words = a.shape[1]
    r_tiles = r0 + (r1 - r0) // TILE_ROWS * TILE_ROWS
    c_strips = c0 + (c1 - c0) // STRIP * STRIP
    c_eights = c_strips + (c1 - c_strips) // 8 * 8
    di, dj = or0 - r0, oc0 - c0
    for j in range(c0, c_strips, STRIP):  # the strip of b_t stays in L1 across the row tiles
        for i in range(r0, r_tiles, TILE_ROWS):
            if WIDE_VECTORS:
                xor_popcount_tile_4x32(out, a, b_t, i, j, n_bits, i + di, j + dj)
            else:  # AVX2: four 4 x 8 tiles, whose 4 accumulators fit the 16 ymm registers (module docstring)
                for jj in range(j, j + STRIP, 8):
                    xor_popcount_tile_4x8(out, a, b_t, i, jj, n_bits, i + di, jj + dj)
    for j in range(c_strips, c_eights, 8):
        for i in range(r0, r_tiles, TILE_ROWS):
            xor_popcount_tile_4x8(out, a, b_t, i, j, n_bits, i + di, j + dj)
    for i in range(r0, r1):
        for j in range(c_eights if i < r_tiles else c0, c1):
            s = 0
            for w in range(words):
                s += popcount64(a[i, w] ^ b_t[w, j])
            out[i + di, j + dj] = n_bits - 2 * s


def _xnor_gemm_loops(out, a_bits, b_bits_t, n_bits, col_group):
    """out (M, N) int32 <- n_bits - 2 * popcount(a_bits[i] XOR b_bits_t[:, j]); b_bits_t is (words, N)."""
    M = a_bits.shape[0]
    N = b_bits_t.shape[1]
    n_rows = (M + ROW_CHUNK - 1) // ROW_CHUNK
    n_cols = (N + col_group - 1) // col_group
    for item in prange(n_rows * n_cols):
        r0 = (item // n_cols) * ROW_CHUNK
        c0 = (item % n_cols) * col_group
        r1 = min(r0 + ROW_CHUNK, M)
        c1 = min(c0 + col_group, N)
        xnor_dot_block(out, a_bits, b_bits_t, n_bits, r0, r1, c0, c1, r0, c0)


xnor_gemm_jit = njit(parallel=True, cache=True)(_xnor_gemm_loops)


# --- wrappers -----------------------------------------------------------------------------------
def check_bits(op, name, arr, ndim):
    """uint64 array of ``ndim`` dimensions, returned C-contiguous (a copy only if it was not)."""
    if not isinstance(arr, np.ndarray):
        raise TypeError(f"{op}: {name} must be a numpy array, got {type(arr).__name__}")
    if arr.dtype != np.uint64:
        raise TypeError(f"{op}: {name} must have dtype uint64 (use tinycomp_kernels.bits.pack_signs), got {arr.dtype}")
    if arr.ndim != ndim:
        raise ValueError(f"{op}: {name} must have {ndim} dimensions, got shape {arr.shape}")
    return np.ascontiguousarray(arr)


def check_n_bits(op, name, n_bits, words, arg):
    """n_bits as a Python int (a NumPy int8 would overflow in the word arithmetic), checked against words."""
    if not is_int(n_bits):
        raise TypeError(f"{op}: {name} must be an int, got {type(n_bits).__name__}")
    n_bits = int(n_bits)
    if n_bits <= 0 or n_words(n_bits) != words:
        raise ValueError(f"{op}: {name}={n_bits} needs {n_words(max(n_bits, 0))} words per row, but {arg} "
                         f"has {words}")
    return n_bits


def check_tail(op, name, arr, n_bits):
    """Tail bits beyond n_bits in the last word must be 0 (pack_signs guarantees it), else the XOR counts them."""
    r = int(n_bits) % 64
    if r and arr.size and (arr[..., -1] >> np.uint64(r)).any():
        raise ValueError(f"{op}: {name} has nonzero tail bits beyond bit {n_bits} (pack it with pack_signs)")


def _col_group(rows, cols):
    """Columns per work item: whole rows of the output unless there are too few row chunks to share out."""
    import numba
    row_items = -(-rows // ROW_CHUNK)
    want = 4 * numba.get_num_threads()
    groups = 1 if row_items >= want else min(-(-want // max(row_items, 1)), max(1, cols // STRIP))
    return max(STRIP, -(-(-(-cols // groups)) // STRIP) * STRIP)


def xnor_gemm(a_bits, b_bits, n_bits):
    """int32 (M, N) = a_sign @ b_sign.T from packed a_bits (M, words) and b_bits (N, words).

    Both packed along the last axis by ``pack_signs`` from ±1 (or any float) matrices with n_bits
    columns; words must be ceil(n_bits / 64) and the tail bits 0.
    """
    a = check_bits("xnor_gemm", "a_bits", a_bits, 2)
    b = check_bits("xnor_gemm", "b_bits", b_bits, 2)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"xnor_gemm: a_bits has {a.shape[1]} words per row but b_bits has {b.shape[1]}")
    n_bits = check_n_bits("xnor_gemm", "n_bits", n_bits, a.shape[1], "a_bits")
    check_tail("xnor_gemm", "a_bits", a, n_bits)
    check_tail("xnor_gemm", "b_bits", b, n_bits)
    M, N = a.shape[0], b.shape[0]
    out = np.empty((M, N), dtype=np.int32)
    if M and N:
        b_t = np.ascontiguousarray(b.T)  # (words, N): 8 consecutive columns = one 512-bit load
        xnor_gemm_jit(out, a, b_t, int(n_bits), _col_group(M, N))
    return out


def popcount_instruction_counts():
    """Count popcount instructions in the compiled XNOR GEMM: {'zmm', 'ymm', 'xmm', 'scalar', 'cpu'}.

    Compiles a fresh, uncached copy of the GEMM loops (a cache-loaded function has no assembly text)
    for C-contiguous int32/uint64 operands and scans its x86 assembly.
    """
    import os

    import llvmlite.binding as llvm
    from numba import types

    sig = (types.int32[:, ::1], types.uint64[:, ::1], types.uint64[:, ::1], types.int64, types.int64)
    fresh = njit(parallel=True)(_xnor_gemm_loops)
    fresh.compile(sig)
    lines = [ln.split("#")[0] for ln in fresh.inspect_asm(sig).splitlines()]
    vec = [ln for ln in lines if "vpopcnt" in ln]
    return {"zmm": sum("%zmm" in ln for ln in vec), "ymm": sum("%ymm" in ln for ln in vec),
            "xmm": sum("%xmm" in ln for ln in vec),
            "scalar": sum(ln.split()[0].startswith("popcnt") for ln in lines if ln.split()),
            "cpu": os.environ.get("NUMBA_CPU_NAME", llvm.get_host_cpu_name())}
