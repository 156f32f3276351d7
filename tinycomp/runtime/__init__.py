"""Inference only, no autograd: load a model written by ``tinycomp.export`` and run it on the kernels.

    model = tinycomp.runtime.load("model.npz")
    logits = model(x)            # x: normalised float32 (N, 3, H, W); model.preprocess(uint8 pixels)
    print(model.describe())      # each layer's kind and the kernel it runs on
    logits, seconds = model.profile(x, repeats=5)   # median seconds per op ("conv1", "layer1.0", ...)

Formats and checks: ``format.py``; layers and kernels: ``layers.py``; the network's ops: ``model.py``;
per-layer storage and MACs of a loaded file: ``summary.py``.
"""
from .format import FORMAT, FormatError, Reader
from .model import Model

__all__ = ["FORMAT", "FormatError", "Model", "load"]


def load(path):
    """The exported model in ``path`` as a ``Model``; FormatError (naming the file and the entry) if
    the file is unreadable, of another format version, or inconsistent with its header."""
    return Model(Reader(path))
