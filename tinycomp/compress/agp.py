"""AGP, automated gradual pruning (Zhu & Gupta 2017, docs/methods.md "Pruning"): the sparsity
schedule and the steps at which a mask is recomputed.

    s_t = s_i                                          t < t0
    s_t = s_f + (s_i - s_f) · (1 - (t - t0) / span)^3  t0 <= t <= t0 + span
    s_t = s_f                                          t > t0 + span        (span = end - start)

Steps count training batches from 0 over the whole run, as the training loop's ``before_step`` hook
passes them; a span of 0 jumps from s_i to s_f at t0. The mask is recomputed at t0, every ``every``
steps after it and at the end step t0 + span, then kept fixed. Everything here is a pure function of
its arguments, so a resumed run recomputes exactly what an uninterrupted one did.
"""
import math
import numbers


def agp_sparsity(step, final, start_step, end_step, initial=0.0):
    """The AGP target sparsity at ``step`` (see the module docstring), in [initial, final]."""
    check_sparsity("agp_sparsity: final", final)
    check_sparsity("agp_sparsity: initial", initial)
    if initial > final:
        raise ValueError(f"agp_sparsity: initial {initial!r} is above final {final!r}; the sparsity only grows")
    start_step, end_step = check_steps("agp_sparsity", start_step, end_step)
    if step < start_step:
        return float(initial)
    if step >= end_step:  # also a span of 0: the whole step at t0
        return float(final)
    remaining = 1.0 - (step - start_step) / (end_step - start_step)
    return final + (initial - final) * remaining ** 3


def is_update_step(step, start_step, end_step, every):
    """Whether the mask is recomputed at ``step``: t0, t0 + every, t0 + 2·every, ... and the end step."""
    if step < start_step or step > end_step:
        return False
    return (step - start_step) % every == 0 or step == end_step


def epoch_to_step(epoch, steps_per_epoch):
    """The first step of (possibly fractional) ``epoch``: round(epoch · steps_per_epoch), halves up."""
    return math.floor(epoch * steps_per_epoch + 0.5)


def check_sparsity(name, value):
    """``value`` as a float in [0, 1); ``name`` opens the error message."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value < 1:
        raise ValueError(f"{name} must be a number in [0, 1) (the fraction of weights pruned), got {value!r}")
    return float(value)


def check_steps(owner, start, end, unit="step"):
    """``start`` <= ``end``, both numbers >= 0 (ints when ``unit`` is "step")."""
    for name, v in ((f"start_{unit}", start), (f"end_{unit}", end)):
        kind = numbers.Integral if unit == "step" else numbers.Real
        if isinstance(v, bool) or not isinstance(v, kind) or not 0 <= v < math.inf:
            what = "an int" if unit == "step" else "a number"
            raise ValueError(f"{owner}: {name} must be {what} >= 0, got {v!r}")
    if end < start:
        raise ValueError(f"{owner}: end_{unit} {end!r} is before start_{unit} {start!r}")
    return start, end
