"""Argument handling shared by the op wrappers: turning constants into Tensors, checking dtypes."""
import numpy as np
from tinycomp_kernels.checks import is_int

from ..tensor import Tensor


def operands(op, a, b):
    """Both operands as Tensors of one floating dtype. A Python number or array constant takes the
    dtype of the Tensor operand (so float64 checks stay float64); two Tensors must already agree."""
    if isinstance(a, Tensor) and isinstance(b, Tensor):
        check_float(op, a, "first operand")
        if a.dtype != b.dtype:
            raise TypeError(f"{op}: dtypes differ, {a.dtype} and {b.dtype}; cast one with .float() or .double()")
        return a, b
    if isinstance(a, Tensor):
        return check_float(op, a, "first operand"), _constant(op, b, a.dtype)
    if isinstance(b, Tensor):
        return _constant(op, a, b.dtype), check_float(op, b, "second operand")
    raise TypeError(f"{op}: at least one operand must be a Tensor, got {type(a).__name__} and {type(b).__name__}")


def _constant(op, value, dtype):
    """A number or numeric array as a constant Tensor of ``dtype`` (None, strings, objects refused)."""
    arr = np.asarray(value)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{op}: the other operand must be a number or a numeric array, got {type(value).__name__}")
    return Tensor(arr.astype(dtype, copy=False))


def check_tensor(op, x, name="input"):
    if not isinstance(x, Tensor):
        raise TypeError(f"{op}: {name} must be a Tensor, got {type(x).__name__}")
    return x


def check_float(op, x, name="input"):
    check_tensor(op, x, name)
    if not np.issubdtype(x.dtype, np.floating):
        raise TypeError(f"{op}: {name} must be floating point, got {x.dtype}")
    return x


def int_tuple(op, name, values):
    """An int or an iterable of ints as a tuple of Python ints; floats and bools are refused, not truncated."""
    items = (values,) if isinstance(values, (int, np.integer)) else values
    try:
        items = tuple(items)
    except TypeError:
        raise TypeError(f"{op}: {name} must be an int or a sequence of ints, got {values!r}") from None
    if not all(is_int(v) for v in items):
        raise TypeError(f"{op}: {name} must be ints, got {values!r}")
    return tuple(int(v) for v in items)


def normalize_axis(op, axis, ndim):
    """``axis`` (None, int or tuple) as a sorted tuple of non-negative axes, checked against ``ndim``."""
    if axis is None:
        return tuple(range(ndim))
    axes = int_tuple(op, "axis", axis)
    out = []
    for a in axes:
        if not -ndim <= a < ndim:
            raise ValueError(f"{op}: axis {a} is out of range for a tensor with {ndim} dimensions")
        out.append(a % ndim)
    if len(set(out)) != len(out):
        raise ValueError(f"{op}: repeated axis in {axis!r}")
    return tuple(sorted(out))
