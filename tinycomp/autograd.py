"""The autograd engine: Function, Context, no_grad and the backward pass.

An op is a ``Function`` subclass with two static methods on plain NumPy arrays::

    forward(ctx, *arrays, **params)  -> ndarray
    backward(ctx, dout)               -> one gradient (ndarray or None) per positional input

``Function.apply`` unwraps Tensors, runs ``forward`` and, when gradients are on and some input
requires them, records the node (function, context, parent tensors) on the output Tensor.

``backward`` orders the graph with an iterative depth-first search (no recursion, so a
10,000-op chain is fine), walks it from the output to the leaves and *adds* every contribution:
a tensor used twice gets both. Accumulation happens here and nowhere else.
"""
import time

import numpy as np

_grad_enabled = True
_profile = None  # {(op name, "forward" | "backward"): [calls, seconds]} while a profile() is active


def is_grad_enabled():
    return _grad_enabled


class no_grad:
    """Context manager (and decorator) that records no graph: for evaluation and weight updates."""

    def __enter__(self):
        global _grad_enabled
        self._previous = _grad_enabled
        _grad_enabled = False

    def __exit__(self, *exc):
        global _grad_enabled
        _grad_enabled = self._previous
        return False

    def __call__(self, fn):
        def wrapper(*args, **kwargs):
            with no_grad():
                return fn(*args, **kwargs)

        wrapper.__name__, wrapper.__doc__ = fn.__name__, fn.__doc__
        return wrapper


class Context:
    """What forward leaves for backward: saved arrays, attributes, and which inputs need a gradient."""

    def __init__(self, needs_input_grad):
        self.needs_input_grad = needs_input_grad
        self.saved = ()

    def save_for_backward(self, *arrays):
        self.saved = arrays


class Function:
    """Base class of every op. Subclasses define ``forward`` and ``backward`` as static methods."""

    @staticmethod
    def forward(ctx, *args, **params):
        raise NotImplementedError

    @staticmethod
    def backward(ctx, dout):
        raise NotImplementedError

    @classmethod
    def apply(cls, *inputs, **params):
        from .tensor import Tensor

        needs = tuple(isinstance(t, Tensor) and t.requires_grad for t in inputs)
        ctx = Context(needs)
        arrays = [t.data if isinstance(t, Tensor) else t for t in inputs]
        if _profile is None:
            out = cls.forward(ctx, *arrays, **params)
        else:
            t0 = time.perf_counter()
            out = cls.forward(ctx, *arrays, **params)
            _record(cls.__name__, "forward", time.perf_counter() - t0)
        record = _grad_enabled and any(needs)
        result = Tensor(out, requires_grad=record)
        if record:
            result._node = (cls, ctx, inputs)
        return result


class profile:
    """Context manager timing every op's forward and backward by op name::

        with tinycomp.autograd.profile() as prof:
            loss = F.cross_entropy(model(x), y); loss.backward()
        prof.table()   # {(op, "forward" | "backward"): [calls, seconds]}
    """

    def __enter__(self):
        global _profile
        self._previous, self.records = _profile, {}
        _profile = self.records
        return self

    def __exit__(self, *exc):
        global _profile
        _profile = self._previous
        return False

    def table(self):
        return dict(sorted(self.records.items(), key=lambda kv: -kv[1][1]))


def _record(name, phase, seconds):
    entry = _profile.setdefault((name, phase), [0, 0.0])
    entry[0] += 1
    entry[1] += seconds


def unbroadcast(grad, shape):
    """Sum ``grad`` down to ``shape``: the backward of NumPy broadcasting."""
    if grad.shape == tuple(shape):
        return grad
    extra = grad.ndim - len(shape)
    if extra > 0:
        grad = grad.sum(axis=tuple(range(extra)))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    if axes:
        grad = grad.sum(axis=axes, keepdims=True)
    return grad.reshape(shape)


def _topological_order(root):
    """Tensors reachable from ``root`` through recorded nodes, every input before its users."""
    order, visited, stack = [], set(), [(root, False)]
    while stack:
        tensor, expanded = stack.pop()
        if expanded:
            order.append(tensor)
            continue
        if id(tensor) in visited:
            continue
        visited.add(id(tensor))
        stack.append((tensor, True))
        if tensor._node is not None and tensor._node is not _FREED:
            for parent in tensor._node[2]:
                if getattr(parent, "requires_grad", False) and id(parent) not in visited:
                    stack.append((parent, False))
    return order


_FREED = ("freed",)  # marks a non-leaf whose graph backward() has released (so it is no leaf)


def run_backward(root, grad, retain_graph=False):
    """Propagate ``grad`` (dL/droot) to every leaf tensor that requires a gradient."""
    grads = {id(root): grad}
    for tensor in reversed(_topological_order(root)):
        g = grads.pop(id(tensor), None)
        if g is None:
            continue
        if tensor._node is _FREED:
            raise RuntimeError("backward() through a graph a second time: its saved arrays were freed by the "
                               "first backward(); pass retain_graph=True to that one")
        if tensor._node is None:  # a leaf: accumulate into .grad, as PyTorch does
            tensor.grad = g.copy() if tensor.grad is None else tensor.grad + g
            continue
        fn, ctx, inputs = tensor._node
        if _profile is None:
            input_grads = fn.backward(ctx, g)
        else:
            t0 = time.perf_counter()
            input_grads = fn.backward(ctx, g)
            _record(fn.__name__, "backward", time.perf_counter() - t0)
        if not isinstance(input_grads, tuple):
            input_grads = (input_grads,)
        if len(input_grads) != len(inputs):
            raise RuntimeError(f"{fn.__name__}.backward returned {len(input_grads)} gradients "
                               f"for {len(inputs)} inputs")
        for parent, pg, need in zip(inputs, input_grads, ctx.needs_input_grad):
            if not need or pg is None:
                continue
            if pg.shape != parent.shape:
                raise RuntimeError(f"{fn.__name__}.backward gave a gradient of shape {pg.shape} "
                                   f"for an input of shape {parent.shape}")
            pg = pg.astype(parent.dtype, copy=False)
            key = id(parent)
            grads[key] = pg if key not in grads else grads[key] + pg
        if not retain_graph:
            tensor._node = _FREED


def as_array(value, dtype=None):
    """NumPy array of ``value``; Python floats become float32 like PyTorch's default dtype.

    A NumPy array or scalar keeps its dtype: an op whose forward returns a scalar (``np.matmul`` of two
    vectors, ``a ** p`` on a 0-d array) must stay float64 in a gradient check."""
    if isinstance(value, (np.ndarray, np.generic)):
        value = np.asarray(value)
        return value if dtype is None else value.astype(dtype, copy=False)
    arr = np.asarray(value)
    if dtype is not None:
        return arr.astype(dtype, copy=False)
    if arr.dtype == np.float64:
        return arr.astype(np.float32)
    return arr
