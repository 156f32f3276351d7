"""The two gradients of a pruned convolution with a fixed mask, on the CSR weight (training on the sparse kernels).

What
    The pruned weight W (O, C, KH, KW) as CSR over (O, K = C*KH*KW) (``csr.csr_from_dense`` with the
    mask, so a kept weight that is 0 keeps its slot), x (N, C, H, W), dout (N, O, OH, OW) = dL/dy for
    y = ``sparse_conv.sparse_conv2d(x, W)``:

        dx        = the adjoint of x -> y applied to dout                   (N, C, H, W)
        dvalues   dvalues[q] = dL/dW[o, c, kh, kw] for kept entry q only    (nnz,), aligned with ``values``

Three algorithms, picked from the geometry alone (``sparse_train_algorithm``):
- "same" (stride 1, dilation 1, "same" padding: every stride-1 3x3 conv of the CIFAR ResNets). No patch
  matrix anywhere.
  dx: the adjoint of a "same" convolution is the "same" convolution of dout with the flipped,
  transposed weight  W'[c, o, a, b] = W[o, c, KH-1-a, KW-1-b]  (C, O, KH, KW), as a sum over taps of
  shifted planes shows (a tap at offset s becomes one at -s). ``flip_transpose_csr`` builds W' as CSR
  over (C, O*KH*KW) by the counting sort of ``csr.csr_transpose`` (O(nnz + K), the rows of W.T of
  channel c are contiguous: they are row c of W'), and ``same_conv2d`` runs it on dout.
  forward and dx: ``same_conv2d``, by the inference runtime's rule: ``sparse_conv.sparse_conv2d``'s
  direct path where ``sparse_direct.direct_beats_tiles`` holds, else the kept-weight tiles
  (``sparse_tiles``; the implicit path took 1.8-2.0x their time).
  dw: ``sparse_weight_grad``: one dot product of dout[n, o] with a shifted plane of x[n, c] per kept
  entry and image, cost nnz*N*H*W.
- "phases" (stride s >= 2 with H = s*OH, W = s*OW: the stride-2 3x3 pad-1 convs on even planes): the
  convolution is a "same" one over the s*s stride phases of x (``sparse_phases``: W's entries moved to
  a kernel over the phase planes, same indptr and values), so the forward, dx (then merged back from
  the phases) and dw run as for "same", on the phase planes that the forward formed once.
- "im2col" (any other geometry): the patch matrix cols (K, N*OH*OW) that the forward kept
  (``sparse_conv2d_train``) or that is formed here, dvalues = ``sparse_matmul.csr_sddmm(dout_mat, cols)`` and
  dx = col2im(W.T @ dout_mat) through the transposed CSR (``sparse_matmul.csr_matmul_t``), dout_mat = dout as
  (O, N*OH*OW).

Reference
    ``sparse_conv.sparse_conv2d_backward_ref`` (dense gradients by strided slices + einsum) of the dense
    masked weight, the weight gradient read at the kept positions (``sparse_conv2d_weight_grad_ref``).
"""
import numpy as np

from .checks import check_float32
from .csr import check_csr, csr_transpose
from .im2col import col2im, im2col
from .sparse_conv import check_conv, sparse_conv2d, sparse_conv2d_backward_ref
from .sparse_direct import direct_beats_tiles, direct_fits
from .sparse_matmul import csr_matmul_into, csr_sddmm_jit
from .sparse_phases import phase_csr, phase_fits, phase_merge, phase_split
from .sparse_tiles import SparseTilesPlan
from .sparse_weight_grad import sparse_conv2d_dw_direct_into

TRAIN_ALGORITHMS = ("same", "phases", "im2col")


def sparse_train_algorithm(x_shape, weight_shape, stride=1, padding=0, dilation=1):
    """The training algorithm for this geometry (deterministic): "same" for stride 1, dilation 1 and
    "same" padding (odd kernels), "phases" when ``sparse_phases.phase_fits``, else "im2col"."""
    if direct_fits(tuple(weight_shape), stride, padding, dilation):
        return "same"
    return "phases" if phase_fits(tuple(x_shape), tuple(weight_shape), stride, padding, dilation) else "im2col"


