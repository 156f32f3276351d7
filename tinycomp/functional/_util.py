"""Argument handling shared by the op wrappers: turning constants into Tensors, checking dtypes and sizes."""
import math

import numpy as np
from tinycomp_kernels.checks import is_int

from ..tensor import Tensor


def operands(op, a, b, core=0):
    """Both operands as Tensors of one floating dtype. A Python number or array constant takes the
    dtype of the Tensor operand (so float64 checks stay float64); two Tensors must already agree.
    Their shapes must broadcast, all but the last ``core`` axes (0 for elementwise ops, 2 for matmul,
    whose matrix axes are checked by the op), so no op passes on NumPy's anonymous broadcast error."""
    if isinstance(a, Tensor) and isinstance(b, Tensor):
        check_float(op, a, "first operand")
        if a.dtype != b.dtype:
            raise TypeError(f"{op}: dtypes differ, {a.dtype} and {b.dtype}; cast one with .float() or .double()")
    elif isinstance(a, Tensor):
        a, b = check_float(op, a, "first operand"), _constant(op, b, a.dtype)
    elif isinstance(b, Tensor):
        a, b = _constant(op, a, b.dtype), check_float(op, b, "second operand")
    else:
        raise TypeError(f"{op}: at least one operand must be a Tensor, got {type(a).__name__} and "
                        f"{type(b).__name__}")
    if a.shape != b.shape:
        _check_broadcast(op, a.shape, b.shape, core)
    return a, b


def _check_broadcast(op, a_shape, b_shape, core):
    batch_a, batch_b = a_shape[:max(len(a_shape) - core, 0)], b_shape[:max(len(b_shape) - core, 0)]
    try:
        np.broadcast_shapes(batch_a, batch_b)
    except ValueError:
        batch = f" (batch axes {batch_a} and {batch_b})" if core else ""
        raise ValueError(f"{op}: shapes {a_shape} and {b_shape} do not broadcast{batch}") from None


def _constant(op, value, dtype):
    """A number or numeric array as a constant Tensor of ``dtype`` (None, strings, objects refused)."""
    arr = np.asarray(value)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{op}: the other operand must be a number or a numeric array, got {type(value).__name__}")
    return Tensor(arr.astype(dtype, copy=False))


# The most elements an op will allocate for a padded input or an output: 8 GiB of float32, far beyond
# any model tinycomp trains, so more is a mistyped argument (a padding of 2**20, say), refused before
# NumPy answers "array is too big", raises MemoryError or starts the machine swapping.
MAX_ELEMENTS = 2**31


def check_size(op, what, shape, cause):
    """Refuse to allocate ``what`` (e.g. "an output") of ``shape`` if it exceeds MAX_ELEMENTS;
    ``cause`` names the argument responsible, with its value, and the shapes involved."""
    n = math.prod(shape)
    if n > MAX_ELEMENTS:
        raise ValueError(f"{op}: {cause} would need {what} of shape {shape} ({n:,} elements), more than "
                         f"MAX_ELEMENTS = 2**31")


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
    items = (values,) if is_int(values) else values
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
