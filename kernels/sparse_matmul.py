"""Sparse (CSR) matrix products for unstructured pruning: W @ b, W.T @ b, and the sampled gradient.

The math (W (M, K) in CSR form, ``kernels/csr.py``; b dense float32)
    csr_matmul      out = W @ b                 b (K, N) -> (M, N)
    csr_matmul_t    out = W.T @ b               b (M, N) -> (K, N)
    csr_sddmm       g[q] = sum_j a[i, j] * b[k, j] for each kept entry q = (i, k)
                    (the sampled dense-dense product: dL/dW at the kept positions only, cost nnz * N)
    The three products also write into a caller's buffer (``out=``, like numpy's), which may overlap
    none of the arrays they read.

How
    W is re-ordered by (K-band, row) (``csr.csr_block``, a ``BlockedCSR``). N is split into column
    slabs and K into bands; each worker copies the rows of its slab of b that W uses, band by band, into
    an L2 buffer, and runs a 64-column register tile (``csr_tile.band_tiles``) per row of W over the
    band's kept entries, into a per-worker output slab that is copied to ``out`` after the last band
    (``_csr_matmul_loops``). When W reads each used row of b about once (~99 % sparsity on few rows),
    ``_csr_rows_loops`` streams whole rows of b instead (``csr_matmul_algorithm``). The transposed
    product transposes W (``csr.csr_transpose``) and runs the same row-parallel kernel: no write races.
    Why the kernel is blocked and packed, where the time goes, and what was measured and not taken:
    docs/kernels/sparse-matmul.md.

Interface for the other sparse kernels (arrays already validated by their public wrapper)
    ``csr_matmul_blocked_into`` / ``csr_matmul_into`` run the product into ``out``; ``band_buffers``
    gives a kernel that runs the blocked loops with its own band copy (``sparse_implicit``) the plan
    and the per-worker buffers; ``csr_sddmm_jit`` is the sampled product's JIT.

Reference
    Dense masked products: ``csr.csr_to_dense`` (np.add.at) + np.matmul.
"""
import threading
from contextlib import contextmanager

import numpy as np
from numba import get_num_threads, njit, prange

from .checks import check_float32, is_int
from .csr import (BlockedCSR, auto_k_block, check_blocked, check_csr, csr_block_unchecked, csr_to_dense,
                  csr_transpose)
from .csr_tile import TILE, band_tiles, prefetch, prefetch_l2, prefetch_w
from .fastmath import FMA_ONLY, SUM_REASSOC

# bytes of a worker's packed band + output buffer: under half of a 1 MiB Zen 4 L2, which also holds
# the band's kept entries and the copy's source lines (768 KiB measured 10-15 % slower: docs/kernels/sparse-matmul.md)
L2_BUDGET = 448 * 1024
PREFETCH_ROWS = 3  # the band copy prefetches the row of b this many used rows ahead into L1
PREFETCH_L2_ROWS = 32  # ... and this many used rows ahead into L2
OUT_PREFETCH_ROWS = 8  # the copy to ``out`` fetches the output row this many rows ahead for writing
ROWS_MAX_REUSE = 1.6  # whole rows (_csr_rows_loops) when nnz <= this * the number of rows of b used
ROWS_CHUNK = 16384  # ... in output pieces of at most this many columns (64 KiB: in L2 while b streams)
LINE = 16  # floats per 64-byte cache line



def _output(kernel, out, shape, *reads):
    """``out`` checked as the destination of a product of shape ``shape`` (a caller's buffer, reused
    from call to call, like numpy's ``out=``), or a fresh array when None. ``reads``: the arrays the
    kernel reads while it writes ``out``; out may overlap none of them."""
    if out is None:
        return np.empty(shape, dtype=np.float32)
    check_float32(kernel, "out", out, (2,))
    if out.shape != shape:
        raise ValueError(f"{kernel}: out has shape {out.shape}, the product has shape {shape}")
    if not out.flags.writeable:
        raise ValueError(f"{kernel}: out is read-only")
    for name, arr in reads:
        if np.may_share_memory(out, arr):
            raise ValueError(f"{kernel}: out overlaps {name}")
    return out



