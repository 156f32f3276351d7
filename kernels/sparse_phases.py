"""A strided pruned convolution as a "same" stride-1 one over the stride phases of its input.

What
    For stride s >= 2, dilation 1 and a kernel K with padding p such that H = s*OH and W = s*OW (the
    stride-2 3x3 pad-1 convs of the CIFAR ResNets on even planes), write the input row read by tap kh
    of output row i as  s*i + kh - p = s*(i + delta) + a,  a = (kh - p) mod s,  delta = (kh - p - a) / s.
    With the phase planes  xq[n, (c*s + a)*s + b, i, j] = x[n, c, s*i + a, s*j + b]  (N, s*s*C, OH, OW),

        y[n, o] = sum over kept (c, kh, kw) of w[o, c, kh, kw] * shift(xq[n, (c*s + a)*s + b], delta_h, delta_w)

    a "same" convolution of xq with a (2r + 1) x (2r + 1) kernel, r = the largest |delta| (1 for 3x3,
    pad 1, stride 2: delta in {-1, 0}), whose entries are W's, moved: column (c, kh, kw) of W's CSR
    becomes column ((c*s + a)*s + b, delta_h + r, delta_w + r) of W'' (O, s*s*C, 2r+1, 2r+1). The
    entries keep their order, so W'' shares W's indptr and values (``phase_csr`` maps the indices
    only), and dvalues of W'' are dvalues of W. A shift that leaves the phase plane reads padding:
    s*(i + delta) + a < 0 or >= H exactly when i + delta < 0 or >= OH.
    Then the forward (``sparse_conv.sparse_conv2d``), dx and dw of ``sparse_train``'s "same" algorithm apply
    unchanged: dx = the phase merge of the "same" input gradient (N, s*s*C, OH, OW) of xq.

Why
    The general path forms the patch matrix (9 rows per channel) and runs col2im for dx; here x is
    rearranged once (``conv_tiles.phase_split_jit``, one pass) and no patch matrix exists.

Reference
    ``phase_merge_ref`` (NumPy strided slices); ``sparse_train``'s tests compare every gradient with the
    dense reference on the strided layers.
"""
import numpy as np
from numba import njit, prange

from .conv_tiles import phase_split_jit
from .im2col import conv_output_size


def _deltas(k, p, s):
    """(a, delta) of every tap of one kernel axis."""
    a = (np.arange(k) - p) % s
    return a, (np.arange(k) - p - a) // s


def phase_fits(x_shape, weight_shape, stride, padding, dilation=1):
    """True when ``phase_csr`` applies: integer stride >= 2, dilation 1, H = s*OH, W = s*OW, and the
    same largest |delta| on both axes (a square "same" kernel over the phase planes)."""
    _, _, kh, kw = weight_shape
    if dilation != 1 or stride < 2:
        return False
    oh, ow = conv_output_size(x_shape[2], x_shape[3], kh, kw, stride, padding, 1)
    if oh < 1 or ow < 1 or x_shape[2] != stride * oh or x_shape[3] != stride * ow:
        return False
    rh, rw = (int(np.abs(_deltas(k, padding, stride)[1]).max()) for k in (kh, kw))
    return rh == rw


def phase_csr(indices, weight_shape, stride, padding):
    """(indices'', weight_shape'') of W'' (module docstring) from W's CSR column indices over
    (O, C*KH*KW); W'' keeps W's indptr and values."""
    o, c, kh, kw = weight_shape
    ah, dh = _deltas(kh, padding, stride)
    aw, dw_ = _deltas(kw, padding, stride)
    r = int(max(np.abs(dh).max(), np.abs(dw_).max()))
    k2 = 2 * r + 1
    col = np.asarray(indices, dtype=np.int64)
    ch, tap = col // (kh * kw), col % (kh * kw)
    th, tw = tap // kw, tap % kw
    phase_ch = (ch * stride + ah[th]) * stride + aw[tw]
    new = (phase_ch * k2 + dh[th] + r) * k2 + dw_[tw] + r
    return new.astype(np.int32), (o, c * stride * stride, k2, k2)


def phase_split(x, stride):
    """xq (N, s*s*C, H/s, W/s) float32: xq[n, (c*s + a)*s + b, i, j] = x[n, c, s*i + a, s*j + b]."""
    n, c, h, w = x.shape
    xq = np.empty((n, c * stride * stride, h // stride, w // stride), dtype=np.float32)
    phase_split_jit(xq, x, 0, 0, stride, stride)
    return xq


def phase_merge_ref(xq, stride):
    """Oracle of the inverse: x[n, c, s*i + a, s*j + b] = xq[n, (c*s + a)*s + b, i, j], by strided slices."""
    n, cq, hq, wq = xq.shape
    c = cq // (stride * stride)
    x = np.empty((n, c, hq * stride, wq * stride), dtype=xq.dtype)
    q = xq.reshape(n, c, stride, stride, hq, wq)
    for a in range(stride):
        for b in range(stride):
            x[:, :, a::stride, b::stride] = q[:, :, a, b]
    return x


def _phase_merge_loops(x, xq, s):
    n_img, c, h, w = x.shape
    hq, wq = xq.shape[2], xq.shape[3]
    for t in prange(n_img * c):
        n = t // c
        ch = t % c
        for a in range(s):
            for i in range(hq):
                row = x[n, ch, i * s + a]
                for b in range(s):
                    src = xq[n, (ch * s + a) * s + b, i]
                    for j in range(wq):
                        row[j * s + b] = src[j]


phase_merge_jit = njit(parallel=True, cache=True)(_phase_merge_loops)


def phase_merge(xq, stride):
    """The inverse of ``phase_split`` (N, s*s*C, OH, OW) -> (N, C, s*OH, s*OW) float32."""
    n, cq, hq, wq = xq.shape
    x = np.empty((n, cq // (stride * stride), hq * stride, wq * stride), dtype=np.float32)
    phase_merge_jit(x, xq, stride)
    return x
