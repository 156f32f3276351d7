"""Optimizer base: parameter groups, zero_grad, and a state dict of plain arrays and numbers.

``params`` is an iterable of Parameters, or of dicts ``{"params": [...], "weight_decay": 0, ...}``
(parameter groups: e.g. no weight decay on BatchNorm and biases). Unset options take the defaults.
State is keyed by the parameter's position across all groups, as PyTorch does, so a state dict
loads into a freshly built optimizer over the same model.
"""
import numpy as np
from tinycomp_kernels.checks import is_int, is_real


class Optimizer:
    def __init__(self, params, defaults):
        from ..tensor import Tensor

        if isinstance(params, (Tensor, dict)):  # iterating a Tensor would give its rows, not itself
            raise TypeError(f"{type(self).__name__}: params must be an iterable of Tensors or of parameter-group "
                            f"dicts, got a single {type(params).__name__} (wrap it in a list)")
        self.defaults = dict(defaults)
        params = list(params)
        if not params:
            raise ValueError(f"{type(self).__name__}: got an empty parameter list")
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        self.param_groups = []
        seen = set()
        for i, g in enumerate(groups):
            unknown = set(g) - set(defaults) - {"params", "initial_lr", "max_lr", "min_lr", "base_momentum",
                                                "max_momentum"}
            if unknown:
                raise ValueError(f"{type(self).__name__}: parameter group {i} has unknown options {sorted(unknown)}")
            if "params" not in g:
                raise ValueError(f"{type(self).__name__}: parameter group {i} has no 'params'")
            group = {**self.defaults, **g, "params": list(g["params"])}
            self._check_group(i, group)
            for p in group["params"]:
                if id(p) in seen:
                    raise ValueError(f"{type(self).__name__}: a parameter appears in more than one group")
                seen.add(id(p))
            self.param_groups.append(group)
        self.state = {}  # id(param) -> dict of arrays / numbers

    state_keys = {}  # per-parameter state a subclass keeps: name -> "array" (parameter-shaped) or "count"

    def _check_group(self, i, group):
        """Refuse invalid hyperparameters of group ``i`` (the defaults merged in); subclasses add theirs."""
        self._require(i, group, "lr", lambda v: 0 <= v < np.inf, ">= 0 and finite")
        self._require(i, group, "weight_decay", lambda v: 0 <= v < np.inf, ">= 0 and finite")

    def _require(self, i, group, name, ok, what):
        value = group[name]
        if not is_real(value) or not ok(value):  # NaN fails every comparison in ``ok``
            raise ValueError(f"{type(self).__name__}: {name} must be {what}, got {value!r} (parameter group {i})")

    def zero_grad(self):
        for group in self.param_groups:
            for p in group["params"]:
                p.grad = None

    def _indexed_params(self):
        return [p for g in self.param_groups for p in g["params"]]

    def state_dict(self):
        params = self._indexed_params()
        state = {i: {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in self.state[id(p)].items()}
                 for i, p in enumerate(params) if id(p) in self.state}
        groups, start = [], 0
        for g in self.param_groups:
            n = len(g["params"])
            groups.append({**{k: v for k, v in g.items() if k != "params"}, "params": list(range(start, start + n))})
            start += n
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict):
        params = self._indexed_params()
        groups = state_dict["param_groups"]
        if len(groups) != len(self.param_groups) or any(
                len(g["params"]) != len(mine["params"]) for g, mine in zip(groups, self.param_groups)):
            raise ValueError(f"{type(self).__name__}.load_state_dict: the saved parameter groups "
                             f"({[len(g['params']) for g in groups]}) do not match this optimizer's "
                             f"({[len(g['params']) for g in self.param_groups]})")
        name = f"{type(self).__name__}.load_state_dict"
        state = {}
        for i, entry in state_dict["state"].items():
            i = int(i)
            if not 0 <= i < len(params):
                raise ValueError(f"{name}: state for parameter {i}, but the optimizer has {len(params)} parameters")
            p, restored = params[i], {}
            if not isinstance(entry, dict) or set(entry) != set(self.state_keys):
                got = sorted(entry) if isinstance(entry, dict) else type(entry).__name__
                raise ValueError(f"{name}: state of parameter {i} has {got}, {type(self).__name__} keeps "
                                 f"{sorted(self.state_keys)}")
            for k, v in entry.items():
                if self.state_keys[k] == "count":
                    if isinstance(v, np.ndarray) and v.ndim == 0 and v.dtype.kind in "iu":
                        v = v.item()  # a count as a checkpoint stores it
                    if not is_int(v) or v < 0:
                        raise ValueError(f"{name}: state '{k}' of parameter {i} must be an int >= 0, got {v!r}")
                    restored[k] = int(v)
                    continue
                if not isinstance(v, np.ndarray) or v.shape != p.shape:  # a 0-d buffer would broadcast at step()
                    raise ValueError(f"{name}: state '{k}' of parameter {i} must be an array of the parameter's "
                                     f"shape {p.shape}, got {getattr(v, 'shape', type(v).__name__)}")
                if not np.can_cast(v.dtype, p.dtype, casting="same_kind"):
                    raise ValueError(f"{name}: state '{k}' of parameter {i} is {v.dtype}, the parameter {p.dtype}")
                v = v.astype(p.dtype)  # a copy in the parameter's dtype: no float64 buffer in a float32 step
                restored[k] = v
            state[id(p)] = restored
        merged = [{**mine, **{k: v for k, v in g.items() if k != "params"}}
                  for g, mine in zip(groups, self.param_groups)]
        for j, g in enumerate(merged):
            self._check_group(j, g)  # refused before anything changes
        self.state = state
        for g, mine in zip(merged, self.param_groups):
            mine.update(g)

    def step(self):
        raise NotImplementedError
