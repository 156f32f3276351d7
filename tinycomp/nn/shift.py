"""Shift: ShiftNet's zero-FLOP, zero-parameter replacement of a spatial convolution (docs/methods.md,
"Shift"; Wu et al., CVPR 2018).

Channel c of the input is translated by fixed integer offsets (shift_y[c], shift_x[c]) with zeros
entering from outside. The offsets follow ShiftNet's assignment for a k x k neighbourhood with
dilation d: the first k²·⌊C/k²⌋ channels cycle through the k² taps,

    shift_x[c] = d·((c mod k) − ⌊k/2⌋),   shift_y[c] = d·((⌊c/k⌋ mod k) − ⌊k/2⌋),

and the remaining C mod k² channels stay in place. A thinned Shift (``Shift.keeping``, made by
structured pruning) holds only some channels of the assignment for ``assignment`` channels, each
with the offsets it has there: recomputing the assignment for fewer channels would move them
differently. The layer has no parameters, no state (the offsets follow from its arguments) and
executes no multiply-accumulates.
"""
import numpy as np
from tinycomp_kernels.checks import is_int

from .. import functional as F
from ..functional.shift import shiftnet_offsets
from ..tensor import Tensor
from .module import Module


class Shift(Module):
    """Shift(channels, kernel_size=3, dilation=1): input (N, channels, H, W) -> output of the same shape.

    ``assignment``: the channel count of the ShiftNet assignment the offsets come from; ``kept``:
    int64 (channels,) indices into it (``arange(channels)`` unless thinned)."""

    def __init__(self, channels, kernel_size=3, dilation=1):
        super().__init__()
        for name, value in (("channels", channels), ("kernel_size", kernel_size), ("dilation", dilation)):
            if not is_int(value) or value < 1:
                raise ValueError(f"Shift: {name} must be a positive int, got {value!r}")
        self.channels, self.kernel_size, self.dilation = int(channels), int(kernel_size), int(dilation)
        self.assignment, self.kept = self.channels, np.arange(self.channels)
        # the same two arrays every call: the kernel's plan cache recognises them by identity
        self.shift_y, self.shift_x = shiftnet_offsets(self.channels, self.kernel_size, self.dilation)

    @classmethod
    def keeping(cls, assignment, kept, kernel_size=3, dilation=1):
        """The channels ``kept`` (increasing indices) of ``Shift(assignment, kernel_size, dilation)``, each
        with its offsets there: the full Shift with the other channels cut out."""
        shift = cls(assignment, kernel_size, dilation)
        indices = np.asarray(kept)
        if (indices.ndim != 1 or not indices.size or indices.dtype.kind not in "iu"
                or indices[0] < 0 or indices[-1] >= shift.channels or np.any(np.diff(indices) <= 0)):
            raise ValueError(f"Shift.keeping: kept must be increasing channel indices in 0..{shift.channels - 1}, "
                             f"got {kept!r}")
        shift.kept = indices.astype(np.int64)
        shift.channels = len(indices)
        shift.shift_y, shift.shift_x = shift.shift_y[shift.kept], shift.shift_x[shift.kept]  # (channels,)
        return shift

    def forward(self, x):
        if isinstance(x, Tensor) and (x.ndim != 4 or x.shape[1] != self.channels):
            raise ValueError(f"Shift: expected input (N, {self.channels}, H, W), got shape {x.shape}")
        return F.shift2d(x, self.shift_y, self.shift_x)

    def extra_repr(self):
        of = f" of {self.assignment}" if self.channels < self.assignment else ""  # a thinned Shift
        return f"{self.channels}{of}, kernel_size={self.kernel_size}, dilation={self.dilation}"
