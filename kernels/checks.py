"""Small input checks shared by the kernel wrappers (Numba does no bounds checking, so they matter)."""
import numpy as np


def is_int(v):
    """A Python or NumPy integer, not a bool."""
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def is_real(v):
    """A Python or NumPy integer or float, not a bool (NaN included: range tests written as
    ``lo <= v < hi`` refuse it)."""
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))


def non_decreasing(a):
    """a[i] <= a[i + 1] everywhere. Compared, never differenced: np.diff wraps around for unsigned
    dtypes and overflows for huge int64 values, and a wrapped difference would pass a ``>= 0`` test."""
    return bool(np.all(a[1:] >= a[:-1]))
