"""The shift of an exported ShiftResNet block: ShiftNet's fixed per-channel offsets, on
``tinycomp_kernels.shift.shift2d`` (docs/methods.md, "Shift").

Stored in the header as {"kernel_size": k, "dilation": d}: the offsets are ShiftNet's assignment
for the channels of the block's first conv (``shiftnet_offsets``), 0 parameters, as the summary
counts them. The block op (``tinycomp.runtime.model``, "shift_block"):

    relu(conv2(shift(relu(conv1(x)))) + sc(x))      conv1, conv2: folded 1×1 convs (conv2 strided)
"""
from tinycomp_kernels.checks import is_int
from tinycomp_kernels.shift import shift2d, shiftnet_offsets


class Shift:
    """Channel c of ``x`` (N, C, H, W) moved by (shift_y[c], shift_x[c]), zeros entering."""

    path = "shift2d"

    def __init__(self, reader, entry, channels, where):
        if not isinstance(entry, dict):
            raise reader.error(where, f"{entry!r} is not a shift {{'kernel_size': k, 'dilation': d}}")
        self.kernel_size = reader.field(entry, "kernel_size", int, where)
        self.dilation = reader.field(entry, "dilation", int, where)
        for key, v in (("kernel_size", self.kernel_size), ("dilation", self.dilation)):
            if not is_int(v) or not 1 <= v <= 64:  # larger offsets move every channel out of a CIFAR image
                raise reader.error(f"{where}.{key}", f"{v!r} is not an int in 1..64")
        self.channels = channels
        # the same two arrays every call: the kernel's plan cache recognises them by identity
        self.shift_y, self.shift_x = shiftnet_offsets(channels, self.kernel_size, self.dilation)

    def __call__(self, x):
        return shift2d(x, self.shift_y, self.shift_x)
