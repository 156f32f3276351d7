"""The CSR format of a pruned weight matrix: construction, checks, the K-blocked form, the transpose.

What
    A pruned weight matrix W (M, K) is stored in CSR form:
      indptr  int64 (M + 1,)  row i owns entries indptr[i] : indptr[i + 1]
      indices int32 (nnz,)    column of each entry (int32 halves the index traffic; K < 2**31)
      values  float32 (nnz,)  the kept weights
    ``csr_from_dense`` keeps the entries where ``w != 0`` (or where an explicit ``mask`` is True, so a
    kept weight that happens to be exactly 0 keeps its slot during fine-tuning). Columns need not be
    sorted within a row; repeated (row, column) entries add.

    ``BlockedCSR`` (``csr_block``) is W re-ordered by (K-block, row), the form the sparse matmul's
    kernel reads (``sparse_matmul``; why it is blocked: docs/kernels/sparse-matmul.md).
    ``csr_transpose`` gives the CSR of W.T (= the CSC form of W) by a counting sort, O(nnz + K).

Conventions
    ``check_csr`` is the one validation of a CSR triple, run by every public wrapper of the sparse
    kernels; the ``*_unchecked`` builders and the kernels trust what it passed.

Reference
    ``csr_to_dense`` (np.add.at) gives the dense matrix every CSR kernel is tested against.
"""
from typing import NamedTuple

import numpy as np
from numba import njit

from .checks import is_int, non_decreasing


def csr_from_dense(w, mask=None):
    """(indptr int64, indices int32, values float32) of the 2-D ``w``, keeping ``w != 0`` or ``mask``."""
    w = np.asarray(w)
    if w.ndim != 2:
        raise ValueError(f"csr_from_dense: w must be 2-D (M, K), got shape {w.shape}")
    if not np.issubdtype(w.dtype, np.floating):
        raise TypeError(f"csr_from_dense: w must be a float array, got {w.dtype}")
    keep = (w != 0) if mask is None else np.asarray(mask)
    if keep.shape != w.shape or keep.dtype != np.bool_:
        raise ValueError(f"csr_from_dense: mask must be a bool array of shape {w.shape}")
    rows, cols = np.nonzero(keep)  # row-major order: rows ascending, columns ascending within a row
    indptr = np.zeros(w.shape[0] + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=w.shape[0]), out=indptr[1:])
    return indptr, cols.astype(np.int32), w[rows, cols].astype(np.float32)


def csr_to_dense(indptr, indices, values, n_cols):
    """Dense (M, n_cols) float32 matrix of a CSR triple (duplicates add), by np.add.at."""
    m = len(indptr) - 1
    rows = np.repeat(np.arange(m), np.diff(indptr))
    dense = np.zeros((m, n_cols), dtype=np.float32)
    np.add.at(dense, (rows, np.asarray(indices, dtype=np.int64)), values)
    return dense


