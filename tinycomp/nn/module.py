"""Module: the base of every layer and model, with PyTorch's names and state-dict layout.

Attributes that are Parameters or Modules are registered automatically on assignment; buffers
(non-learnable arrays such as BatchNorm's running statistics) with ``register_buffer``. Names nest
with dots (``layer1.0.bn1.running_mean``), exactly as PyTorch, so weights can move between the two.
"""
from collections import OrderedDict

import numpy as np

from ..tensor import Tensor
from .parameter import Parameter


class Module:
    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)

    # --- registration ------------------------------------------------------------------------
    def __setattr__(self, name, value):
        """Register Parameters and Modules by name. Re-assigning an existing name keeps its position
        (Sequential's order, ``parameters()``'s order, which optimizer state is matched by), as PyTorch does."""
        if "_parameters" not in self.__dict__:
            raise RuntimeError(f"{type(self).__name__}: call super().__init__() before assigning attributes")
        params, modules, buffers = self._parameters, self._modules, self._buffers
        if name in params and not isinstance(value, Parameter) and value is not None:
            raise TypeError(f"{type(self).__name__}.{name} is a Parameter: assign a Parameter (or None), not a "
                            f"{type(value).__name__}; wrap it as nn.Parameter(...) or change .{name}.data in place")
        if name in modules and not isinstance(value, Module) and value is not None:
            raise TypeError(f"{type(self).__name__}.{name} is a child module: assign a Module (or None), not a "
                            f"{type(value).__name__}")
        if isinstance(value, Parameter):
            table = params
        elif isinstance(value, Module):
            table = modules
        elif name in params or name in modules:  # None keeps the slot, as in PyTorch
            table = params if name in params else modules
        elif name in self.__dict__.get("_buffer_names", ()):
            table = buffers
        else:
            for other in (params, buffers, modules):
                other.pop(name, None)
            object.__setattr__(self, name, value)
            return
        for other in (params, buffers, modules):
            if other is not table:
                other.pop(name, None)
        self.__dict__.pop(name, None)  # a plain attribute of that name would shadow the registered one
        table[name] = value  # an existing key keeps its place in the OrderedDict

    def __getattr__(self, name):
        for table in ("_parameters", "_buffers", "_modules"):
            d = self.__dict__.get(table)
            if d is not None and name in d:
                return d[name]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __delattr__(self, name):
        for table in (self._parameters, self._buffers, self._modules):
            if name in table:
                del table[name]
                return
        object.__delattr__(self, name)

    def register_buffer(self, name, array):
        """A named non-learnable array (None allowed) saved in the state dict."""
        self.__dict__.setdefault("_buffer_names", set()).add(name)
        self.__dict__.pop(name, None)
        self._buffers[name] = array

    def register_parameter(self, name, param):
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"register_parameter: {name} must be a Parameter or None, got {type(param).__name__}")
        self._parameters[name] = param

    # --- traversal ---------------------------------------------------------------------------
    def named_children(self):
        return iter(self._modules.items())

    def children(self):
        return (m for _, m in self.named_children())

    def named_modules(self, prefix=""):
        stack = [(prefix, self)]
        while stack:
            name, module = stack.pop()
            yield name, module
            kids = [(f"{name}.{k}" if name else k, m) for k, m in module._modules.items() if m is not None]
            stack.extend(reversed(kids))

    def modules(self):
        return (m for _, m in self.named_modules())

    def named_parameters(self, prefix="", recurse=True):
        modules = self.named_modules(prefix) if recurse else [(prefix, self)]
        seen = set()
        for mname, module in modules:
            for pname, p in module._parameters.items():
                if p is not None and id(p) not in seen:
                    seen.add(id(p))
                    yield (f"{mname}.{pname}" if mname else pname), p

    def parameters(self, recurse=True):
        return (p for _, p in self.named_parameters(recurse=recurse))

    def named_buffers(self, prefix=""):
        for mname, module in self.named_modules(prefix):
            for bname, b in module._buffers.items():
                if b is not None:
                    yield (f"{mname}.{bname}" if mname else bname), b

    def buffers(self):
        return (b for _, b in self.named_buffers())

    def get_submodule(self, target):
        module = self
        for part in target.split(".") if target else []:
            if part not in module._modules:
                raise AttributeError(f"get_submodule: {type(module).__name__} has no child '{part}' (in '{target}')")
            module = module._modules[part]
        return module

    def set_submodule(self, target, new):
        """Replace the child at dotted path ``target`` (e.g. ``layer1.0.conv1``) by ``new``."""
        if not isinstance(new, Module):
            raise TypeError(f"set_submodule: the replacement must be a Module, got {type(new).__name__}")
        parent_name, _, child = target.rpartition(".")
        parent = self.get_submodule(parent_name)
        if child not in parent._modules:
            raise AttributeError(f"set_submodule: {type(parent).__name__} has no child '{child}' (in '{target}')")
        parent._modules[child] = new

    def apply(self, fn):
        for m in list(self.modules()):
            fn(m)
        return self

    # --- modes and gradients -----------------------------------------------------------------
    def train(self, mode=True):
        for m in self.modules():
            object.__setattr__(m, "training", bool(mode))
        return self

    def eval(self):
        return self.train(False)

    def zero_grad(self):
        for p in self.parameters():
            p.grad = None

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} has no forward()")

    # --- state dict --------------------------------------------------------------------------
    def state_dict(self):
        """Ordered name -> np.ndarray (copies) of every parameter and buffer."""
        state = OrderedDict()
        for mname, module in self.named_modules():
            for table in (module._parameters, module._buffers):
                for name, value in table.items():
                    if value is not None:
                        arr = value.data if isinstance(value, Tensor) else value
                        state[f"{mname}.{name}" if mname else name] = np.array(arr, copy=True)
        return state

    def _state_slots(self):
        slots = OrderedDict()
        for mname, module in self.named_modules():
            for table in (module._parameters, module._buffers):
                for name, value in table.items():
                    if value is not None:
                        slots[f"{mname}.{name}" if mname else name] = (module, table, name)
        return slots

    def load_state_dict(self, state, strict=True):
        """Copy arrays from ``state`` into the parameters and buffers. Every entry is checked first,
        so a bad state dict raises (counting the missing, unexpected or mis-shaped entries and naming
        the first five) and leaves the model unchanged."""
        slots = self._state_slots()
        missing = [k for k in slots if k not in state]
        unexpected = [k for k in state if k not in slots]
        problems = []
        for key, (module, table, name) in slots.items():
            if key not in state:
                continue
            current = table[name].data if isinstance(table[name], Tensor) else table[name]
            new = np.asarray(state[key])
            if new.shape != current.shape:
                problems.append(f"{key}: shape {new.shape} in the state dict, {current.shape} in the model")
            elif not np.can_cast(new.dtype, current.dtype, casting="same_kind"):
                problems.append(f"{key}: dtype {new.dtype} cannot be loaded into {current.dtype}")
        if strict:
            problems += [f"missing key: {k}" for k in missing] + [f"unexpected key: {k}" for k in unexpected]
        if problems:  # the first few only: a checkpoint of another model mismatches every tensor
            more = f"; ... and {len(problems) - 5} more" if len(problems) > 5 else ""
            raise ValueError(f"load_state_dict into {type(self).__name__}: {len(problems)} problems: "
                             + "; ".join(problems[:5]) + more)
        for key, (module, table, name) in slots.items():
            if key in state:
                target = table[name].data if isinstance(table[name], Tensor) else table[name]
                np.copyto(target, np.asarray(state[key]), casting="same_kind")
        return missing, unexpected

    # --- printing ----------------------------------------------------------------------------
    def extra_repr(self):
        return ""

    def __repr__(self):
        lines = [f"({name}): " + repr(m).replace("\n", "\n  ") for name, m in self._modules.items()]
        head = f"{type(self).__name__}({self.extra_repr()}"
        return head + ")" if not lines else head + "\n  " + "\n  ".join(lines) + "\n)"
