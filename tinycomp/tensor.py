"""Tensor: a NumPy array with a gradient and a record of the op that made it.

``Tensor.data`` is the ``np.ndarray`` (float32 by default; float64 works everywhere, for gradient
checks). ``Tensor.grad`` is an ``np.ndarray`` of the same shape once ``backward()`` has reached it,
accumulated across calls until reset to ``None`` (``Module.zero_grad()`` / ``Optimizer.zero_grad()``).
Operators and methods call the ops of ``tinycomp.functional``.
"""
import math

import numpy as np
from tinycomp_kernels.checks import is_int

from .autograd import as_array, run_backward


class Tensor:
    __array_priority__ = 1000  # so that ndarray <op> Tensor defers to Tensor's reflected operator

    def __init__(self, data, requires_grad=False, dtype=None):
        if isinstance(data, Tensor):
            data = data.data
        self.data = as_array(data, dtype)
        if requires_grad and not np.issubdtype(self.data.dtype, np.floating):
            raise TypeError(f"Tensor: only floating-point tensors can require gradients, got {self.data.dtype}")
        self.requires_grad = bool(requires_grad)
        self.grad = None
        self._node = None  # (Function class, Context, inputs) for tensors made by a recorded op

    # --- array facts -------------------------------------------------------------------------
    @property
    def shape(self):
        return self.data.shape

    @property
    def ndim(self):
        return self.data.ndim

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def is_leaf(self):
        return self._node is None

    def numel(self):
        return self.data.size

    def size(self, dim=None):
        return self.data.shape if dim is None else self.data.shape[dim]

    def __len__(self):
        return len(self.data)

    def numpy(self):
        return self.data

    def item(self):
        return self.data.item()

    def __repr__(self):
        grad = ", requires_grad=True" if self.requires_grad else ""
        return f"Tensor({np.array2string(self.data, precision=4, threshold=20)}, dtype={self.dtype}{grad})"

    # --- autograd ----------------------------------------------------------------------------
    def backward(self, grad=None, retain_graph=False):
        """Accumulate d(self)/d(leaf) · grad into every leaf's ``.grad``."""
        if not self.requires_grad:
            raise RuntimeError("backward(): this tensor does not require grad and has no graph")
        if grad is None:
            if self.data.size != 1:
                raise RuntimeError(f"backward() on a non-scalar tensor of shape {self.shape} needs a "
                                   "gradient argument of the same shape")
            grad = np.ones_like(self.data)
        grad = as_array(grad.data if isinstance(grad, Tensor) else grad, self.dtype)
        if grad.shape != self.shape:
            raise ValueError(f"backward(): gradient shape {grad.shape} != tensor shape {self.shape}")
        run_backward(self, grad, retain_graph)

    def detach(self):
        """The same data (shared, not copied), cut from the graph."""
        return Tensor(self.data)

    def requires_grad_(self, flag=True):
        self.requires_grad = bool(flag)
        return self

    def float(self):
        return _F().cast(self, np.float32)

    def double(self):
        return _F().cast(self, np.float64)

    # --- operators ---------------------------------------------------------------------------
    def __add__(self, other):
        return _F().add(self, other)

    def __radd__(self, other):
        return _F().add(other, self)

    def __sub__(self, other):
        return _F().sub(self, other)

    def __rsub__(self, other):
        return _F().sub(other, self)

    def __mul__(self, other):
        return _F().mul(self, other)

    def __rmul__(self, other):
        return _F().mul(other, self)

    def __truediv__(self, other):
        return _F().div(self, other)

    def __rtruediv__(self, other):
        return _F().div(other, self)

    def __neg__(self):
        return _F().neg(self)

    def __pow__(self, exponent):
        return _F().pow(self, exponent)

    def __matmul__(self, other):
        return _F().matmul(self, other)

    def __rmatmul__(self, other):
        return _F().matmul(other, self)

    def __getitem__(self, index):
        return _F().getitem(self, index)

    # Comparisons give plain boolean arrays: they have no gradient.
    def __lt__(self, other):
        return self.data < _raw(other)

    def __le__(self, other):
        return self.data <= _raw(other)

    def __gt__(self, other):
        return self.data > _raw(other)

    def __ge__(self, other):
        return self.data >= _raw(other)

    # --- methods -----------------------------------------------------------------------------
    # Reductions take NumPy's axis=/keepdims= or PyTorch's dim=/keepdim= (see functional/reduction.py).
    def sum(self, axis=None, keepdims=None, *, dim=None, keepdim=None):
        return _F().sum(self, axis, keepdims, dim=dim, keepdim=keepdim)

    def mean(self, axis=None, keepdims=None, *, dim=None, keepdim=None):
        return _F().mean(self, axis, keepdims, dim=dim, keepdim=keepdim)

    def max(self, axis=None, keepdims=None, *, dim=None, keepdim=None):
        return _F().max(self, axis, keepdims, dim=dim, keepdim=keepdim)

    def reshape(self, *shape):
        return _F().reshape(self, shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape)

    view = reshape

    def flatten(self, start_dim=0, end_dim=-1):
        """Merge the axes start_dim..end_dim (both included) into one, as ``torch.flatten``."""
        shape = self.shape or (1,)  # a 0-d tensor flattens like a 1-d one
        for name, d in (("start_dim", start_dim), ("end_dim", end_dim)):
            if not is_int(d) or not -len(shape) <= d < len(shape):
                raise ValueError(f"flatten: {name} {d!r} out of range for a tensor of shape {self.shape}")
        start, end = start_dim % len(shape), end_dim % len(shape)
        if start > end:
            raise ValueError(f"flatten: start_dim {start_dim} comes after end_dim {end_dim} for shape {self.shape}")
        # the product, not -1: -1 cannot be resolved when another axis has length 0
        return self.reshape(shape[:start] + (math.prod(shape[start:end + 1]),) + shape[end + 1:])

    def permute(self, *axes):
        return _F().permute(self, axes[0] if len(axes) == 1 and isinstance(axes[0], (tuple, list)) else axes)

    def transpose(self, dim0, dim1):
        return _F().transpose(self, dim0, dim1)

    @property
    def T(self):
        return _F().permute(self, tuple(reversed(range(self.ndim))))

    def exp(self):
        return _F().exp(self)

    def log(self):
        return _F().log(self)

    def relu(self):
        return _F().relu(self)

    def sigmoid(self):
        return _F().sigmoid(self)

    def tanh(self):
        return _F().tanh(self)

    def argmax(self, axis=None, keepdims=None, *, dim=None, keepdim=None):
        """Index of the first maximum, an int64 ``np.ndarray`` (no gradient), over all elements or one axis."""
        from .functional._dims import axis_or_dim, keepdims_or_keepdim  # late: functional imports Tensor

        return self.data.argmax(axis=axis_or_dim("argmax", axis, dim),
                                keepdims=keepdims_or_keepdim("argmax", keepdims, keepdim))


def _raw(x):
    return x.data if isinstance(x, Tensor) else x


def _F():
    # functional imports Tensor; the late import breaks the cycle
    from . import functional

    return functional


def tensor(data, requires_grad=False, dtype=None):
    return Tensor(data, requires_grad=requires_grad, dtype=dtype)
