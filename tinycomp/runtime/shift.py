"""The shift of an exported ShiftResNet block: ShiftNet's fixed per-channel offsets, on
``tinycomp_kernels.shift.shift2d`` (docs/methods.md, "Shift").

Stored in the header as {"kernel_size": k, "dilation": d}: the offsets are ShiftNet's assignment
for the channels of the block's first conv (``shiftnet_offsets``), 0 parameters, as the summary
counts them. A thinned block's shift adds {"assignment": A, "kept": [c_0 < c_1 < ...]}, one index
per channel of the first conv: channel i takes the offsets of channel c_i in ShiftNet's assignment
for A channels (those it had before thinning). The block op (``tinycomp.runtime.model``, "shift_block"):

    relu(conv2(shift(relu(conv1(x)))) + sc(x))      conv1, conv2: folded 1×1 convs (conv2 strided)
"""
from tinycomp_kernels.checks import is_int
from tinycomp_kernels.shift import shift2d, shiftnet_offsets

MAX_ASSIGNMENT = 1 << 20  # channels of an assignment: far beyond any zoo width, and two small arrays to build


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
        self.assignment, kept = self._kept(reader, entry, channels, where)
        y, x = shiftnet_offsets(self.assignment, self.kernel_size, self.dilation)
        # the same two arrays every call: the kernel's plan cache recognises them by identity
        self.shift_y, self.shift_x = (y, x) if kept is None else (y[kept], x[kept])

    @staticmethod
    def _kept(reader, entry, channels, where):
        """(assignment, kept indices or None) of a thinned shift's entry; (channels, None) otherwise."""
        if "assignment" not in entry and "kept" not in entry:
            return channels, None
        assignment = reader.field(entry, "assignment", int, where)
        if not channels <= assignment <= MAX_ASSIGNMENT:
            raise reader.error(f"{where}.assignment", f"{assignment!r} is not an int in {channels}..{MAX_ASSIGNMENT} "
                               f"(the first conv's {channels} channels at least)")
        kept = reader.field(entry, "kept", list, where)
        if (len(kept) != channels or not all(is_int(c) and 0 <= c < assignment for c in kept)
                or any(a >= b for a, b in zip(kept, kept[1:]))):
            raise reader.error(f"{where}.kept", f"not {channels} increasing channel indices in 0..{assignment - 1} "
                               f"(one per channel of the first conv)")
        return assignment, kept

    def __call__(self, x):
        return shift2d(x, self.shift_y, self.shift_x)
