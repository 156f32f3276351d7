"""Sparse (CSR) kernels for unstructured pruning: matmul, transposed matmul, sampled gradient, convolution.

What
    A pruned weight matrix W (M, K) is stored in CSR form:
      indptr  int64 (M + 1,)  row i owns entries indptr[i] : indptr[i + 1]
      indices int32 (nnz,)    column of each entry (int32 halves the index traffic; K < 2**31)
      values  float32 (nnz,)  the kept weights
    ``csr_from_dense`` keeps the entries where ``w != 0`` (or where an explicit ``mask`` is True, so a
    kept weight that happens to be exactly 0 keeps its slot during fine-tuning).

The math
    csr_matmul      out = W @ b                 b (K, N) -> (M, N)
    csr_matmul_t    out = W.T @ b               b (M, N) -> (K, N)
    csr_sddmm       g[q] = sum_j a[i, j] * b[k, j] for each kept entry q = (i, k)
                    (the sampled dense-dense product: dL/dW at the kept positions only, cost nnz * N)
    sparse_conv2d   y = W @ cols, cols = im2col(x) (C*KH*KW, N*OH*OW), W = weight.reshape(O, -1)
                    backward: dx = col2im(W.T @ dout_mat); dvalues = csr_sddmm(dout_mat, cols)
                    with dout_mat = dout as (O, N*OH*OW); at inference, when few weights are kept per
                    output channel, the direct kernel of ``sparse_direct`` instead (no cols)
    The three products also write into a caller's buffer (``out=``, like numpy's), which may overlap
    none of the arrays they read.

Why the kernel is blocked and packed
    Per kept entry (i, k) the product needs the row b[k, :]: one b element per multiply-add (a dense
    GEMM reuses each b element across many rows), so the bound is moving b: from memory once, and
    from cache once per kept entry. The kernel:
    - re-orders W once by (K-band, row) (``csr_block``: a counting sort, O(nnz + M*K/k_block),
      cacheable as a ``BlockedCSR``), so the entries of one row inside one band are contiguous;
    - splits N into column slabs and K into bands (of at most K_BLOCK rows unless csr_block was given
      a taller k_block), and copies ("packs") the rows of each band's slab of b that W uses
      (``BlockedCSR.used``: all of them at 95 % sparsity; at 99 %, 1 - 0.99**M of them, 47 % at
      M = 64, 92 % at M = 256) into a per-worker buffer that stays in L2 while every row of W uses
      it. In place, the band's row pieces are N floats apart, a power of two in conv layers, and
      fall into a handful of cache sets; packed, their row stride is an odd number of cache lines
      (``_padded``). (Reading b in place was kept for ~99 % sparsity until this copy of the used
      rows only, with the L2 prefetch below, was faster there too: 1.4-1.5x on 128 x 1152 @
      1152 x 16384 at 99 %.)
    - runs, for every row, a 64-column register tile (``tinycomp_kernels.csr_tile``, LLVM IR): the output
      segment, four vectors wide, stays in eight zmm registers (two accumulator sets) across the row's
      kept entries of the band (one broadcast, four loads from L2, four FMAs per entry), accumulated
      in a padded per-worker output slab in L2 and copied to ``out`` after the last band;
    - copies each band with software prefetches of the used row PREFETCH_L2_ROWS ahead into L2 and
      of the one PREFETCH_ROWS ahead into L1: the hardware prefetcher does not follow short strided
      pieces, and L1 alone allows too few misses in flight (adding the L2 prefetch, 16 rows ahead,
      made the kernel 7-26 % faster at 95 %; 32 rows instead of 16 another 3-8 %; the L1 prefetch 3
      rows ahead instead of 4, 3-15 % on 64 x 576 @ 576 x 16384 in 7 of 7 interleaved runs and within
      the noise on the other two shapes; 2 rows about as good as 3; 8 or 12: no better than 4).
      Where the time goes at 95 % sparsity (2 threads; each phase run alone from a copy of the
      kernel, timed round-robin with the dense product and one streaming read of b,
      benchmarks/stream_read.py):

        256 x 2304 @ 2304 x 4096, 4.1 ms in all: FMA loop 2.3 ms, copies 1.8 ms (reading b: 0.9),
        copy to ``out`` 0.4 ms; copies and FMAs together 3.7 ms
        128 x 1152 @ 1152 x 16384, 6.1 ms: FMA loop 2.4 ms, copies 3.6 ms (reading b: 2.1), out 0.6
        64 x 576 @ 576 x 16384, 2.2 ms: FMA loop 0.8 ms, copies 1.3 ms (reading b: 0.9), out 0.4

      The FMA loop streams 64-byte lines from L2 at ~32 bytes a cycle per core, about what Zen 4's
      L2 delivers to L1; the copies reach 50-70 % of a streaming read (strided pieces of 1-1.75 KB);
    - fetches each row of ``out`` OUT_PREFETCH_ROWS ahead for writing (prefetchw) while copying the
      output slab: the rows are N floats apart, so no hardware prefetcher fetches them and every
      store waited for its line; 25-40 % off that copy run alone (0.49 -> 0.30, 0.61 -> 0.47,
      0.48 -> 0.33 ms on the three shapes above), within the noise (+-5 %) for the whole product;
    - keeps a worker's packed band plus output slab under L2_BUDGET, less than half of L2: the rest
      holds the band's kept entries and the source lines of the copy, which, N floats apart, crowd
      a few L2 sets. With 768 KiB (bands of 768 rows) the kernel was 10-15 % slower in interleaved
      A/B runs on 256 x 2304 @ 2304 x 4096 and 64 x 576 @ 576 x 16384; from 300 to 560 KiB the
      choice of band height (192-384) and slab width (128-256) made little difference on
      256 x 2304 @ 2304 x 4096 (likewise bands of 96-288 rows on 64 x 576 @ 576 x 16384: all within
      6 %), but bands of at most 192 rows (so 320-column slabs at M = 128) were 2-8 % faster than 256 on
      128 x 1152 @ 1152 x 16384, the pack's pieces being longer;
    - visits the rows in order (visiting them sorted by their number of kept entries in the band,
      for predictable loop branches, was measured 10 % slower: the output slab is then read and
      written in a random row order);
    - parallelises over column slabs (each worker a contiguous range of them; rows too when N is
      small): workers never write the same output, and each packs only its own columns of b (but
      for row blocks of one slab, which copy the same columns).
    Measured and not taken (+-10-20 % run-to-run noise on this shared VM, so only repeated A/B wins
    count):
    - overlapping the copy with the FMAs (two options, since removed): double-buffered bands, the
      next one copied a few rows per row visit (no faster to 5 % slower at equal footprint, 10-30 %
      slower with L2 look-ahead prefetches), and the next band prefetched into L2 between visits
      (its strided lines thrash the L2 sets the current band uses; 13-17 % slower). The copy costs
      three L1-L2 transfers per line (load, write-allocate, write-back) on the very path the FMA
      loop saturates;
    - on b with padded rows (no set conflicts), reading it in place with the next band prefetched
      into L2 during the FMAs, or with an L2 prefetch pass over each band before its FMAs: 8-35 %
      slower than the copy;
    - an outer-product (CSC) kernel, a 64 x 64 output tile in L1 and each row of b read once
      (no copy at all): ~20 cycles per kept entry and tile against ~11 (a load, an FMA and a store
      of the tile per entry);
    - non-temporal stores for ``out``: 8-17 % faster into a private buffer nothing else had
      touched, no faster or 9 % slower through the API, whose fresh output reuses memory that the
      previous call just wrote (still in cache, so the read before an ordinary store costs little);
    - reading W's own CSR arrays in place (band starts found by a scan) instead of the blocked copy:
      10 % slower, a band's entries then lie scattered over W's arrays;
    - writing ``out`` from the tile in the last band (or, with one band, instead of the output slab)
      instead of copying the slab after it: 3-6 % slower;
    - per-worker column ranges split evenly into slabs, slabs dealt round robin, the rows of a band
      copied in a scattered order (against DRAM bank conflicts of the power-of-two row stride): within
      the noise;
    - the copy of a slab's output spread over the next slab's first band copy (one output row per
      copied row, two output buffers, so the writes to ``out`` overlap the reads of b): 2-8 % faster
      on 64 x 576 @ 576 x 16384, from 12 % slower to 13 % faster on the other two shapes in three
      interleaved runs: within the noise, not worth a second output buffer;
    - wider register tiles (8 vectors, one or two accumulator sets): the FMA loop alone 25 % slower
      on the 64 x 576 @ 576 x 16384 benchmark, and 3-8 % slower in all with 8-16 vectors (session 2);
      one band of all K rows with 64-column slabs (no output buffer): no faster;
    - a tile in L1 instead of L2 (32-column tiles of 128-row bands): slower, a band then holds only
      ~6 kept entries per row at 95 % sparsity, and the per-visit cost (output load/store, loop
      set-up) outweighs the faster loads;
    - starting the odd workers late (a spin of 10-40 thousand multiply-adds) so that their copies
      fall into the even workers' FMA phases (one core alone copies its half 20 % faster than two
      side by side): no change, within 2 %.

    What the copy costs, measured with a prototype that takes b already laid out slab by slab
    (slab s of every row contiguous, rows padded as in the band buffer; not a kernel of this module,
    since a dense b would first have to be rewritten so, which is the copy): the tiles read the band
    in place while the next band is prefetched into L2 a few lines per row visit, sequential lines
    that thrash no set. 1.25-1.4x faster than this kernel in 4-5 interleaved runs on each shape
    (95 %: 64 x 576 @ 576 x 16384 4.6-5.9x dense, 128 x 1152 @ 1152 x 16384 6.2-7.6x,
    256 x 2304 @ 2304 x 4096 6.6-8.1x): the copy is the largest single cost, and a producer that
    wrote b in that layout (an im2col, say) would save it; on 64-channel layers even that stays
    near 5x dense.

Whole rows at high sparsity
    When W reads each used row of b about once (at 99 % sparsity a 64-row W keeps 0.64 entries per
    column: 1.34 per used row), the band copy costs more than reading a row again. ``_csr_rows_loops``
    then streams whole rows of b (no copy) into an output row piece that stays in L2: chosen when
    nnz <= ROWS_MAX_REUSE * the number of used rows. Interleaved against the blocked kernel (/tmp
    script, 11 rounds): 64 x 576 @ 576 x 16384 at 99 % (1.34 per used row) 1.56x faster, at 98 % (1.79)
    1.2x; 128 x 1152 @ 1152 x 16384 at 99 % (1.78) 0.96x, hence the line at 1.6; 32 x 288 @ 288 x 65536
    and 64 x 576 @ 576 x 4096 at 99 % 2.3x. Pieces of a whole row (up to ROWS_CHUNK columns) beat
    1024-4096-column ones by 5-15 %.

The transposed product
    csr_matmul_t builds the transposed CSR (= the CSC form of W) by a counting sort, O(nnz + K),
    then runs the same race-free row-parallel kernel. A scatter-add kernel over W's rows would race
    between threads on the rows of the output; the transposition is cheap next to the nnz * N product.

Convolution conventions
    NCHW, cross-correlation like PyTorch, zero padding, weight (O, C, KH, KW) flattened in (c, kh, kw)
    order. im2col/col2im are the float conv's (``kernels/im2col.py``): cols (C*KH*KW, N*OH*OW) folds
    the batch into the matmul's columns, so the column tiles stay long even for 8x8 feature maps.

Reference
    Dense masked products: ``csr_to_dense`` (np.add.at) + np.matmul; convolution by
    ``numpy.lib.stride_tricks.sliding_window_view`` + einsum.
"""
import threading
from contextlib import contextmanager
from typing import NamedTuple