def same_conv2d(x, indptr, indices, values, weight_shape, padding):
    """The stride-1 "same" sparse convolution that the forward and dx of every training algorithm run
    (x: the input, dout or phase planes): ``sparse_conv2d``'s direct path where
    ``sparse_direct.direct_beats_tiles`` holds (16 channels at 32x32 from about 96.5 %), the kept-weight tiles
    (``sparse_tiles``) otherwise, the inference runtime's rule. CSR over (O, C*KH*KW)."""
    if direct_beats_tiles(len(indices), weight_shape[0], x.shape[0], x.shape[2] * x.shape[3]):
        return sparse_conv2d(x, indptr, indices, values, weight_shape, 1, padding)
    plan = SparseTilesPlan.from_csr(indptr, indices, values, weight_shape, x.shape[2:], 1, padding)
    return plan.run(np.ascontiguousarray(x, dtype=np.float32))


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
    check_float32(kernel, "dout", dout, (4,))
    if len(x_shape) != 4:
        raise ValueError(f"{kernel}: x_shape must be (N, C, H, W), got {x_shape}")
    o, c, kh, kw, oh, ow = check_conv(kernel, tuple(x_shape), weight_shape, stride, padding, dilation)
    if dout.shape != (x_shape[0], o, oh, ow):
        raise ValueError(f"{kernel}: dout has shape {dout.shape}, expected {(x_shape[0], o, oh, ow)}")
    if len(indptr) != o + 1:
        raise ValueError(f"{kernel}: indptr has length {len(indptr)}, expected O + 1 = {o + 1}")
    return (o, c, kh, kw, oh, ow) + check_csr(kernel, indptr, indices, values, c * kh * kw)


def _pick(kernel, algorithm, x_shape, weight_shape, stride, padding, dilation):
    fits = sparse_train_algorithm(x_shape, weight_shape, stride, padding, dilation)
    if algorithm is None:
        return fits
    if algorithm not in TRAIN_ALGORITHMS:
        raise ValueError(f"{kernel}: algorithm must be None or one of {TRAIN_ALGORITHMS}, got {algorithm!r}")
    if algorithm != "im2col" and algorithm != fits:
        need = ("stride 1, dilation 1 and 'same' padding" if algorithm == "same"
                else "stride >= 2, dilation 1 and H = stride*OH, W = stride*OW")
        raise ValueError(f"{kernel}: algorithm {algorithm!r} needs {need}; got input {tuple(x_shape)}, a "
                         f"{weight_shape[2]}x{weight_shape[3]} kernel, stride {stride}, padding {padding}, "
                         f"dilation {dilation}")
    return algorithm


def _phase_geometry(indices, weight_shape, stride, padding):
    """(indices'', weight_shape'', padding'') of the "same" convolution over the phase planes."""
    indices_q, shape_q = phase_csr(indices, weight_shape, stride, padding)
    return indices_q, shape_q, (shape_q[2] - 1) // 2


def sparse_conv2d_train(x, indptr, indices, values, weight_shape, stride=1, padding=0, dilation=1, algorithm=None):
    """The forward of a pruned convolution in training: (y, saved), y (N, O, OH, OW) float32 as
    ``sparse_conv.sparse_conv2d`` computes it, ``saved`` what ``sparse_conv2d_weight_grad`` takes back:
    x ("same"), its phase planes ("phases") or its patch matrix ("im2col")."""
    check_float32("sparse_conv2d_train", "x", x, (4,))
    o, c, kh, kw, _, _ = check_conv("sparse_conv2d_train", x.shape, weight_shape, stride, padding, dilation)
    algorithm = _pick("sparse_conv2d_train", algorithm, x.shape, (o, c, kh, kw), stride, padding, dilation)
    if algorithm == "same":
        return same_conv2d(x, indptr, indices, values, (o, c, kh, kw), padding), x
    if algorithm == "phases":
        xq = phase_split(x, stride)  # (N, s*s*C, OH, OW)
        indices_q, shape_q, pad_q = _phase_geometry(np.asarray(indices), (o, c, kh, kw), stride, padding)
        return same_conv2d(xq, indptr, indices_q, values, shape_q, pad_q), xq
    return sparse_conv2d(x, indptr, indices, values, (o, c, kh, kw), stride, padding, dilation, return_cols=True)


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
    """dx (N, C, H, W) float32 of ``sparse_conv.sparse_conv2d`` for upstream dout (N, O, OH, OW) float32
    C-contiguous and the weight (O, C, KH, KW) as CSR over (O, C*KH*KW). ``algorithm`` (None: from the
    geometry, ``sparse_train_algorithm``) forces "same" or "im2col", for tests and benchmarks."""
    o, c, kh, kw, oh, ow, indptr, indices, values = _check_grad(
        "sparse_conv2d_input_grad", dout, x_shape, indptr, indices, values, weight_shape, stride, padding, dilation)
    algorithm = _pick("sparse_conv2d_input_grad", algorithm, x_shape, (o, c, kh, kw), stride, padding, dilation)
    if algorithm == "phases":  # the "same" input gradient over the phase planes, merged back
        indices_q, shape_q, pad_q = _phase_geometry(indices, (o, c, kh, kw), stride, padding)
        xq_shape = (x_shape[0], shape_q[1], oh, ow)
        return phase_merge(sparse_conv2d_input_grad(dout, indptr, indices_q, values, xq_shape, shape_q, 1, pad_q,
                                                    algorithm="same"), stride)
    if algorithm == "same":  # the "same" conv of dout with W' (C, O, KH, KW): direct path or tiles
        indptr_f, indices_f, values_f, _ = flip_transpose_csr(indptr, indices, values, (o, c, kh, kw))
        return same_conv2d(dout, indptr_f, indices_f, values_f, (c, o, kh, kw), padding)
    indptr_t, indices_t, values_t, _ = csr_transpose(indptr, indices, values, c * kh * kw)
    dcols = np.empty((c * kh * kw, x_shape[0] * oh * ow), dtype=np.float32)  # (K, N*P) = W.T @ dout_mat
    csr_matmul_into(dcols, indptr_t, indices_t, values_t, _dout_mat(dout))
    return col2im(dcols, tuple(int(s) for s in x_shape), kh, kw, stride, padding, dilation)


