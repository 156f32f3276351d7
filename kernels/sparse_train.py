"""The two gradients of a pruned convolution with a fixed mask, on the CSR weight (training on the sparse kernels).

What
    The pruned weight W (O, C, KH, KW) as CSR over (O, K = C*KH*KW) (``sparse.csr_from_dense`` with the
    mask, so a kept weight that is 0 keeps its slot), x (N, C, H, W), dout (N, O, OH, OW) = dL/dy for
    y = ``sparse.sparse_conv2d(x, W)``:

        dx        = the adjoint of x -> y applied to dout                   (N, C, H, W)
        dvalues   dvalues[q] = dL/dW[o, c, kh, kw] for kept entry q only    (nnz,), aligned with ``values``

Two algorithms, picked from the geometry alone (``sparse_train_algorithm``):
- "same" (stride 1, dilation 1, "same" padding: every stride-1 3x3 conv of the CIFAR ResNets). No patch
  matrix anywhere.
  dx: the adjoint of a "same" convolution is the "same" convolution of dout with the flipped,
  transposed weight  W'[c, o, a, b] = W[o, c, KH-1-a, KW-1-b]  (C, O, KH, KW), as a sum over taps of
  shifted planes shows (a tap at offset s becomes one at -s). ``flip_transpose_csr`` builds W' as CSR
  over (C, O*KH*KW) by the counting sort of ``sparse.csr_transpose`` (O(nnz + K), the rows of W.T of
  channel c are contiguous: they are row c of W'), and ``sparse.sparse_conv2d`` runs it on dout by its
  direct or implicit path (chosen from the shapes as at inference).
  dw: ``sparse_weight_grad``: one dot product of dout[n, o] with a shifted plane of x[n, c] per kept
  entry and image, cost nnz*N*H*W.
- "im2col" (any other geometry, e.g. the stride-2 layers): the patch matrix cols (K, N*OH*OW) that the
  forward kept (``sparse_conv2d(..., return_cols=True)``) or that is formed here,
  dvalues = ``sparse.csr_sddmm(dout_mat, cols)`` and dx = col2im(W.T @ dout_mat) through the transposed
  CSR (``sparse.csr_matmul_t``), dout_mat = dout as (O, N*OH*OW).

Reference
    ``sparse.sparse_conv2d_backward_ref`` (dense gradients by strided slices + einsum) of the dense
    masked weight, the weight gradient read at the kept positions (``sparse_conv2d_weight_grad_ref``).
"""
import numpy as np

from .im2col import col2im, im2col
from .sparse import (_check_conv, _check_csr, _check_dense, _matmul_into, csr_sddmm_jit, csr_transpose, sparse_conv2d,
                     sparse_conv2d_backward_ref)
from .sparse_direct import direct_fits
from .sparse_weight_grad import _dw_direct_into

TRAIN_ALGORITHMS = ("same", "im2col")


def sparse_train_algorithm(weight_shape, stride=1, padding=0, dilation=1):
    """The gradient algorithm for this geometry (deterministic): "same" for stride 1, dilation 1 and
    "same" padding (odd kernels), else "im2col"."""
    return "same" if direct_fits(tuple(weight_shape), stride, padding, dilation) else "im2col"


def flip_transpose_csr(indptr, indices, values, weight_shape):
    """CSR of the flipped, transposed weight W'[c, o, a, b] = W[o, c, KH-1-a, KW-1-b] over (C, O*KH*KW),
    from W's CSR over (O, C*KH*KW): (indptr', indices', values', perm) with values' = values[perm]
    (keep ``perm`` when only the values change). Within a row the columns are not sorted."""
    o, c, kh, kw = (int(s) for s in weight_shape)
    taps = kh * kw
    indptr_t, indices_t, values_t, perm = csr_transpose(indptr, indices, values, c * taps)  # rows (c, kh, kw)
    row_t = np.repeat(np.arange(c * taps, dtype=np.int64), np.diff(indptr_t))  # W.T's row of each entry
    # entry (o, c, tap) of W is (c, o, taps - 1 - tap) of W': both kernel axes reversed
    indices_f = (indices_t.astype(np.int64) * taps + (taps - 1 - row_t % taps)).astype(np.int32)
    return np.ascontiguousarray(indptr_t[::taps]), indices_f, values_t, perm


def _check_grad(kernel, dout, x_shape, indptr, indices, values, weight_shape, stride, padding, dilation):
    _check_dense(kernel, "dout", dout, (4,))
    if len(x_shape) != 4:
        raise ValueError(f"{kernel}: x_shape must be (N, C, H, W), got {x_shape}")
    o, c, kh, kw, oh, ow = _check_conv(kernel, tuple(x_shape), weight_shape, stride, padding, dilation)
    if dout.shape != (x_shape[0], o, oh, ow):
        raise ValueError(f"{kernel}: dout has shape {dout.shape}, expected {(x_shape[0], o, oh, ow)}")
    if len(indptr) != o + 1:
        raise ValueError(f"{kernel}: indptr has length {len(indptr)}, expected O + 1 = {o + 1}")
    return (o, c, kh, kw, oh, ow) + _check_csr(kernel, indptr, indices, values, c * kh * kw)


def _pick(kernel, algorithm, weight_shape, stride, padding, dilation):
    if algorithm is None:
        return sparse_train_algorithm(weight_shape, stride, padding, dilation)
    if algorithm not in TRAIN_ALGORITHMS:
        raise ValueError(f"{kernel}: algorithm must be None or one of {TRAIN_ALGORITHMS}, got {algorithm!r}")
    if algorithm == "same" and sparse_train_algorithm(weight_shape, stride, padding, dilation) != "same":
        raise ValueError(f"{kernel}: algorithm 'same' needs stride 1, dilation 1 and 'same' padding; got a "
                         f"{weight_shape[2]}x{weight_shape[3]} kernel, stride {stride}, padding {padding}, "
                         f"dilation {dilation}")
    return algorithm


