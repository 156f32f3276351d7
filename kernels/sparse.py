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
                    with dout_mat = dout as (O, N*OH*OW)

Why the kernel streams (and why sparse usually loses)
    A naive sparse product gathers b[k, j] for scattered k: each multiply-add needs a cache miss,
    and scipy.sparse's csr @ dense walks one output element at a time. Here the inner loop is an
    axpy over a *contiguous row* of b: for output row i and kept entry (i, k),
    out[i, j0:j1] += W[i, k] * b[k, j0:j1], vectorised (16 floats per AVX-512 FMA). Four kept
    entries are fused per pass, so the output tile is loaded and stored once per four
    multiply-adds (four FMAs with a memory operand each, one store). Tiles are 1024 columns (4 KiB
    rows): the fixed cost of a pass (index loads, row views, the vectoriser's runtime alias check)
    must be amortised, and four 4 KiB row pieces in flight let the hardware prefetcher stream b
    even from L3; measured, long tiles beat short L2-resident ones (64..512 columns). The bound is
    b's traffic: one b element per multiply-add (a dense GEMM reuses each b element across a
    register block of rows), so per useful flop sparse runs at roughly 1/4 .. 1/2 of dense speed.
    Work is split over (column tile, row block) tasks, each writing a disjoint block of ``out``.

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
import numpy as np
from numba import njit, prange

from .im2col import col2im, im2col

_FASTMATH = {"contract"}          # fused multiply-add only: no reassociation across the four fused entries
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
    if len(indptr) > 1 and np.diff(indptr).min() < 0:
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


def _tiling(n):
    """Column tile width (floats). Measured: the per-pass cost (four index loads, four row views, the
    vector loop's alias checks) is amortised only by long tiles, and with four b rows in flight the
    hardware prefetcher streams each 4 KiB row piece well even from L3: 1024 beat 64..512."""
    return max(1, min(n, 1024))


# --- W @ b ----------------------------------------------------------------------------------------
def csr_matmul_ref(indptr, indices, values, b):
    """Oracle: dense W (from np.add.at) @ b."""
    return np.matmul(csr_to_dense(indptr, indices, values, b.shape[0]), b)


