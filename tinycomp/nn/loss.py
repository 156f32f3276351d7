"""Loss modules: PyTorch's names over the functional losses (``functional/loss.py`` has the math)."""
from .. import functional as F
from .module import Module


class CrossEntropyLoss(Module):
    """``F.cross_entropy(logits, target, label_smoothing)``: logits (N, C), integer targets (N,), the mean
    over N. Only ``reduction='mean'`` exists; PyTorch's ``weight`` and ``ignore_index`` do not."""

    def __init__(self, *, reduction="mean", label_smoothing=0.0):
        super().__init__()
        if reduction != "mean":
            raise ValueError(f"CrossEntropyLoss: reduction={reduction!r} is not supported; only 'mean' is "
                             f"(the mean over the batch, PyTorch's default)")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"CrossEntropyLoss: label_smoothing must be in [0, 1), got {label_smoothing}")
        self.reduction, self.label_smoothing = reduction, float(label_smoothing)

    def forward(self, logits, target):
        return F.cross_entropy(logits, target, self.label_smoothing)

    def extra_repr(self):
        return f"reduction={self.reduction!r}, label_smoothing={self.label_smoothing}"