def _dout_mat(dout):
    n, o, oh, ow = dout.shape
    return np.ascontiguousarray(dout.reshape(n, o, oh * ow).transpose(1, 0, 2)).reshape(o, n * oh * ow)  # (O, N*P)


def sparse_conv2d_input_grad_ref(dout, x_shape, weight, stride=1, padding=0, dilation=1):
    """Oracle: dx of the dense conv2d with the (masked, dense) ``weight``."""
    x_stub = np.zeros(x_shape, dtype=np.float32)
    return sparse_conv2d_backward_ref(dout, x_stub, weight, stride, padding, dilation)[0]


def sparse_conv2d_weight_grad_ref(dout, x, indptr, indices, weight_shape, stride=1, padding=0, dilation=1):
    """Oracle: the dense conv2d weight gradient, read at the kept positions of the CSR (float32 (nnz,))."""
    dw = sparse_conv2d_backward_ref(dout, x, np.zeros(weight_shape, np.float32), stride, padding, dilation)[1]
    rows = np.repeat(np.arange(weight_shape[0]), np.diff(indptr))
    return dw.reshape(weight_shape[0], -1)[rows, np.asarray(indices, dtype=np.int64)]


def sparse_conv2d_input_grad(dout, indptr, indices, values, x_shape, weight_shape, stride=1, padding=0, dilation=1,
                             algorithm=None):
    """dx (N, C, H, W) float32 of ``sparse.sparse_conv2d`` for upstream dout (N, O, OH, OW) float32
    C-contiguous and the weight (O, C, KH, KW) as CSR over (O, C*KH*KW). ``algorithm`` (None: from the
    geometry, ``sparse_train_algorithm``) forces "same" or "im2col", for tests and benchmarks."""
    o, c, kh, kw, oh, ow, indptr, indices, values = _check_grad(
        "sparse_conv2d_input_grad", dout, x_shape, indptr, indices, values, weight_shape, stride, padding, dilation)
    algorithm = _pick("sparse_conv2d_input_grad", algorithm, (o, c, kh, kw), stride, padding, dilation)
    if algorithm == "same":  # the "same" conv of dout with W' (C, O, KH, KW): direct or implicit path
        indptr_f, indices_f, values_f, _ = flip_transpose_csr(indptr, indices, values, (o, c, kh, kw))
        return sparse_conv2d(dout, indptr_f, indices_f, values_f, (c, o, kh, kw), 1, padding)
    indptr_t, indices_t, values_t, _ = csr_transpose(indptr, indices, values, c * kh * kw)
    dcols = np.empty((c * kh * kw, x_shape[0] * oh * ow), dtype=np.float32)  # (K, N*P) = W.T @ dout_mat
    _matmul_into(dcols, indptr_t, indices_t, values_t, _dout_mat(dout))
    return col2im(dcols, tuple(int(s) for s in x_shape), kh, kw, stride, padding, dilation)


def sparse_conv2d_weight_grad(dout, x, indptr, indices, weight_shape, stride=1, padding=0, dilation=1, cols=None,
                              algorithm=None):
    """dvalues (nnz,) float32: dL/dW at the kept entries of the CSR (indptr, indices) over (O, C*KH*KW),
    aligned with its values, for x (N, C, H, W) and dout (N, O, OH, OW) float32 C-contiguous; cost
    proportional to nnz. ``cols``: the patch matrix (C*KH*KW, N*OH*OW) of x if the forward kept it
    (used by the "im2col" algorithm only; formed here when None). ``algorithm`` as in
    ``sparse_conv2d_input_grad``."""
    _check_dense("sparse_conv2d_weight_grad", "x", x, (4,))
    placeholder = np.zeros(len(indices), dtype=np.float32)
    o, c, kh, kw, oh, ow, indptr, indices, _ = _check_grad(
        "sparse_conv2d_weight_grad", dout, x.shape, indptr, indices, placeholder, weight_shape, stride, padding,
        dilation)
    algorithm = _pick("sparse_conv2d_weight_grad", algorithm, (o, c, kh, kw), stride, padding, dilation)
    dvalues = np.empty(len(indices), dtype=np.float32)
    if algorithm == "same":
        return _dw_direct_into(dvalues, dout, x, indptr, indices, kh, kw)
    k, n_cols = c * kh * kw, x.shape[0] * oh * ow
    if cols is None:
        cols = im2col(x, kh, kw, stride, padding, dilation)  # (K, N*P)
    else:
        _check_dense("sparse_conv2d_weight_grad", "cols", cols, (2,))
        if cols.shape != (k, n_cols):
            raise ValueError(f"sparse_conv2d_weight_grad: cols has shape {cols.shape}, expected {(k, n_cols)}")
    csr_sddmm_jit(dvalues, indptr, indices, _dout_mat(dout), cols)
    return dvalues


def dense_weight_grad(dvalues, indptr, indices, weight_shape):
    """The (O, C, KH, KW) float32 array that holds dvalues at the kept positions and 0 elsewhere
    (repeated positions add, as in ``sparse.csr_to_dense``; bincount is faster than np.add.at)."""
    o, k = int(weight_shape[0]), int(np.prod(weight_shape[1:]))
    flat = np.repeat(np.arange(o, dtype=np.int64) * k, np.diff(indptr)) + indices  # row-major position
    return np.bincount(flat, weights=dvalues, minlength=o * k).astype(np.float32).reshape(weight_shape)