import numpy as np
from numba import get_num_threads, njit, prange

from .checks import is_int, non_decreasing
from .csr_tile import TILE, band_tiles, prefetch, prefetch_l2, prefetch_w
from .im2col import col2im, conv_output_size, im2col
from .sparse_direct import _direct_into, direct_fits, direct_pays
from .sparse_implicit import implicit_tables, sparse_conv2d_implicit_jit

_FASTMATH_SUM = {"contract", "reassoc"}  # dot products: reassociation lets LLVM vectorise the reduction


# --- CSR construction and validation -----------------------------------------------------------------
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


def _check_csr(kernel, indptr, indices, values, n_cols):
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


def _check_dense(kernel, name, b, ndims):
    if not isinstance(b, np.ndarray):
        raise TypeError(f"{kernel}: {name} must be a numpy array, got {type(b).__name__}")
    if b.ndim not in ndims:
        raise ValueError(f"{kernel}: {name} must have {' or '.join(map(str, ndims))} dimensions, got shape {b.shape}")
    if b.dtype != np.float32:
        raise TypeError(f"{kernel}: {name} must be float32, got {b.dtype}")
    if not b.flags.c_contiguous:
        raise ValueError(f"{kernel}: {name} must be C-contiguous (use np.ascontiguousarray)")


