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


def check_float32(kernel, name, arr, ndims):
    """Refuse, naming ``kernel`` and ``name``, anything but a C-contiguous float32 numpy array with one
    of the dimension counts ``ndims`` (the kernels index raw memory, so a view's strides would be lost)."""
    if not isinstance(arr, np.ndarray):
        raise TypeError(f"{kernel}: {name} must be a numpy array, got {type(arr).__name__}")
    if arr.ndim not in ndims:
        raise ValueError(f"{kernel}: {name} must have {' or '.join(map(str, ndims))} dimensions, got shape {arr.shape}")
    if arr.dtype != np.float32:
        raise TypeError(f"{kernel}: {name} must be float32, got {arr.dtype}")
    if not arr.flags.c_contiguous:
        raise ValueError(f"{kernel}: {name} must be C-contiguous (use np.ascontiguousarray)")
