"""PyTorch's names for axis arguments, accepted beside NumPy's: ``dim`` for ``axis``, ``keepdim`` for
``keepdims``. Where the concept is the same both spellings work; given both, the op raises a TypeError
naming the two instead of silently choosing one. ``None`` means "not given"."""


def _one_of(op, numpy_name, numpy_value, torch_name, torch_value, default):
    if numpy_value is not None and torch_value is not None:
        raise TypeError(f"{op}: got both {numpy_name}= and {torch_name}= (NumPy's and PyTorch's name for the "
                        f"same argument): pass one")
    if numpy_value is not None:
        return numpy_value
    return default if torch_value is None else torch_value


def axis_or_dim(op, axis, dim, default=None):
    return _one_of(op, "axis", axis, "dim", dim, default)


def keepdims_or_keepdim(op, keepdims, keepdim):
    return bool(_one_of(op, "keepdims", keepdims, "keepdim", keepdim, False))