def _output(kernel, out, shape, *reads):
    """``out`` checked as the destination of a product of shape ``shape`` (a caller's buffer, reused
    from call to call, like numpy's ``out=``), or a fresh array when None. ``reads``: the arrays the
    kernel reads while it writes ``out``; out may overlap none of them."""
    if out is None:
        return np.empty(shape, dtype=np.float32)
    _check_dense(kernel, "out", out, (2,))
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


class BlockedCSR(NamedTuple):
    """W (n_rows, n_cols) re-ordered by K-block for ``csr_matmul_blocked`` (built by ``csr_block``).

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
# bytes of a worker's packed band + output buffer: under half of a 1 MiB Zen 4 L2, which also holds
# the band's kept entries and the copy's source lines (768 KiB measured 10-15 % slower: module doc)
L2_BUDGET = 448 * 1024
PREFETCH_ROWS = 3  # the band copy prefetches the row of b this many used rows ahead into L1
PREFETCH_L2_ROWS = 32  # ... and this many used rows ahead into L2
OUT_PREFETCH_ROWS = 8  # the copy to ``out`` fetches the output row this many rows ahead for writing
ROWS_MAX_REUSE = 1.6  # whole rows (_csr_rows_loops) when nnz <= this * the number of rows of b used
ROWS_CHUNK = 16384  # ... in output pieces of at most this many columns (64 KiB: in L2 while b streams)
LINE = 16  # floats per 64-byte cache line


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


def _block(indptr, indices, values, n_cols, k_block, with_perm=True):
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
    k_block) counting sort; ``csr_matmul`` does it on every call, so build it once for a fixed W
    (a pruned layer at inference) and call ``csr_matmul_blocked``."""
    indptr, indices, values = _check_csr("csr_block", indptr, indices, values, n_cols)
    if k_block is None:
        k_block = auto_k_block(n_cols)
    if not is_int(k_block) or k_block < 1:
        raise ValueError(f"csr_block: k_block must be a positive integer, got {k_block!r}")
    return _block(indptr, indices, values, int(n_cols), int(min(int(k_block), max(1, int(n_cols)))))


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