# --- W @ b ----------------------------------------------------------------------------------------
def csr_matmul_ref(indptr, indices, values, b):
    """Oracle: dense W (from np.add.at) @ b."""
    return np.matmul(csr_to_dense(indptr, indices, values, b.shape[0]), b)


def _csr_matmul_loops(out, ptr, indices, values, used, used_ptr, b, k_block, slab, row_block, bbuf, obuf,
                      prefetch_rows, prefetch_l2_rows):
    """out (M, N) = W @ b from a BlockedCSR's arrays; tasks = (column slab, row block), split into one
    contiguous range per worker (bbuf[w], obuf[w] are worker w's buffers).

    For each K-band, the rows of b's column slab that W uses are copied into bbuf[w] (row k of b to
    row k - k0, row stride ``_padded(slab)``; the rows no entry reads stay unwritten); then for each
    64-column tile and each row of W the row's kept entries of the band are added into obuf[w]
    (rows r0.., padded), which is copied to ``out`` after the last band."""
    m, n = out.shape
    n_kb = (len(ptr) - 1) // max(m, 1)
    n_used = len(used)
    n_sl = (n + slab - 1) // slab
    n_rb = (m + row_block - 1) // row_block
    n_tasks = n_sl * n_rb
    n_workers = bbuf.shape[0]
    for wkr in prange(n_workers):
        ob = obuf[wkr]
        bb = bbuf[wkr]
        t_begin = wkr * n_tasks // n_workers
        t_end = (wkr + 1) * n_tasks // n_workers
        for t in range(t_begin, t_end):
            c0 = (t // n_rb) * slab
            cw = min(slab, n - c0)
            r0 = (t % n_rb) * row_block
            r1 = min(r0 + row_block, m)
            for kb in range(n_kb):
                k0 = kb * k_block
                for u in range(used_ptr[kb], used_ptr[kb + 1]):
                    # the used rows are at least N floats apart: the hardware prefetcher does not
                    # follow short strided pieces, so ask for the piece prefetch_l2_rows used rows
                    # ahead into L2 (more misses in flight than L1 allows) and prefetch_rows ahead
                    # into L1
                    if prefetch_l2_rows > 0 and u + prefetch_l2_rows < n_used:
                        pa = used[u + prefetch_l2_rows] * n + c0
                        for q in range(0, cw, LINE):
                            prefetch_l2(b, pa + q)
                    if prefetch_rows > 0 and u + prefetch_rows < n_used:
                        pa = used[u + prefetch_rows] * n + c0
                        for q in range(0, cw, LINE):
                            prefetch(b, pa + q)
                    k = used[u]
                    src = b[k, c0:c0 + cw]  # slices: 0-based indices vectorise (no wraparound test)
                    dst = bb[k - k0]
                    for j in range(cw):
                        dst[j] = src[j]
                band_tiles(ob, r0, r1, cw, ptr, kb * m, kb > 0, indices, values, bb)
            for i in range(r0, r1):
                # out's rows are N floats apart too: fetch the row OUT_PREFETCH_ROWS ahead for writing,
                # or every store waits for its line
                if i + OUT_PREFETCH_ROWS < r1:
                    pa = (i + OUT_PREFETCH_ROWS) * n + c0
                    for q in range(0, cw, LINE):
                        prefetch_w(out, pa + q)
                dst = out[i, c0:c0 + cw]
                src = ob[i - r0]
                for j in range(cw):
                    dst[j] = src[j]


csr_matmul_jit = njit(parallel=True, cache=True)(_csr_matmul_loops)


def _padded(slab):
    """Row stride of the band and output buffers for a slab of ``slab`` columns: the least odd
    number of cache lines that holds it, so that successive rows start in different L2 sets."""
    lines = -(-slab // LINE)
    return (lines + 1 - lines % 2) * LINE


def _plan(m, n, k_block, workers):
    """(slab, row_block): a slab of columns whose packed band and output rows fit the L2 budget,
    at most N / workers wide so that every worker has one; rows split too when slabs are few."""
    slab = max(TILE, L2_BUDGET // (4 * (k_block + m)) // TILE * TILE)
    slab = min(slab, -(-(-(-n // workers)) // LINE) * LINE)
    n_sl = -(-n // slab)
    # too few slabs for the workers (small N: batch 1, small feature maps): split rows too
    n_rb = min(m, -(-2 * workers // n_sl)) if n_sl < 2 * workers else 1
    return slab, -(-m // n_rb)


_workspace = []  # the reusable scratch buffer of _scratch
_workspace_lock = threading.Lock()  # held from _scratch to the kernel's end: one caller at a time
USE_WORKSPACE = True


def _scratch(shape_b, shape_o):
    """Views (bbuf, obuf) of one reusable float32 buffer, 2 MiB-aligned, of at least 8 MiB.

    Together the buffers take up to L2_BUDGET of L2. Allocated afresh per call, they land on random
    4 KiB pages whose physical addresses overload some L2 sets; numpy asks for transparent huge pages
    for arrays of 4 MiB and more, and in one 2 MiB page the padded rows spread evenly over the sets. Numba
    releases the GIL inside a parallel region, so callers hold _workspace_lock until the kernel has
    returned: calls from several Python threads would otherwise share the buffer."""
    nb = int(np.prod(shape_b))
    nb_lines = -(-nb // LINE) * LINE
    need = nb_lines + int(np.prod(shape_o))
    if not USE_WORKSPACE:
        return np.empty(shape_b, dtype=np.float32), np.empty(shape_o, dtype=np.float32)
    if not _workspace or _workspace[0].size < need:
        raw = np.empty(max(need, 3 << 19) + (1 << 19), dtype=np.float32)  # >= 8 MiB, 2 MiB of slack
        _workspace[:] = [raw[(-raw.ctypes.data % (1 << 21)) // 4:]]
    ws = _workspace[0]
    return ws[:nb].reshape(shape_b), ws[nb_lines:need].reshape(shape_o)


def _csr_rows_loops(out, ptr, indices, values, b, k_block, chunk):
    """out = W @ b a whole row at a time, from a BlockedCSR's arrays: each task (row i of W, a chunk of
    columns) zeroes its piece of out[i] and adds, for every kept entry of the row (band by band),
    value * the same piece of b's row. b's rows stream from memory in long runs and the output piece
    stays in L2: no copy. It reads a row of b once per kept entry that uses it, hence
    ``ROWS_MAX_REUSE``."""
    m, n = out.shape
    n_kb = (len(ptr) - 1) // max(m, 1)
    n_ch = (n + chunk - 1) // chunk
    for t in prange(m * n_ch):
        i = t // n_ch
        c0 = (t % n_ch) * chunk
        cw = min(chunk, n - c0)
        dst = out[i, c0:c0 + cw]
        for j in range(cw):
            dst[j] = 0
        for kb in range(n_kb):
            for p in range(ptr[kb * m + i], ptr[kb * m + i + 1]):
                v = values[p]
                src = b[kb * k_block + indices[p], c0:c0 + cw]
                for j in range(cw):
                    dst[j] += v * src[j]


csr_rows_jit = njit(parallel=True, cache=True, fastmath=FMA_ONLY)(_csr_rows_loops)  # axpy rows: FMA, order kept


def csr_matmul_algorithm(nnz, n_used):
    """The kernel the products run for a W with ``nnz`` kept entries in ``n_used`` distinct columns (the
    rows of b they read): "rows" (``_csr_rows_loops``: few entries per used row, reading a row of b
    again costs less than the band copy) when nnz <= ROWS_MAX_REUSE * n_used, else "blocked"."""
    return "rows" if nnz <= ROWS_MAX_REUSE * n_used else "blocked"


@contextmanager
def band_buffers(m, n, k, k_block, slab=None):
    """The blocked kernels' plan and buffers for an (M, K) @ (K, N) product: yields (slab, row_block,
    bbuf, obuf), ``slab`` from ``_plan`` unless given, holding ``_workspace_lock`` until the kernel has
    run (the buffers are views of the one workspace)."""
    workers = get_num_threads()
    band_rows = max(1, min(k_block, k))  # a k_block above K only ever uses K rows
    plan_slab, row_block = _plan(m, n, band_rows, workers)
    slab = plan_slab if slab is None else slab
    stride = _padded(slab)
    with _workspace_lock:
        yield (slab, row_block) + _scratch((workers, band_rows, stride), (workers, row_block, stride))


def csr_matmul_blocked_into(out, bw, b, slab=None):
    """out (M, N) = W @ b for a checked ``BlockedCSR`` and b, out (float32, C-contiguous, not
    overlapping): the whole-row or the blocked kernel (``csr_matmul_algorithm``); ``slab`` forces the
    blocked one with slabs of that width (tests). Returns out."""
    m, n = out.shape
    if m == 0 or n == 0:
        return out
    if slab is None and csr_matmul_algorithm(len(bw.values), len(bw.used)) == "rows":
        n_ch = max(-(-n // ROWS_CHUNK), -(-2 * get_num_threads() // m))  # a task per worker at least twice over
        csr_rows_jit(out, bw.ptr, bw.indices, bw.values, b, bw.k_block, -(-n // n_ch))
        return out
    with band_buffers(m, n, b.shape[0], bw.k_block, slab) as (slab, row_block, bbuf, obuf):
        csr_matmul_jit(out, bw.ptr, bw.indices, bw.values, bw.used, bw.used_ptr, b, bw.k_block, slab, row_block,
                       bbuf, obuf, PREFETCH_ROWS, PREFETCH_L2_ROWS)
    return out


def csr_matmul_into(out, indptr, indices, values, b):
    """out = W @ b for a CSR triple that ``csr.check_csr`` has passed: blocks W for this call only."""
    if out.size == 0:  # before the blocked copy, whose tables grow with K even for an empty product
        return out
    k = b.shape[0]
    bw = csr_block_unchecked(indptr, indices, values, k, auto_k_block(k), with_perm=False)
    return csr_matmul_blocked_into(out, bw, b)


def csr_matmul(indptr, indices, values, b, out=None):
    """W @ b for CSR W (M, K) and dense float32 C-contiguous b (K, N) -> (M, N) float32, written
    into ``out`` (a C-contiguous float32 (M, N) array, not overlapping b) when given.

    Builds the K-blocked form (``csr_block``, O(nnz + M*K/K_BLOCK)) on each call; use
    ``csr_block`` + ``csr_matmul_blocked`` to pay that once for a fixed W."""
    check_float32("csr_matmul", "b", b, (2,))
    indptr, indices, values = check_csr("csr_matmul", indptr, indices, values, b.shape[0])
    out = _output("csr_matmul", out, (len(indptr) - 1, b.shape[1]), ("the dense operand b", b))
    return csr_matmul_into(out, indptr, indices, values, b)


def csr_matmul_blocked(bw, b, out=None):
    """W @ b for W given as a ``BlockedCSR`` (from ``csr_block``) and b (K, N) float32 C-contiguous;
    ``out`` as in ``csr_matmul``."""
    if not isinstance(bw, BlockedCSR):
        raise TypeError(f"csr_matmul_blocked: bw must be a BlockedCSR (from csr_block), got {type(bw).__name__}")
    check_float32("csr_matmul_blocked", "b", b, (2,))
    if is_int(bw.n_cols) and b.shape[0] != bw.n_cols:  # first: check_blocked builds an n_cols table
        raise ValueError(f"csr_matmul_blocked: b has {b.shape[0]} rows, W has {bw.n_cols} columns")
    bw = check_blocked("csr_matmul_blocked", bw)
    out = _output("csr_matmul_blocked", out, (bw.n_rows, b.shape[1]), ("the dense operand b", b),
                  *((f"bw.{f}", getattr(bw, f)) for f in ("ptr", "indices", "values", "used", "used_ptr")))
    return csr_matmul_blocked_into(out, bw, b)


def csr_matmul_t_ref(indptr, indices, values, b, n_rows_out):
    """Oracle: dense W.T @ b."""
    return np.matmul(csr_to_dense(indptr, indices, values, n_rows_out).T, b)


def csr_matmul_t(indptr, indices, values, b, n_rows_out, out=None):
    """W.T @ b for CSR W (M, K = n_rows_out) and b (M, N) float32 C-contiguous -> (K, N) float32;
    ``out`` as in ``csr_matmul``.

    Transposes W (counting sort, O(nnz + K)) and runs the row-parallel kernel: no write races."""
    check_float32("csr_matmul_t", "b", b, (2,))
    indptr, indices, values = check_csr("csr_matmul_t", indptr, indices, values, n_rows_out)
    if b.shape[0] != len(indptr) - 1:
        raise ValueError(f"csr_matmul_t: b has {b.shape[0]} rows, W has {len(indptr) - 1} (len(indptr) - 1)")
    out = _output("csr_matmul_t", out, (n_rows_out, b.shape[1]), ("the dense operand b", b))
    indptr_t, indices_t, values_t, _ = csr_transpose(indptr, indices, values, n_rows_out)
    return csr_matmul_into(out, indptr_t, indices_t, values_t, b)


# --- dL/dW at the kept entries ------------------------------------------------------------------------
def csr_sddmm_ref(indptr, indices, a, b):
    """Oracle: the dense product a @ b.T (float64), read at the kept (row, column) positions."""
    dense = a.astype(np.float64) @ b.astype(np.float64).T
    rows = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
    return dense[rows, indices].astype(np.float32)


def _csr_sddmm_loops(g, indptr, indices, a, b):
    """g[q] = sum_j a[i, j] * b[k, j] for entry q = (i, k); parallel over rows i (disjoint q)."""
    m = len(indptr) - 1
    n = a.shape[1]
    for i in prange(m):
        arow = a[i]
        for q in range(indptr[i], indptr[i + 1]):
            brow = b[indices[q]]
            acc = np.float32(0.0)
            for j in range(n):
                acc += arow[j] * brow[j]
            g[q] = acc


csr_sddmm_jit = njit(parallel=True, cache=True, fastmath=SUM_REASSOC)(_csr_sddmm_loops)  # dot products over N


def csr_sddmm(indptr, indices, a, b):
    """Sampled product for the kept entries q = (i, k) of W (M, K): g[q] = (a @ b.T)[i, k], with
    a (M, N) = dL/d(W @ b) and b (K, N) the right operand. Returns g float32 (nnz,) aligned with
    ``values``, at cost nnz * N: the gradient of the kept weights only, never a dense (M, K) one."""
    check_float32("csr_sddmm", "a", a, (2,))
    check_float32("csr_sddmm", "b", b, (2,))
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"csr_sddmm: a {a.shape} and b {b.shape} must have the same number of columns")
    placeholder = np.zeros(len(indices), dtype=np.float32)
    indptr, indices, _ = check_csr("csr_sddmm", indptr, indices, placeholder, b.shape[0])
    if a.shape[0] != len(indptr) - 1:
        raise ValueError(f"csr_sddmm: a has {a.shape[0]} rows, W has {len(indptr) - 1} (len(indptr) - 1)")
    g = np.empty(len(indices), dtype=np.float32)
    csr_sddmm_jit(g, indptr, indices, a, b)
    return g


