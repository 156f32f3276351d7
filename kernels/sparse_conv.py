"""Pruned 2-D convolution on the CSR kernels: forward (three paths) and the patch-matrix backward.

The math
    The weight (O, C, KH, KW) is pruned and stored as CSR over W = weight.reshape(O, C*KH*KW)
    (``kernels/csr.py``), x (N, C, H, W) float32:

        y = W @ cols,  cols = im2col(x) (C*KH*KW, N*OH*OW)            y as (N, O, OH, OW)
        backward:  dx = col2im(W.T @ dout_mat);  dvalues = csr_sddmm(dout_mat, cols)

    with dout_mat = dout as (O, N*OH*OW). At inference with stride 1, dilation 1 and "same" padding
    the product runs without the patch matrix: ``sparse_implicit`` (the patch rows written from x into
    the matmul's band buffer) or, for few kept weights per output channel, ``sparse_direct`` (shifted
    planes); ``sparse_conv2d_algorithm`` picks the path from the shapes. Training on stride-1 "same" and
    stride-2 layers has its own gradients without a patch matrix (``sparse_train``).

Conventions
    NCHW, cross-correlation like PyTorch, zero padding, weight (O, C, KH, KW) flattened in (c, kh, kw)
    order. im2col/col2im are the float conv's (``kernels/im2col.py``): cols (C*KH*KW, N*OH*OW) folds
    the batch into the matmul's columns, so the column tiles stay long even for 8x8 feature maps.
    Why the im2col path works in chunks of images: docs/kernels/sparse-matmul.md.

Reference
    ``sparse_conv2d_ref``: numpy.lib.stride_tricks.sliding_window_view + einsum on the dense masked
    weight; ``sparse_conv2d_backward_ref``: strided-slice scatter + einsum.
"""
import numpy as np

from .checks import check_float32, is_int
from .csr import auto_k_block, check_csr, csr_block_unchecked, csr_transpose
from .im2col import col2im, conv_output_size, im2col
from .sparse_direct import direct_fits, direct_pays, sparse_conv2d_direct_into
from .sparse_implicit import sparse_conv2d_implicit_into
from .sparse_matmul import csr_matmul_blocked_into, csr_matmul_into, csr_sddmm_jit


def check_conv(kernel, x_shape, weight_shape, stride, padding, dilation):
    """Validate the geometry of a sparse convolution; return (O, C, KH, KW, OH, OW)."""
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
      for 256 images of 64x8x8) makes a round trip to memory (figures: docs/kernels/sparse-matmul.md).
    - "implicit" (``kernels/sparse_implicit.py``): the same product with the patch rows written from
      x into the kernel's L2 buffer; no patch matrix, no transpose. Inference with stride 1, dilation 1
      and "same" padding only.
    - "direct" (``kernels/sparse_direct.py``): each kept weight adds a shifted input plane; for few
      kept weights per output channel on large planes. Same geometry as "implicit"."""
    check_float32("sparse_conv2d", "x", x, (4,))
    o, c, kh, kw, oh, ow = check_conv("sparse_conv2d", x.shape, weight_shape, stride, padding, dilation)
    if len(indptr) != o + 1:
        raise ValueError(f"sparse_conv2d: indptr has length {len(indptr)}, expected O + 1 = {o + 1}")
    indptr, indices, values = check_csr("sparse_conv2d", indptr, indices, values, c * kh * kw)
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
        return sparse_conv2d_direct_into(y, x, indptr, indices, values, kh, kw)
    k, p = c * kh * kw, oh * ow
    # the blocked copy of W only for a non-empty batch: its tables grow with K even for no product
    bw = csr_block_unchecked(indptr, indices, values, k, auto_k_block(k), with_perm=False) if n else None
    if algorithm == "implicit":
        return sparse_conv2d_implicit_into(y, x, bw, kh, kw)
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
        out = csr_matmul_blocked_into(out_buf[:o * nc * p].reshape(o, nc * p), bw, cols)
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
    check_float32("sparse_conv2d_backward", "dout", dout, (4,))
    check_float32("sparse_conv2d_backward", "cols", cols, (2,))
    if len(x_shape) != 4:
        raise ValueError(f"sparse_conv2d_backward: x_shape must be (N, C, H, W), got {x_shape}")
    o, c, kh, kw, oh, ow = check_conv("sparse_conv2d_backward", x_shape, weight_shape, stride, padding,
                                       dilation)
    n = x_shape[0]
    if dout.shape != (n, o, oh, ow):
        raise ValueError(f"sparse_conv2d_backward: dout has shape {dout.shape}, expected {(n, o, oh, ow)}")
    if cols.shape != (c * kh * kw, n * oh * ow):
        raise ValueError(f"sparse_conv2d_backward: cols has shape {cols.shape}, "
                         f"expected {(c * kh * kw, n * oh * ow)}")
    if len(indptr) != o + 1:
        raise ValueError(f"sparse_conv2d_backward: indptr has length {len(indptr)}, expected O + 1 = {o + 1}")
    indptr, indices, values = check_csr("sparse_conv2d_backward", indptr, indices, values, c * kh * kw)
    dout_t = np.ascontiguousarray(dout.reshape(n, o, oh * ow).transpose(1, 0, 2)).reshape(o, n * oh * ow)  # (O, N*P)
    dvalues = np.empty(len(values), dtype=np.float32)
    csr_sddmm_jit(dvalues, indptr, indices, dout_t, cols)
    if not need_dx:
        return None, dvalues
    indptr_t, indices_t, values_t, _ = csr_transpose(indptr, indices, values, c * kh * kw)
    dcols = np.empty((c * kh * kw, n * oh * ow), dtype=np.float32)  # (K, N*P) = W.T @ dout
    csr_matmul_into(dcols, indptr_t, indices_t, values_t, dout_t)
    return col2im(dcols, tuple(x_shape), kh, kw, stride, padding, dilation), dvalues