csr_rows_jit = njit(parallel=True, cache=True, fastmath={"contract"})(_csr_rows_loops)


def csr_matmul_algorithm(nnz, n_used):
    """The kernel the products run for a W with ``nnz`` kept entries in ``n_used`` distinct columns (the
    rows of b they read): "rows" (``_csr_rows_loops``: few entries per used row, reading a row of b
    again costs less than the band copy) when nnz <= ROWS_MAX_REUSE * n_used, else "blocked"."""
    return "rows" if nnz <= ROWS_MAX_REUSE * n_used else "blocked"


@contextmanager
def _band_buffers(m, n, k, k_block, slab=None):
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


def _matmul_blocked_into(out, bw, b, slab=None):
    m, n = out.shape
    if m == 0 or n == 0:
        return out
    if slab is None and csr_matmul_algorithm(len(bw.values), len(bw.used)) == "rows":
        n_ch = max(-(-n // ROWS_CHUNK), -(-2 * get_num_threads() // m))  # a task per worker at least twice over
        csr_rows_jit(out, bw.ptr, bw.indices, bw.values, b, bw.k_block, -(-n // n_ch))
        return out
    with _band_buffers(m, n, b.shape[0], bw.k_block, slab) as (slab, row_block, bbuf, obuf):
        csr_matmul_jit(out, bw.ptr, bw.indices, bw.values, bw.used, bw.used_ptr, b, bw.k_block, slab, row_block,
                       bbuf, obuf, PREFETCH_ROWS, PREFETCH_L2_ROWS)
    return out


def _implicit_into(y, x, bw, kh, kw, slab=None):
    """y (N, O, H, W) = the "same" convolution of x (N, C, H, W) with W given as a BlockedCSR over
    (O, C*kh*kw), by ``sparse_implicit``: the matmul's plan and buffers, the band rows written from x.
    ``slab`` (columns of N*H*W) overrides the plan, for tests."""
    n, c, h, w = x.shape
    o, p = y.shape[1], h * w
    if n == 0 or o == 0:
        return y
    with _band_buffers(o, n * p, c * kh * kw, bw.k_block, slab) as (slab, row_block, bbuf, obuf):
        chan, shift, tap, tap_ok, g = implicit_tables(c, kh, kw, h, w, slab)
        gbuf = np.empty((bbuf.shape[0], slab + 2 * g), dtype=np.float32)
        sparse_conv2d_implicit_jit(y.reshape(n, o, p), bw.ptr, bw.indices, bw.values, bw.used, bw.used_ptr,
                                   x.reshape(n, c, p), chan, shift, tap, tap_ok, g, bw.k_block, slab, row_block,
                                   bbuf, obuf, gbuf)
    return y


def _matmul_into(out, indptr, indices, values, b):
    if out.size == 0:  # before the blocked copy, whose tables grow with K even for an empty product
        return out
    k = b.shape[0]
    return _matmul_blocked_into(out, _block(indptr, indices, values, k, auto_k_block(k), with_perm=False), b)


def csr_matmul(indptr, indices, values, b, out=None):
    """W @ b for CSR W (M, K) and dense float32 C-contiguous b (K, N) -> (M, N) float32, written
    into ``out`` (a C-contiguous float32 (M, N) array, not overlapping b) when given.

    Builds the K-blocked form (``csr_block``, O(nnz + M*K/K_BLOCK)) on each call; use
    ``csr_block`` + ``csr_matmul_blocked`` to pay that once for a fixed W."""
    _check_dense("csr_matmul", "b", b, (2,))
    indptr, indices, values = _check_csr("csr_matmul", indptr, indices, values, b.shape[0])
    out = _output("csr_matmul", out, (len(indptr) - 1, b.shape[1]), ("the dense operand b", b))
    return _matmul_into(out, indptr, indices, values, b)


def _blocked_consistent_loops(ptr, indices, used, used_ptr, m, n_cols, k_block, n_kb):
    """True when the arrays of a BlockedCSR are what the kernel trusts: ptr from 0 to nnz,
    non-decreasing; every local index inside its K-block (the last one may be narrower); ``used``
    strictly ascending inside [0, n_cols) and holding the column of every entry; ``used_ptr``
    splitting it by K-block. One pass over each array (numpy's version cost 0.2-0.4 ms a call at
    95 % sparsity on the benchmark shapes, 7-10 % of the product)."""
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


def _check_blocked(bw):
    """A BlockedCSR is a plain tuple whose arrays the caller may refresh: check everything the kernel
    trusts (types, dtypes and lengths here, the contents in ``_blocked_consistent_loops``)."""
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
        raise ValueError("csr_matmul_blocked: bw is inconsistent (rebuild it with csr_block)")
    return bw._replace(n_rows=m, n_cols=n_cols, k_block=k_block)  # Python ints for the kernel's arithmetic


def csr_matmul_blocked(bw, b, out=None):
    """W @ b for W given as a ``BlockedCSR`` (from ``csr_block``) and b (K, N) float32 C-contiguous;
    ``out`` as in ``csr_matmul``."""
    if not isinstance(bw, BlockedCSR):
        raise TypeError(f"csr_matmul_blocked: bw must be a BlockedCSR (from csr_block), got {type(bw).__name__}")
    _check_dense("csr_matmul_blocked", "b", b, (2,))
    if is_int(bw.n_cols) and b.shape[0] != bw.n_cols:  # first: _check_blocked builds an n_cols table
        raise ValueError(f"csr_matmul_blocked: b has {b.shape[0]} rows, W has {bw.n_cols} columns")
    bw = _check_blocked(bw)
    out = _output("csr_matmul_blocked", out, (bw.n_rows, b.shape[1]), ("the dense operand b", b),
                  *((f"bw.{f}", getattr(bw, f)) for f in ("ptr", "indices", "values", "used", "used_ptr")))
    return _matmul_blocked_into(out, bw, b)


# --- W.T @ b ----------------------------------------------------------------------------------------
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
    indptr, indices, values = _check_csr("csr_transpose", indptr, indices, values, n_cols)
    if len(indptr) - 1 >= 2**31:
        raise ValueError(f"csr_transpose: {len(indptr) - 1} rows do not fit int32 indices")
    indptr_t = np.empty(n_cols + 1, dtype=np.int64)
    indices_t = np.empty(len(indices), dtype=np.int32)
    perm = np.empty(len(indices), dtype=np.int64)
    csr_transpose_jit(indptr_t, indices_t, perm, indptr, indices)
    return indptr_t, indices_t, values[perm], perm


def csr_matmul_t_ref(indptr, indices, values, b, n_rows_out):
    """Oracle: dense W.T @ b."""
    return np.matmul(csr_to_dense(indptr, indices, values, n_rows_out).T, b)


def csr_matmul_t(indptr, indices, values, b, n_rows_out, out=None):
    """W.T @ b for CSR W (M, K = n_rows_out) and b (M, N) float32 C-contiguous -> (K, N) float32;
    ``out`` as in ``csr_matmul``.

    Transposes W (counting sort, O(nnz + K)) and runs the row-parallel kernel: no write races."""
    _check_dense("csr_matmul_t", "b", b, (2,))
    indptr, indices, values = _check_csr("csr_matmul_t", indptr, indices, values, n_rows_out)
    if b.shape[0] != len(indptr) - 1:
        raise ValueError(f"csr_matmul_t: b has {b.shape[0]} rows, W has {len(indptr) - 1} (len(indptr) - 1)")
    out = _output("csr_matmul_t", out, (n_rows_out, b.shape[1]), ("the dense operand b", b))
    indptr_t, indices_t, values_t, _ = csr_transpose(indptr, indices, values, n_rows_out)
    return _matmul_into(out, indptr_t, indices_t, values_t, b)


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


csr_sddmm_jit = njit(parallel=True, cache=True, fastmath=_FASTMATH_SUM)(_csr_sddmm_loops)


def csr_sddmm(indptr, indices, a, b):
    """Sampled product for the kept entries q = (i, k) of W (M, K): g[q] = (a @ b.T)[i, k], with
    a (M, N) = dL/d(W @ b) and b (K, N) the right operand. Returns g float32 (nnz,) aligned with
    ``values``, at cost nnz * N: the gradient of the kept weights only, never a dense (M, K) one."""
    _check_dense("csr_sddmm", "a", a, (2,))
    _check_dense("csr_sddmm", "b", b, (2,))
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"csr_sddmm: a {a.shape} and b {b.shape} must have the same number of columns")
    placeholder = np.zeros(len(indices), dtype=np.float32)
    indptr, indices, _ = _check_csr("csr_sddmm", indptr, indices, placeholder, b.shape[0])
    if a.shape[0] != len(indptr) - 1:
        raise ValueError(f"csr_sddmm: a has {a.shape[0]} rows, W has {len(indptr) - 1} (len(indptr) - 1)")
    g = np.empty(len(indices), dtype=np.float32)
    csr_sddmm_jit(g, indptr, indices, a, b)
    return g


# --- sparse convolution: im2col (kernels/im2col.py) + the CSR kernels --------------------------------------
def _check_conv(kernel, x_shape, weight_shape, stride, padding, dilation):
    if (not isinstance(weight_shape, (tuple, list)) or len(weight_shape) != 4
            or not all(is_int(s) and s >= 1 for s in weight_shape)):
        raise ValueError(f"{kernel}: weight_shape must be (O, C, KH, KW) with positive integer sizes, "
                         f"got {weight_shape!r}")
    o, c, kh, kw = (int(s) for s in weight_shape)
    if x_shape[1] != c:
        raise ValueError(f"{kernel}: x has {x_shape[1]} channels, weight_shape {tuple(weight_shape)} expects {c}")
    for name, v, low in (("stride", stride, 1), ("padding", padding, 0), ("dilation", dilation, 1)):
        if not is_int(v) or v < low:
            raise ValueError(f"{kernel}: {name} must be an integer >= {low}, got {v!r}")
    oh, ow = conv_output_size(x_shape[2], x_shape[3], kh, kw, stride, padding, dilation)
    if oh < 1 or ow < 1:
        raise ValueError(f"{kernel}: kernel {kh}x{kw} (dilation {dilation}) larger than the padded input "
                         f"{x_shape[2]}x{x_shape[3]} + 2*{padding}")
    return o, c, kh, kw, oh, ow


def sparse_conv2d_ref(x, weight, stride=1, padding=0, dilation=1):
    """Oracle: dense conv2d of ``weight`` (the masked dense weight), im2col by sliding windows + einsum."""
    o, c, kh, kw = weight.shape
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    span_h, span_w = dilation * (kh - 1) + 1, dilation * (kw - 1) + 1
    win = np.lib.stride_tricks.sliding_window_view(xp, (span_h, span_w), axis=(2, 3))
    win = win[:, :, ::stride, ::stride, ::dilation, ::dilation]  # (N, C, OH, OW, KH, KW)
    return np.einsum("ncyxab,ocab->noyx", win, weight.astype(np.float64)).astype(np.float32)


CONV_CHUNK_BYTES = 8 << 20  # inference: the patch matrix of one chunk of images, which stays in L3
CONV_WHOLE_BYTES = 24 << 20  # ... unless the whole batch's is at most this: in one piece the product runs best


CONV_ALGORITHMS = ("im2col", "implicit", "direct")


def sparse_conv2d_algorithm(x_shape, weight_shape, nnz, stride=1, padding=0, dilation=1, return_cols=False):
    """The path ``sparse_conv2d`` takes, from the shapes alone (reproducible). At inference with stride
    1, dilation 1 and "same" padding (``sparse_direct.direct_fits``): "direct" (``sparse_direct``) when
    ``sparse_direct.direct_pays``, else "implicit" (``sparse_implicit``); neither forms the patch
    matrix. Otherwise (other geometries, or training, whose backward needs the patch matrix): "im2col"."""
    if return_cols or not direct_fits(weight_shape, stride, padding, dilation):
        return "im2col"
    return "direct" if direct_pays(nnz, weight_shape[0], x_shape[2] * x_shape[3]) else "implicit"


def sparse_conv2d(x, indptr, indices, values, weight_shape, stride=1, padding=0, dilation=1,
                  return_cols=False, algorithm=None):
    """Conv2d of x (N, C, H, W) float32 with the pruned weight (O, C, KH, KW) given as CSR over
    (O, C*KH*KW). Returns y (N, O, OH, OW) float32, and cols (C*KH*KW, N*OH*OW) if ``return_cols``
    (keep it for ``sparse_conv2d_backward``).

    Three paths (``sparse_conv2d_algorithm`` picks one from the shapes; ``algorithm`` forces one, for
    tests and benchmarks):
    - "im2col", any geometry: the patch matrix cols (K, N*OH*OW) then the CSR product W @ cols, the
      batch folded into the columns so that the column tiles stay long even for small feature maps,
      and the (O, N, OH*OW) result transposed to NCHW. Without ``return_cols`` a patch matrix larger
      than CONV_WHOLE_BYTES is formed in chunks of images of equal size, each taking about
      CONV_CHUNK_BYTES: a chunk's is still in L3 when the product reads it, where the whole one (38 MB
      for 256 images of 64x8x8) makes a round trip to memory (``benchmarks/bench_sparse_conv.py``,
      "chunks vs whole": 1.2-1.6x faster than one piece at 95 % sparsity on the 38-75 MB ones; at
      9-19 MB one piece was as fast or faster, hence CONV_WHOLE_BYTES).
    - "implicit" (``kernels/sparse_implicit.py``): the same product with the patch rows written from
      x into the kernel's L2 buffer; no patch matrix, no transpose. Inference with stride 1, dilation 1
      and "same" padding only.
    - "direct" (``kernels/sparse_direct.py``): each kept weight adds a shifted input plane; for few
      kept weights per output channel on large planes. Same geometry as "implicit"."""
    _check_dense("sparse_conv2d", "x", x, (4,))
    o, c, kh, kw, oh, ow = _check_conv("sparse_conv2d", x.shape, weight_shape, stride, padding, dilation)
    if len(indptr) != o + 1:
        raise ValueError(f"sparse_conv2d: indptr has length {len(indptr)}, expected O + 1 = {o + 1}")
    indptr, indices, values = _check_csr("sparse_conv2d", indptr, indices, values, c * kh * kw)
    n = x.shape[0]
    if algorithm is None:
        algorithm = sparse_conv2d_algorithm(x.shape, (o, c, kh, kw), len(values), stride, padding, dilation,
                                            return_cols)
    elif algorithm not in CONV_ALGORITHMS:
        raise ValueError(f"sparse_conv2d: algorithm must be None or one of {CONV_ALGORITHMS}, got {algorithm!r}")
    elif algorithm != "im2col" and (return_cols or not direct_fits((o, c, kh, kw), stride, padding, dilation)):
        raise ValueError(f"sparse_conv2d: algorithm {algorithm!r} computes inference (no return_cols) with "
                         f"stride 1, dilation 1 and 'same' padding only; got a {kh}x{kw} kernel, stride {stride}, "
                         f"padding {padding}, dilation {dilation}, return_cols={return_cols}")
    y = np.empty((n, o, oh, ow), dtype=np.float32)
    if algorithm == "direct":
        return _direct_into(y, x, indptr, indices, values, kh, kw)
    k, p = c * kh * kw, oh * ow
    # the blocked copy of W only for a non-empty batch: its tables grow with K even for no product
    bw = _block(indptr, indices, values, k, auto_k_block(k), with_perm=False) if n else None
    if algorithm == "implicit":
        return _implicit_into(y, x, bw, kh, kw)
    # cols (K, N*P) in the float conv's layout; training keeps all of it for the backward
    if return_cols or 4 * k * p * n <= CONV_WHOLE_BYTES:
        chunk = max(n, 1)
    else:  # chunks of equal size: a small last one would run the product at a loss
        chunk = -(-n // -(-n // max(1, CONV_CHUNK_BYTES // (4 * k * p))))
    cols_buf = np.empty(k * chunk * p, dtype=np.float32)  # flat: a shorter last chunk stays C-contiguous
    out_buf = np.empty(o * chunk * p, dtype=np.float32)
    for n0 in range(0, n, chunk):
        nc = min(chunk, n - n0)
        cols = im2col(x[n0:n0 + nc], kh, kw, stride, padding, dilation, out=cols_buf[:k * nc * p].reshape(k, nc * p))
        out = _matmul_blocked_into(out_buf[:o * nc * p].reshape(o, nc * p), bw, cols)
        y[n0:n0 + nc] = out.reshape(o, nc, oh, ow).transpose(1, 0, 2, 3)  # (O, N, OH, OW) -> NCHW
    return (y, cols_buf[:k * n * p].reshape(k, n * p)) if return_cols else y


def sparse_conv2d_backward_ref(dout, x, weight, stride=1, padding=0, dilation=1):
    """Oracle: (dx, dw) of the dense conv2d: dx by strided-slice scatter of W.T @ dout, dw dense."""
    o, c, kh, kw = weight.shape
    n, _, h, w = x.shape
    _, _, oh, ow = dout.shape
    d64 = dout.astype(np.float64)
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    dxp = np.zeros_like(xp)
    dw = np.zeros((o, c, kh, kw))
    for a in range(kh):
        for b in range(kw):
            ys = slice(a * dilation, a * dilation + stride * (oh - 1) + 1, stride)
            xs = slice(b * dilation, b * dilation + stride * (ow - 1) + 1, stride)
            dxp[:, :, ys, xs] += np.einsum("noyx,oc->ncyx", d64, weight[:, :, a, b].astype(np.float64))
            dw[:, :, a, b] = np.einsum("noyx,ncyx->oc", d64, xp[:, :, ys, xs])
    dx = dxp[:, :, padding:padding + h, padding:padding + w]
    return dx.astype(np.float32), dw.astype(np.float32)


def sparse_conv2d_backward(dout, cols, x_shape, indptr, indices, values, weight_shape, stride=1, padding=0,
                           dilation=1, need_dx=True):
    """Gradients of ``sparse_conv2d``: (dx (N, C, H, W) float32 or None, dvalues (nnz,) aligned with
    ``values``). ``cols`` is the (C*KH*KW, N*OH*OW) array returned by the forward.

    dvalues[q] for kept weight q = (o, k) is sum over (n, position) of dout[n, o, pos] * cols[k, (n, pos)]
    (``csr_sddmm``, cost nnz * N * OH*OW); dx = col2im(W.T @ dout) through the transposed CSR."""
    _check_dense("sparse_conv2d_backward", "dout", dout, (4,))
    _check_dense("sparse_conv2d_backward", "cols", cols, (2,))
    if len(x_shape) != 4:
        raise ValueError(f"sparse_conv2d_backward: x_shape must be (N, C, H, W), got {x_shape}")
    o, c, kh, kw, oh, ow = _check_conv("sparse_conv2d_backward", x_shape, weight_shape, stride, padding,
                                       dilation)
    n = x_shape[0]
    if dout.shape != (n, o, oh, ow):
        raise ValueError(f"sparse_conv2d_backward: dout has shape {dout.shape}, expected {(n, o, oh, ow)}")
    if cols.shape != (c * kh * kw, n * oh * ow):
        raise ValueError(f"sparse_conv2d_backward: cols has shape {cols.shape}, "
                         f"expected {(c * kh * kw, n * oh * ow)}")
    if len(indptr) != o + 1:
        raise ValueError(f"sparse_conv2d_backward: indptr has length {len(indptr)}, expected O + 1 = {o + 1}")
    indptr, indices, values = _check_csr("sparse_conv2d_backward", indptr, indices, values, c * kh * kw)
    dout_t = np.ascontiguousarray(dout.reshape(n, o, oh * ow).transpose(1, 0, 2)).reshape(o, n * oh * ow)  # (O, N*P)
    dvalues = np.empty(len(values), dtype=np.float32)
    csr_sddmm_jit(dvalues, indptr, indices, dout_t, cols)
    if not need_dx:
        return None, dvalues
    indptr_t, indices_t, values_t, _ = csr_transpose(indptr, indices, values, c * kh * kw)
    dcols = np.empty((c * kh * kw, n * oh * ow), dtype=np.float32)  # (K, N*P) = W.T @ dout
    _matmul_into(dcols, indptr_t, indices_t, values_t, dout_t)
    return col2im(dcols, tuple(x_shape), kh, kw, stride, padding, dilation), dvalues