def _csr_matmul_loops(out, indptr, indices, values, b, tile, row_block):
    """out (M, N) = W @ b for b (K, N); parallel tasks = (column tile, row block), disjoint out blocks."""
    m, n = out.shape
    n_tiles = (n + tile - 1) // tile
    n_blocks = (m + row_block - 1) // row_block
    for t in prange(n_tiles * n_blocks):
        # row block fastest: consecutive tasks of one thread reuse the same b slab from cache
        blk = t % n_blocks
        j0 = (t // n_blocks) * tile
        j1 = min(j0 + tile, n)
        w = j1 - j0
        for i in range(blk * row_block, min(blk * row_block + row_block, m)):
            # tile views and loops from 0: j >= 0 is then provable, so numba's negative-index
            # wraparound vanishes and LLVM emits contiguous vector loads instead of gathers
            orow = out[i, j0:j1]
            for j in range(w):
                orow[j] = 0.0
            p = indptr[i]
            end = indptr[i + 1]
            # four kept entries per pass: one load/store of the output tile per four multiply-adds
            while p + 4 <= end:
                v0, v1, v2, v3 = values[p], values[p + 1], values[p + 2], values[p + 3]
                b0, b1 = b[indices[p], j0:j1], b[indices[p + 1], j0:j1]
                b2, b3 = b[indices[p + 2], j0:j1], b[indices[p + 3], j0:j1]
                for j in range(w):
                    acc = orow[j]
                    acc += v0 * b0[j]
                    acc += v1 * b1[j]
                    acc += v2 * b2[j]
                    acc += v3 * b3[j]
                    orow[j] = acc
                p += 4
            while p < end:
                v0 = values[p]
                b0 = b[indices[p], j0:j1]
                for j in range(w):
                    orow[j] += v0 * b0[j]
                p += 1


csr_matmul_jit = njit(parallel=True, cache=True, fastmath=_FASTMATH)(_csr_matmul_loops)


def _matmul_into(out, indptr, indices, values, b):
    m, n = out.shape
    tile = _tiling(n)
    n_tiles = (n + tile - 1) // tile
    # enough tasks for the threads when N is small (batch 1, a 4x4 feature map)
    row_block = m if n_tiles >= 16 else max(1, (m * n_tiles) // 16)
    csr_matmul_jit(out, indptr, indices, values, b, tile, row_block)
    return out


def csr_matmul(indptr, indices, values, b):
    """W @ b for CSR W (M, K) and dense float32 C-contiguous b (K, N) -> (M, N) float32."""
    _check_dense("csr_matmul", "b", b, (2,))
    indptr, indices, values = _check_csr("csr_matmul", indptr, indices, values, b.shape[0])
    out = np.empty((len(indptr) - 1, b.shape[1]), dtype=np.float32)
    return _matmul_into(out, indptr, indices, values, b)


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


def csr_matmul_t(indptr, indices, values, b, n_rows_out):
    """W.T @ b for CSR W (M, K = n_rows_out) and b (M, N) float32 C-contiguous -> (K, N) float32.

    Transposes W (counting sort, O(nnz + K)) and runs the row-parallel kernel: no write races."""
    _check_dense("csr_matmul_t", "b", b, (2,))
    indptr, indices, values = _check_csr("csr_matmul_t", indptr, indices, values, n_rows_out)
    if b.shape[0] != len(indptr) - 1:
        raise ValueError(f"csr_matmul_t: b has {b.shape[0]} rows, W has {len(indptr) - 1} (len(indptr) - 1)")
    indptr_t, indices_t, values_t, _ = csr_transpose(indptr, indices, values, n_rows_out)
    out = np.empty((n_rows_out, b.shape[1]), dtype=np.float32)
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
def _conv_out_size(size, k, stride, padding, dilation):
    return (size + 2 * padding - dilation * (k - 1) - 1) // stride + 1


def _check_conv(kernel, x_shape, weight_shape, stride, padding, dilation):
    if len(weight_shape) != 4 or any(int(s) < 1 for s in weight_shape):
        raise ValueError(f"{kernel}: weight_shape must be (O, C, KH, KW) with positive sizes, got {weight_shape}")
    o, c, kh, kw = (int(s) for s in weight_shape)
    if x_shape[1] != c:
        raise ValueError(f"{kernel}: x has {x_shape[1]} channels, weight_shape {tuple(weight_shape)} expects {c}")
    if stride < 1 or padding < 0 or dilation < 1:
        raise ValueError(f"{kernel}: need stride >= 1, padding >= 0, dilation >= 1; "
                         f"got {stride}, {padding}, {dilation}")
    oh = _conv_out_size(x_shape[2], kh, stride, padding, dilation)
    ow = _conv_out_size(x_shape[3], kw, stride, padding, dilation)
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


def sparse_conv2d(x, indptr, indices, values, weight_shape, stride=1, padding=0, dilation=1,
                  return_cols=False):
    """Conv2d of x (N, C, H, W) float32 with the pruned weight (O, C, KH, KW) given as CSR over
    (O, C*KH*KW). Returns y (N, O, OH, OW) float32, and cols (C*KH*KW, N*OH*OW) if ``return_cols``
    (keep it for ``sparse_conv2d_backward``).

    The batch is folded into the matmul's columns (W @ cols, cols (K, N*OH*OW)) so that the column
    tiles stay long even for small feature maps; the (O, N, OH*OW) result is then transposed to NCHW."""
    _check_dense("sparse_conv2d", "x", x, (4,))
    o, c, kh, kw, oh, ow = _check_conv("sparse_conv2d", x.shape, weight_shape, stride, padding, dilation)
    if len(indptr) != o + 1:
        raise ValueError(f"sparse_conv2d: indptr has length {len(indptr)}, expected O + 1 = {o + 1}")
    indptr, indices, values = _check_csr("sparse_conv2d", indptr, indices, values, c * kh * kw)
    n = x.shape[0]
    cols = im2col(x, kh, kw, stride, padding, dilation)  # (K, N*P), the float conv's layout
    out = np.empty((o, n * oh * ow), dtype=np.float32)  # (O, N*P)
    _matmul_into(out, indptr, indices, values, cols)
    y = np.ascontiguousarray(out.reshape(o, n, oh, ow).transpose(1, 0, 2, 3))  # (N, O, OH, OW)
    return (y, cols) if return_cols else y


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
    dout_t = np.ascontiguousarray(dout.reshape(n, o, oh * ow).transpose(1, 0, 2)).reshape(o, n * oh * ow)
    dvalues = np.empty(len(values), dtype=np.float32)
    csr_sddmm_jit(dvalues, indptr, indices, dout_t, cols)
    if not need_dx:
        return None, dvalues
    indptr_t, indices_t, values_t, _ = csr_transpose(indptr, indices, values, c * kh * kw)
    dcols = np.empty((c * kh * kw, n * oh * ow), dtype=np.float32)  # (K, N*P) = W.T @ dout
    _matmul_into(dcols, indptr_t, indices_t, values_t, dout_t)
    return col2im(dcols, tuple(x_shape), kh, kw, stride, padding, dilation), dvalues
