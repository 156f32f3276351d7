"""Shift: ShiftNet's zero-FLOP, zero-parameter replacement of a spatial convolution (docs/methods.md,
"Shift"; Wu et al., CVPR 2018).

Channel c of the input is translated by fixed integer offsets (shift_y[c], shift_x[c]) with zeros
entering from outside. The offsets follow ShiftNet's assignment for a k x k neighbourhood with
dilation d: the first k²·⌊C/k²⌋ channels cycle through the k² taps,

    shift_x[c] = d·((c mod k) − ⌊k/2⌋),   shift_y[c] = d·((⌊c/k⌋ mod k) − ⌊k/2⌋),

and the remaining C mod k² channels stay in place. The layer has no parameters, no state (the
offsets follow from its arguments) and executes no multiply-accumulates.
"""
from tinycomp_kernels.checks import is_int

from .. import functional as F
from ..functional.shift import shiftnet_offsets
from ..tensor import Tensor
from .module import Module


class Shift(Module):
    """Shift(channels, kernel_size=3, dilation=1): input (N, channels, H, W) -> output of the same shape."""

    def __init__(self, channels, kernel_size=3, dilation=1):
        super().__init__()
        for name, value in (("channels", channels), ("kernel_size", kernel_size), ("dilation", dilation)):
            if not is_int(value) or value < 1:
                raise ValueError(f"Shift: {name} must be a positive int, got {value!r}")
        self.channels, self.kernel_size, self.dilation = int(channels), int(kernel_size), int(dilation)
        # the same two arrays every call: the kernel's plan cache recognises them by identity
        self.shift_y, self.shift_x = shiftnet_offsets(self.channels, self.kernel_size, self.dilation)

    def forward(self, x):
        if isinstance(x, Tensor) and (x.ndim != 4 or x.shape[1] != self.channels):
            raise ValueError(f"Shift: expected input (N, {self.channels}, H, W), got shape {x.shape}")
        return F.shift2d(x, self.shift_y, self.shift_x)

    def extra_repr(self):
        return f"{self.channels}, kernel_size={self.kernel_size}, dilation={self.dilation}"
