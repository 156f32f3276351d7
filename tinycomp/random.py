"""One seeded generator for every random choice the library makes (init, dropout, shuffling)."""
import numpy as np

_generator = np.random.default_rng()


def manual_seed(seed):
    """Seed tinycomp's generator (weight init, dropout masks, data shuffling defaults)."""
    global _generator
    _generator = np.random.default_rng(seed)
    return _generator


def generator():
    """The library's current ``np.random.Generator``."""
    return _generator
