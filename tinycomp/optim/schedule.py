"""Learning-rate schedules, stepped by the caller (per epoch or per batch, as each says).

Each scheduler sets ``group["lr"]`` (and, for OneCycleLR, ``momentum``) from the step count alone,
so a resumed run gets the same values: its state dict is just the step count.

    StepLR:            lr = base · gamma^floor(step / step_size)
    MultiStepLR:       lr = base · gamma^(number of milestones <= step)
    CosineAnnealingLR: lr = eta_min + (base - eta_min) · (1 + cos(pi · step / T_max)) / 2
    LinearWarmup:      lr = base · (start_factor + (1 - start_factor) · min(step, warmup) / warmup),
                       then the wrapped scheduler (if any) counted from the end of warm-up
    OneCycleLR:        PyTorch's defaults (two phases, cosine annealing):
                       initial = max_lr / div_factor, final = initial / final_div_factor;
                       step 0 .. pct_start·total - 1: lr initial -> max_lr, momentum max -> base;
                       then -> total - 1: lr max_lr -> final, momentum base -> max
"""
import math

from tinycomp_kernels.checks import is_int, is_real


def _require(scheduler, name, value, ok, what):
    """Refuse ``value`` unless ``ok(value)``; NaN fails every comparison, so range tests refuse it."""
    if not ok(value):
        raise ValueError(f"{scheduler}: {name} must be {what}, got {value!r}")


def _is_count(v, least=1):
    """An int (not a bool, not a whole float) >= ``least``: steps are counted, never measured."""
    return is_int(v) and v >= least


def _is_positive(v):
    """A finite real > 0 (NaN and inf refused)."""
    return is_real(v) and 0 < v < math.inf


def _cos_anneal(start, end, pct):
    return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)


class LRScheduler:
    def __init__(self, optimizer):
        self.optimizer = optimizer
        for g in optimizer.param_groups:
            g.setdefault("initial_lr", g["lr"])
        self.base_lrs = [g["initial_lr"] for g in optimizer.param_groups]
        self.last_step = 0
        self._apply()

    def values(self, step):
        """[(lr, momentum or None)] per parameter group at ``step``."""
        raise NotImplementedError

    def _apply(self):
        for g, (lr, momentum) in zip(self.optimizer.param_groups, self.values(self.last_step)):
            g["lr"] = lr
            if momentum is not None:
                if "betas" in g:
                    g["betas"] = (momentum, g["betas"][1])
                else:
                    g["momentum"] = momentum

    def _move_to(self, step):
        """Set the step and apply it; on failure (e.g. OneCycleLR past its end) stay where it was."""
        previous, self.last_step = self.last_step, step
        try:
            self._apply()
        except ValueError:
            self.last_step = previous
            raise

    def step(self):
        self._move_to(self.last_step + 1)

    def get_last_lr(self):
        return [g["lr"] for g in self.optimizer.param_groups]

    def state_dict(self):
        return {"last_step": self.last_step}

    def load_state_dict(self, state):
        step = state.get("last_step") if isinstance(state, dict) else None
        if not is_int(step) or step < 0:
            raise ValueError(f"{type(self).__name__}.load_state_dict: last_step must be an int >= 0, got {step!r}")
        self._move_to(int(step))


