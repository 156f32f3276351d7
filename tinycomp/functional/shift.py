"""Shift (Wu et al., CVPR 2018; docs/methods.md, "Shift"): a per-channel integer translation, zero fill.

    x (N, C, H, W), shift_y, shift_x integer (C,) -> y (N, C, H, W)
    y[n, c, h, w] = x[n, c, h + shift_y[c], w + shift_x[c]]   inside the image, else 0
    dx = the opposite shift of dout: dx[n, c, h, w] = dout[n, c, h - shift_y[c], w - shift_x[c]] (0 outside)

The offsets are fixed integers, not learned: they get no gradient. ``shiftnet_offsets`` gives
ShiftNet's assignment for a k x k neighbourhood with dilation d (the kernel module's docstring).
"""
from tinycomp_kernels import shift as K

from ..autograd import Function
from ..tensor import Tensor
from ._util import check_float


class Shift2d(Function):
    @staticmethod
    def forward(ctx, x, shift_y, shift_x):
        ctx.offsets = (shift_y, shift_x)
        return K.shift2d(x, shift_y, shift_x)

    @staticmethod
    def backward(ctx, dout):
        dx = K.shift2d_backward(dout, *ctx.offsets) if ctx.needs_input_grad[0] else None
        return dx, None, None


def shift2d(x, shift_y, shift_x):
    """Shift channel c of ``x`` (N, C, H, W) by (shift_y[c], shift_x[c]) with zero fill; offsets are
    integer arrays of length C (checked by the kernel). Differentiable in ``x`` only."""
    check_float("shift2d", x)
    for name, offsets in (("shift_y", shift_y), ("shift_x", shift_x)):
        if isinstance(offsets, Tensor):
            raise TypeError(f"shift2d: {name} must be an integer array, not a Tensor (offsets get no gradient)")
    return Shift2d.apply(x, shift_y, shift_x)


def shiftnet_offsets(channels, kernel_size=3, dilation=1):
    """ShiftNet's fixed offsets (shift_y, shift_x), two int64 arrays of length ``channels``: the first
    k²·⌊C/k²⌋ channels cycle through the k x k (dilated) neighbourhood, the rest stay in place."""
    return K.shiftnet_offsets(channels, k=kernel_size, dilation=dilation)
