"""2-D convolution (PyTorch's conv2d: NCHW input, OIHW weight, cross-correlation, zero padding).

    x (N, C, H, W), weight (O, C/G, KH, KW), bias (O,) or None -> y (N, O, OH, OW)
    OH = (H + 2*ph - dh*(KH-1) - 1) // sh + 1,  OW likewise;  G = groups, g = o // (O/G)
    y[n, o, oh, ow] = b[o] + sum_{ci, kh, kw} w[o, ci, kh, kw] * x[n, g*C/G + ci, oh*sh - ph + kh*dh, ow*sw - pw + kw*dw]
    dx = conv2d's adjoint applied to dout (col2im of wᵀ·dout, or the direct loops)
    dw[o, ci, kh, kw] = sum_{n, oh, ow} dout[n, o, oh, ow] * x[n, g*C/G + ci, ...]
    db[o] = sum_{n, oh, ow} dout[n, o, oh, ow]

The kernels (tinycomp_kernels.conv) pick register-tile implicit GEMM (float32), im2col + BLAS, direct
loops (depthwise) or a plain matmul (1x1) from the shapes and dtype alone, so results are reproducible.
"""
import numpy as np
from tinycomp_kernels.checks import is_int
from tinycomp_kernels.conv import conv2d_backward, conv2d_forward
from tinycomp_kernels.im2col import as_pair, conv_output_size

from ..autograd import Function
from ._util import check_float, check_size


class Conv2d(Function):
    @staticmethod
    def forward(ctx, x, weight, bias, stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1):
        ctx.save_for_backward(x, weight)
        ctx.geometry = (stride, padding, dilation, groups)
        y = conv2d_forward(x, weight, stride, padding, dilation, groups)  # (N, O, OH, OW)
        if bias is not None:
            y += bias.reshape(1, -1, 1, 1)  # (O,) broadcast over (N, O, OH, OW)
        return y

    @staticmethod
    def backward(ctx, dout):
        x, weight = ctx.saved
        need_x, need_w, need_b = ctx.needs_input_grad
        dx = dw = None
        if need_x or need_w:
            dx, dw = conv2d_backward(dout, x, weight, *ctx.geometry, need_input=need_x, need_weight=need_w)
        db = dout.sum(axis=(0, 2, 3)) if need_b else None
        return dx, dw, db


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """PyTorch's ``F.conv2d``: stride / padding / dilation are ints or (h, w) pairs."""
    check_float("conv2d", x)
    check_float("conv2d", weight, "weight")
    shapes = f"input {x.shape}, weight {weight.shape}"
    if x.ndim != 4 or weight.ndim != 4:
        raise ValueError(f"conv2d: input must be 4-D (N, C, H, W) and weight 4-D (O, C/groups, KH, KW); {shapes}")
    if not is_int(groups) or groups < 1:
        raise ValueError(f"conv2d: groups must be a positive int, got {groups!r}")
    if x.shape[1] != weight.shape[1] * groups:
        raise ValueError(f"conv2d: input has {x.shape[1]} channels but weight expects "
                         f"{weight.shape[1] * groups} (groups={groups}); {shapes}")
    if weight.shape[0] % groups:
        raise ValueError(f"conv2d: {weight.shape[0]} output channels are not divisible by groups={groups}; {shapes}")
    if x.dtype != weight.dtype:
        raise TypeError(f"conv2d: input is {x.dtype} but weight is {weight.dtype}; {shapes}")
    s = as_pair(stride, "stride", "conv2d", 1)
    p = as_pair(padding, "padding", "conv2d", 0)
    d = as_pair(dilation, "dilation", "conv2d", 1)
    OH, OW = conv_output_size(x.shape[2], x.shape[3], weight.shape[2], weight.shape[3], s, p, d)
    if OH < 1 or OW < 1:
        raise ValueError(f"conv2d: kernel {weight.shape[2]}x{weight.shape[3]} (dilation {d}, padding {p}) "
                         f"is larger than the padded input; {shapes}")
    N, C, H, W = x.shape
    cause = f"padding {p} (stride {s}) on input {x.shape} with weight {weight.shape}"
    check_size("conv2d", "a padded input", (N, C, H + 2 * p[0], W + 2 * p[1]), cause)
    check_size("conv2d", "an output", (N, weight.shape[0], OH, OW), cause)
    if bias is not None:
        check_float("conv2d", bias, "bias")
        if bias.shape != (weight.shape[0],):
            raise ValueError(f"conv2d: bias has shape {bias.shape}, expected ({weight.shape[0]},); {shapes}")
        if bias.dtype != x.dtype:
            raise TypeError(f"conv2d: bias is {bias.dtype} but input is {x.dtype}")
    return Conv2d.apply(x, weight, bias, stride=s, padding=p, dilation=d, groups=int(groups))