def check_csr(kernel, indptr, indices, values, n_cols):
    """Validate a CSR triple against ``n_cols`` columns; return (indptr int64, indices int32, values)."""
    if not is_int(n_cols) or n_cols < 0:
        raise ValueError(f"{kernel}: the number of columns must be an integer >= 0, got {n_cols!r}")
    for name, arr in (("indptr", indptr), ("indices", indices)):
        if not isinstance(arr, np.ndarray) or arr.ndim != 1:
            raise ValueError(f"{kernel}: {name} must be a 1-D numpy array")
        if not np.issubdtype(arr.dtype, np.integer):
            raise TypeError(f"{kernel}: {name} must have an integer dtype, got {arr.dtype}")
    if not isinstance(values, np.ndarray) or values.ndim != 1:
        raise ValueError(f"{kernel}: values must be a 1-D numpy array")
    if values.dtype != np.float32:
        raise TypeError(f"{kernel}: values must be float32, got {values.dtype}")
    if len(indptr) < 1:
        raise ValueError(f"{kernel}: indptr must have length n_rows + 1 >= 1")
    if len(indices) != len(values):
        raise ValueError(f"{kernel}: indices ({len(indices)}) and values ({len(values)}) differ in length")
    if indptr[0] != 0 or indptr[-1] != len(values):
        raise ValueError(f"{kernel}: indptr must start at 0 and end at nnz = {len(values)}, "
                         f"got {indptr[0]} .. {indptr[-1]} (mismatched indptr length or nnz?)")
    if not non_decreasing(indptr):
        raise ValueError(f"{kernel}: indptr must be non-decreasing")
    if len(indices) and (indices.min() < 0 or indices.max() >= n_cols):
        raise ValueError(f"{kernel}: indices out of range [0, {n_cols}): "
                         f"min {indices.min()}, max {indices.max()}")
    if n_cols >= 2**31:
        raise ValueError(f"{kernel}: n_cols {n_cols} does not fit int32 indices")
    # int64 indptr / int32 indices, converted only when given otherwise (an O(M + nnz) copy)
    return (np.ascontiguousarray(indptr, dtype=np.int64), np.ascontiguousarray(indices, dtype=np.int32),
            np.ascontiguousarray(values))


class BlockedCSR(NamedTuple):
    """W (n_rows, n_cols) re-ordered by K-block for ``sparse_matmul.csr_matmul_blocked`` (built by ``csr_block``).

    Entries of K-block kb (columns kb*k_block .. +k_block) of row i are ptr[kb*n_rows + i] :
    ptr[kb*n_rows + i + 1]; ``indices`` are local to the block (column - kb*k_block), and
    ``values = original values[perm]`` (refresh only the values with ``values[perm]`` when they change).
    ``used`` lists the columns of W that keep an entry (the rows of b the product reads), those of
    K-block kb being used[used_ptr[kb] : used_ptr[kb + 1]]."""
    ptr: np.ndarray       # int64 (n_kblocks * n_rows + 1,)
    indices: np.ndarray   # int32 (nnz,), column within the K-block
    values: np.ndarray    # float32 (nnz,)
    perm: np.ndarray      # int64 (nnz,)
    used: np.ndarray      # int32 (n_used,), ascending
    used_ptr: np.ndarray  # int64 (n_kblocks + 1,)
    n_rows: int
    n_cols: int
    k_block: int


K_BLOCK = 192  # at most this many rows of b per band (evened out: 2304 -> 12 bands of 192, 1000 -> 6 of 167)


def _csr_block_loops(ptr, indices_b, values_b, perm, indptr, indices, values, k_block):
    """Counting sort of the entries by (K-block, row), stable: fills a ``BlockedCSR``'s arrays.

    A row's entries usually come in runs of one K-block (columns ascending): counts and write
    positions are carried in registers along a run instead of a read-modify-write of memory per entry.
    An empty ``perm`` is left unwritten (csr_matmul's throw-away copy needs no refresh map)."""
    m = len(indptr) - 1
    keep_perm = len(perm) > 0
    n_kb = (len(ptr) - 1) // max(m, 1)
    band = np.empty(n_kb * k_block, dtype=np.int64)  # K-block of each column: a table, no divisions
    for kb in range(n_kb):
        for c in range(k_block):
            band[kb * k_block + c] = kb
    for c in range(len(ptr)):
        ptr[c] = 0
    for i in range(m):
        prev = -1
        run = 0
        for q in range(indptr[i], indptr[i + 1]):
            kb = band[indices[q]]
            if kb != prev:
                if prev >= 0:
                    ptr[prev * m + i + 1] += run
                prev = kb
                run = 0
            run += 1
        if prev >= 0:
            ptr[prev * m + i + 1] += run
    for c in range(len(ptr) - 1):
        ptr[c + 1] += ptr[c]
    fill = ptr[:-1].copy()
    for i in range(m):
        prev = -1
        dst = 0
        for q in range(indptr[i], indptr[i + 1]):
            kb = band[indices[q]]
            if kb != prev:
                if prev >= 0:
                    fill[prev * m + i] = dst
                prev = kb
                dst = fill[kb * m + i]
            indices_b[dst] = indices[q] - kb * k_block
            values_b[dst] = values[q]
            if keep_perm:
                perm[dst] = q
            dst += 1
        if prev >= 0:
            fill[prev * m + i] = dst