class StepLR(LRScheduler):
    def __init__(self, optimizer, step_size, gamma=0.1):
        _require("StepLR", "step_size", step_size, _is_count, "an int >= 1")
        _require("StepLR", "gamma", gamma, _is_positive, "a finite number > 0")
        self.step_size, self.gamma = step_size, gamma
        super().__init__(optimizer)

    def values(self, step):
        return [(b * self.gamma ** (step // self.step_size), None) for b in self.base_lrs]


class MultiStepLR(LRScheduler):
    def __init__(self, optimizer, milestones, gamma=0.1):
        try:
            steps = list(milestones)
        except TypeError:
            raise TypeError(f"MultiStepLR: milestones must be a list of ints, got {milestones!r}") from None
        _require("MultiStepLR", "milestones", steps, lambda ms: all(_is_count(m) for m in ms), "ints >= 1")
        _require("MultiStepLR", "gamma", gamma, _is_positive, "a finite number > 0")
        self.milestones = sorted(int(m) for m in steps)
        self.gamma = gamma
        super().__init__(optimizer)

    def values(self, step):
        passed = sum(1 for m in self.milestones if m <= step)
        return [(b * self.gamma ** passed, None) for b in self.base_lrs]


class CosineAnnealingLR(LRScheduler):
    def __init__(self, optimizer, T_max, eta_min=0.0):
        _require("CosineAnnealingLR", "T_max", T_max, _is_count, "an int >= 1")
        _require("CosineAnnealingLR", "eta_min", eta_min, lambda v: is_real(v) and 0 <= v < math.inf,
                 "a finite number >= 0")
        self.T_max, self.eta_min = T_max, eta_min
        super().__init__(optimizer)

    def values(self, step):
        pct = min(step, self.T_max) / self.T_max
        return [(_cos_anneal(b, self.eta_min, pct), None) for b in self.base_lrs]


class LinearWarmup(LRScheduler):
    def __init__(self, optimizer, warmup_steps, start_factor=0.1, after=None):
        """``after``: a function ``optimizer -> scheduler`` for what follows warm-up (or None)."""
        _require("LinearWarmup", "warmup_steps", warmup_steps, _is_count, "an int >= 1")
        _require("LinearWarmup", "start_factor", start_factor, lambda v: is_real(v) and 0 < v <= 1, "in (0, 1]")
        self.warmup_steps, self.start_factor = warmup_steps, start_factor
        self.after = after(optimizer) if after is not None else None
        super().__init__(optimizer)

    def values(self, step):
        if step < self.warmup_steps or self.after is None:
            f = self.start_factor + (1 - self.start_factor) * min(step, self.warmup_steps) / self.warmup_steps
            return [(b * f, None) for b in self.base_lrs]
        return self.after.values(step - self.warmup_steps)


class OneCycleLR(LRScheduler):
    def __init__(self, optimizer, max_lr, total_steps, pct_start=0.3, div_factor=25.0, final_div_factor=1e4,
                 cycle_momentum=True, base_momentum=0.85, max_momentum=0.95):
        _require("OneCycleLR", "total_steps", total_steps, lambda v: _is_count(v, 2), "an int >= 2")
        _require("OneCycleLR", "pct_start", pct_start, lambda v: is_real(v) and 0 < v < 1, "in (0, 1)")
        self.total_steps, self.cycle_momentum = total_steps, cycle_momentum
        self.phase1_end = float(pct_start * total_steps) - 1
        groups = optimizer.param_groups
        max_lrs = list(max_lr) if isinstance(max_lr, (list, tuple)) else [max_lr] * len(groups)
        if len(max_lrs) != len(groups):
            raise ValueError(f"OneCycleLR: {len(max_lrs)} max_lr values for {len(groups)} parameter groups")
        if not all(_is_positive(v) for v in max_lrs + [div_factor, final_div_factor]) \
                or not (is_real(base_momentum) and is_real(max_momentum) and 0 <= base_momentum <= max_momentum < 1):
            raise ValueError(f"OneCycleLR: need max_lr > 0, div_factor > 0, final_div_factor > 0 (finite) and "
                             f"0 <= base_momentum <= max_momentum < 1, got {max_lr}, {div_factor}, "
                             f"{final_div_factor}, {base_momentum}, {max_momentum}")
        self.lrs = [(m / div_factor, m, m / div_factor / final_div_factor) for m in max_lrs]
        self.momenta = (max_momentum, base_momentum)
        for g, (initial, _, _) in zip(groups, self.lrs):
            g["initial_lr"] = initial
        super().__init__(optimizer)

    def values(self, step):
        if step >= self.total_steps:
            raise ValueError(f"OneCycleLR: stepped {step} times, but total_steps is {self.total_steps}")
        hi_m, lo_m = self.momenta
        out = []
        for initial, peak, final in self.lrs:
            if step <= self.phase1_end:
                # phase 1 may be a single step (pct_start·total = 1, e.g. 4 steps at 25 %): at its peak
                pct = step / self.phase1_end if self.phase1_end > 0 else 1.0
                lr, m = _cos_anneal(initial, peak, pct), _cos_anneal(hi_m, lo_m, pct)
            else:
                pct = (step - self.phase1_end) / (self.total_steps - 1 - self.phase1_end)
                lr, m = _cos_anneal(peak, final, pct), _cos_anneal(lo_m, hi_m, pct)
            out.append((lr, m if self.cycle_momentum else None))
        return out
