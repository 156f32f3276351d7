"""2-D pooling over NCHW tensors (PyTorch semantics, ceil_mode=False).

max_pool2d:  y[n, c, oh, ow] = max of the window (padding never wins);  dx: dout routed to the argmax
             pixel of each window (added up where windows overlap).
avg_pool2d:  y = window sum / divisor (KH*KW if count_include_pad, PyTorch's default, else the number
             of in-image pixels);  dx: each window spreads dout / divisor over its in-image pixels.
adaptive_avg_pool2d(x, (OH, OW)):  bin i covers rows floor(i*H/OH) .. ceil((i+1)*H/OH) - 1 (columns
             likewise; PyTorch's bin formula, bins may overlap), y = the bin's mean;  dx: dout / bin
             size over the bin. Output (1, 1) is the global average pool: a mean over (H, W).
"""
import numpy as np
from tinycomp_kernels.checks import is_int
from tinycomp_kernels.im2col import as_pair
from tinycomp_kernels.pool import avg_pool2d_backward, avg_pool2d_forward, max_pool2d_backward, max_pool2d_forward

from ..autograd import Function
from ._util import check_float


class MaxPool2d(Function):
    @staticmethod
    def forward(ctx, x, kernel_size=(2, 2), stride=(2, 2), padding=(0, 0)):
        y, argmax = max_pool2d_forward(x, kernel_size, stride, padding)
        ctx.save_for_backward(argmax)
        ctx.x_shape = x.shape
        return y

    @staticmethod
    def backward(ctx, dout):
        (argmax,) = ctx.saved
        return max_pool2d_backward(dout, argmax, ctx.x_shape) if ctx.needs_input_grad[0] else None


class AvgPool2d(Function):
    @staticmethod
    def forward(ctx, x, kernel_size=(2, 2), stride=(2, 2), padding=(0, 0), count_include_pad=True):
        ctx.x_shape, ctx.params = x.shape, (kernel_size, stride, padding, count_include_pad)
        return avg_pool2d_forward(x, *ctx.params)

    @staticmethod
    def backward(ctx, dout):
        return avg_pool2d_backward(dout, ctx.x_shape, *ctx.params) if ctx.needs_input_grad[0] else None


def _bins(size, out):
    """[(start, end)] of PyTorch's adaptive pooling bins: floor(i*size/out) .. ceil((i+1)*size/out)."""
    return [(i * size // out, -(-(i + 1) * size // out)) for i in range(out)]


class AdaptiveAvgPool2d(Function):
    @staticmethod
    def forward(ctx, x, output_size=(1, 1)):
        N, C, H, W = x.shape
        OH, OW = output_size
        ctx.x_shape, ctx.output_size = x.shape, output_size
        if (OH, OW) == (1, 1):  # global average pool
            return x.mean(axis=(2, 3), keepdims=True)
        y = np.empty((N, C, OH, OW), dtype=x.dtype)
        for i, (h0, h1) in enumerate(_bins(H, OH)):
            for j, (w0, w1) in enumerate(_bins(W, OW)):
                y[:, :, i, j] = x[:, :, h0:h1, w0:w1].mean(axis=(2, 3))
        return y

    @staticmethod
    def backward(ctx, dout):
        if not ctx.needs_input_grad[0]:
            return None
        N, C, H, W = ctx.x_shape
        OH, OW = ctx.output_size
        if (OH, OW) == (1, 1):
            return np.broadcast_to(dout / (H * W), ctx.x_shape).copy()
        dx = np.zeros(ctx.x_shape, dtype=dout.dtype)
        for i, (h0, h1) in enumerate(_bins(H, OH)):
            for j, (w0, w1) in enumerate(_bins(W, OW)):
                dx[:, :, h0:h1, w0:w1] += (dout[:, :, i, j] / ((h1 - h0) * (w1 - w0)))[:, :, None, None]
        return dx


def _check_input(op, x):
    check_float(op, x)
    if x.ndim != 4:
        raise ValueError(f"{op}: input must be 4-D (N, C, H, W), got shape {x.shape}")
    if x.shape[2] == 0 or x.shape[3] == 0:  # windows of padding only: -inf maxima, 0/0 means
        raise ValueError(f"{op}: input height and width must be positive, got shape {x.shape}")


def _pool_args(op, x, kernel_size, stride, padding):
    _check_input(op, x)
    k = as_pair(kernel_size, "kernel_size", op, 1)
    s = k if stride is None else as_pair(stride, "stride", op, 1)
    p = as_pair(padding, "padding", op, 0)
    if p[0] > k[0] // 2 or p[1] > k[1] // 2:
        raise ValueError(f"{op}: padding {p} must be at most half the kernel size {k}; input {x.shape}")
    if x.shape[2] + 2 * p[0] < k[0] or x.shape[3] + 2 * p[1] < k[1]:
        raise ValueError(f"{op}: kernel {k} with padding {p} is larger than the input {x.shape}")
    return k, s, p


def max_pool2d(x, kernel_size, stride=None, padding=0):
    """PyTorch's ``F.max_pool2d`` (stride defaults to kernel_size; no dilation, no ceil_mode)."""
    k, s, p = _pool_args("max_pool2d", x, kernel_size, stride, padding)
    return MaxPool2d.apply(x, kernel_size=k, stride=s, padding=p)


def avg_pool2d(x, kernel_size, stride=None, padding=0, count_include_pad=True):
    """PyTorch's ``F.avg_pool2d`` (stride defaults to kernel_size; no ceil_mode, no divisor_override)."""
    k, s, p = _pool_args("avg_pool2d", x, kernel_size, stride, padding)
    return AvgPool2d.apply(x, kernel_size=k, stride=s, padding=p, count_include_pad=bool(count_include_pad))


def adaptive_avg_pool2d(x, output_size):
    """PyTorch's ``F.adaptive_avg_pool2d``: output_size an int or (OH, OW); None in a pair keeps that side."""
    _check_input("adaptive_avg_pool2d", x)
    if is_int(output_size):
        output_size = (output_size, output_size)
    if (not isinstance(output_size, (tuple, list)) or len(output_size) != 2
            or not all(v is None or is_int(v) for v in output_size)):
        raise ValueError(f"adaptive_avg_pool2d: output_size must be an int or a pair of ints, got {output_size!r}")
    size = tuple(int(x.shape[2 + i] if v is None else v) for i, v in enumerate(output_size))
    if min(size) < 1:
        raise ValueError(f"adaptive_avg_pool2d: output_size must be positive, got {output_size!r}; input {x.shape}")
    return AdaptiveAvgPool2d.apply(x, output_size=size)