csr_block_jit = njit(cache=True)(_csr_block_loops)


def csr_block_unchecked(indptr, indices, values, n_cols, k_block, with_perm=True):
    """``csr_block`` of a triple that ``check_csr`` has passed, with an explicit ``k_block``;
    ``with_perm=False`` leaves ``perm`` empty (a throw-away copy needs no refresh map)."""
    m = len(indptr) - 1
    n_kb = max(1, -(-n_cols // k_block))
    ptr = np.empty(n_kb * m + 1, dtype=np.int64)
    indices_b = np.empty(len(indices), dtype=np.int32)
    values_b = np.empty(len(values), dtype=np.float32)
    perm = np.empty(len(indices) if with_perm else 0, dtype=np.int64)
    csr_block_jit(ptr, indices_b, values_b, perm, indptr, indices, values, k_block)
    used = np.flatnonzero(np.bincount(indices, minlength=n_cols)).astype(np.int32)
    used_ptr = np.searchsorted(used, np.arange(n_kb + 1, dtype=np.int64) * k_block).astype(np.int64)
    return BlockedCSR(ptr, indices_b, values_b, perm, used, used_ptr, m, int(n_cols), int(k_block))


def auto_k_block(n_cols):
    """The band height for a W with n_cols columns: at most K_BLOCK rows of b, the bands of equal
    height (no thin last band, whose short loops would cost a visit each for few kept entries)."""
    bands = -(-n_cols // K_BLOCK)
    return int(max(1, -(-n_cols // max(1, bands))))


def csr_block(indptr, indices, values, n_cols, k_block=None):
    """The K-blocked form of a CSR W (M, n_cols) for ``csr_matmul_blocked``: a ``BlockedCSR``.

    ``k_block`` (rows of b per band) defaults to ``auto_k_block``. A one-off O(nnz + M * n_cols /
    k_block) counting sort; ``sparse_matmul.csr_matmul`` does it on every call, so build it once for a
    fixed W (a pruned layer at inference) and call ``sparse_matmul.csr_matmul_blocked``."""
    indptr, indices, values = check_csr("csr_block", indptr, indices, values, n_cols)
    if k_block is None:
        k_block = auto_k_block(n_cols)
    if not is_int(k_block) or k_block < 1:
        raise ValueError(f"csr_block: k_block must be a positive integer, got {k_block!r}")
    return csr_block_unchecked(indptr, indices, values, int(n_cols), int(min(int(k_block), max(1, int(n_cols)))))


def _blocked_consistent_loops(ptr, indices, used, used_ptr, m, n_cols, k_block, n_kb):
    """True when the arrays of a BlockedCSR are what the kernel trusts: ptr from 0 to nnz,
    non-decreasing; every local index inside its K-block (the last one may be narrower); ``used``
    strictly ascending inside [0, n_cols) and holding the column of every entry; ``used_ptr``
    splitting it by K-block. One pass over each array, jitted: a NumPy check cost 7-10 % of the
    product (docs/kernels/sparse-matmul.md)."""
    nnz = len(indices)
    if ptr[0] != 0 or ptr[len(ptr) - 1] != nnz:
        return False
    for c in range(len(ptr) - 1):
        if ptr[c + 1] < ptr[c]:
            return False
    if len(used) > n_cols or len(used_ptr) != n_kb + 1:
        return False
    is_used = np.zeros(n_cols, dtype=np.bool_)
    for u in range(len(used)):
        if used[u] < 0 or used[u] >= n_cols or (u > 0 and used[u] <= used[u - 1]):
            return False
        is_used[used[u]] = True
    for kb in range(n_kb + 1):  # used_ptr[kb] = the first u with used[u] >= kb * k_block
        u = used_ptr[kb]
        if u < 0 or u > len(used) or (u < len(used) and used[u] < kb * k_block) \
                or (u > 0 and used[u - 1] >= kb * k_block):
            return False
    for kb in range(n_kb):
        width = min(k_block, n_cols - kb * k_block)
        for q in range(ptr[kb * m], ptr[(kb + 1) * m]):
            if indices[q] < 0 or indices[q] >= width or not is_used[kb * k_block + indices[q]]:
                return False
    return True


blocked_consistent_jit = njit(cache=True)(_blocked_consistent_loops)


def check_blocked(kernel, bw):
    """A BlockedCSR is a plain tuple whose arrays the caller may refresh: check everything the kernel
    trusts (types, dtypes and lengths here, the contents in ``_blocked_consistent_loops``). Returns it
    with Python ints for the kernel's arithmetic."""
    ints = (bw.n_rows, bw.n_cols, bw.k_block)
    arrays = (bw.ptr, bw.indices, bw.values, bw.used, bw.used_ptr)
    ok = (all(is_int(v) for v in ints) and bw.n_rows >= 0 and 0 <= bw.n_cols < 2**31 and 1 <= bw.k_block < 2**31
          and all(isinstance(a, np.ndarray) and a.ndim == 1 and a.flags.c_contiguous for a in arrays))
    if ok:
        m, n_cols, k_block = int(bw.n_rows), int(bw.n_cols), int(bw.k_block)
        n_kb = max(1, -(-n_cols // k_block))
        ok = (bw.ptr.dtype == np.int64 and bw.indices.dtype == np.int32 and bw.values.dtype == np.float32
              and bw.used.dtype == np.int32 and bw.used_ptr.dtype == np.int64
              and len(bw.ptr) == n_kb * m + 1 and len(bw.indices) == len(bw.values)
              and blocked_consistent_jit(bw.ptr, bw.indices, bw.used, bw.used_ptr, m, n_cols, k_block, n_kb))
    if not ok:
        raise ValueError(f"{kernel}: bw is inconsistent (rebuild it with csr_block)")
    return bw._replace(n_rows=m, n_cols=n_cols, k_block=k_block)


def _csr_transpose_loops(indptr_t, indices_t, perm, indptr, indices):
    """Counting sort of the entries by column: the CSR of W.T and ``perm`` (values_t = values[perm])."""
    m = len(indptr) - 1
    k = len(indptr_t) - 1
    for c in range(k + 1):
        indptr_t[c] = 0
    for q in range(len(indices)):
        indptr_t[indices[q] + 1] += 1
    for c in range(k):
        indptr_t[c + 1] += indptr_t[c]
    fill = indptr_t[:k].copy()
    for i in range(m):  # rows ascending, so each transposed row lists its columns (W's rows) ascending
        for q in range(indptr[i], indptr[i + 1]):
            c = indices[q]
            indices_t[fill[c]] = i
            perm[fill[c]] = q
            fill[c] += 1


csr_transpose_jit = njit(cache=True)(_csr_transpose_loops)


def csr_transpose(indptr, indices, values, n_cols):
    """CSR of W.T (n_cols, M): (indptr_t, indices_t, values_t, perm) with values_t = values[perm].

    Keep ``perm`` when only the values change (fine-tuning): the transposed values are then values[perm]."""
    indptr, indices, values = check_csr("csr_transpose", indptr, indices, values, n_cols)
    if len(indptr) - 1 >= 2**31:
        raise ValueError(f"csr_transpose: {len(indptr) - 1} rows do not fit int32 indices")
    indptr_t = np.empty(n_cols + 1, dtype=np.int64)
    indices_t = np.empty(len(indices), dtype=np.int32)
    perm = np.empty(len(indices), dtype=np.int64)
    csr_transpose_jit(indptr_t, indices_t, perm, indptr, indices)
    return indptr_t, indices_t, values[perm], perm