def sparse_conv2d_weight_grad(dout, x, indptr, indices, weight_shape, stride=1, padding=0, dilation=1, saved=None,
                              algorithm=None):
    """dvalues (nnz,) float32: dL/dW at the kept entries of the CSR (indptr, indices) over (O, C*KH*KW),
    aligned with its values, for x (N, C, H, W) and dout (N, O, OH, OW) float32 C-contiguous; cost
    proportional to nnz. ``saved``: what ``sparse_conv2d_train`` returned beside y (the phase planes of
    x for "phases", its patch matrix (C*KH*KW, N*OH*OW) for "im2col"; formed here when None).
    ``algorithm`` as in ``sparse_conv2d_input_grad``."""
    check_float32("sparse_conv2d_weight_grad", "x", x, (4,))
    placeholder = np.zeros(len(indices), dtype=np.float32)
    o, c, kh, kw, oh, ow, indptr, indices, _ = _check_grad(
        "sparse_conv2d_weight_grad", dout, x.shape, indptr, indices, placeholder, weight_shape, stride, padding,
        dilation)
    algorithm = _pick("sparse_conv2d_weight_grad", algorithm, x.shape, (o, c, kh, kw), stride, padding, dilation)
    dvalues = np.empty(len(indices), dtype=np.float32)
    if algorithm == "same":
        return sparse_conv2d_dw_direct_into(dvalues, dout, x, indptr, indices, kh, kw)
    if algorithm == "phases":
        indices_q, shape_q, _ = _phase_geometry(indices, (o, c, kh, kw), stride, padding)
        xq_shape = (x.shape[0], shape_q[1], oh, ow)
        if saved is None:
            saved = phase_split(x, stride)
        elif not (isinstance(saved, np.ndarray) and saved.shape == xq_shape and saved.dtype == np.float32
                  and saved.flags.c_contiguous):
            raise ValueError(f"sparse_conv2d_weight_grad: saved must be the float32 C-contiguous phase planes of x, "
                             f"shape {xq_shape}, got {getattr(saved, 'dtype', type(saved).__name__)} "
                             f"{getattr(saved, 'shape', '')}")
        return sparse_conv2d_dw_direct_into(dvalues, dout, saved, indptr, indices_q, shape_q[2], shape_q[3])
    k, n_cols = c * kh * kw, x.shape[0] * oh * ow
    if saved is None:
        saved = im2col(x, kh, kw, stride, padding, dilation)  # (K, N*P)
    else:
        check_float32("sparse_conv2d_weight_grad", "saved", saved, (2,))
        if saved.shape != (k, n_cols):
            raise ValueError(f"sparse_conv2d_weight_grad: saved (the patch matrix) has shape {saved.shape}, "
                             f"expected {(k, n_cols)}")
    csr_sddmm_jit(dvalues, indptr, indices, _dout_mat(dout), saved)
    return dvalues


def dense_weight_grad(dvalues, indptr, indices, weight_shape):
    """The (O, C, KH, KW) float32 array that holds dvalues at the kept positions and 0 elsewhere
    (repeated positions add, as in ``csr.csr_to_dense``; bincount is faster than np.add.at)."""
    o, k = int(weight_shape[0]), int(np.prod(weight_shape[1:]))
    flat = np.repeat(np.arange(o, dtype=np.int64) * k, np.diff(indptr)) + indices  # row-major position
    return np.bincount(flat, weights=dvalues, minlength=o * k).astype(np.float32).reshape(weight_shape)
