"""A training run's configuration: ``TrainConfig`` (one field a command-line option), its checks,
and the rule for ``--resume`` (the saved configuration wins; a changed option is refused).

Every field is a ``--option`` of ``tinycomp train`` (underscores become dashes), so a new option is a
new field here, a check in ``check()`` and an ``add_argument`` in cli.py.
"""
import dataclasses
import math

from . import models
from .data import get_spec


MAX_WIDTH = 16.0  # width multipliers above this make models of billions of parameters


class RunError(ValueError):
    """A run that cannot start: bad options, an existing run folder, nothing to resume."""


class DivergedError(RunError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


@dataclasses.dataclass
class TrainConfig:
    model: str = "resnet20"
    width: float = 1.0
    dataset: str = "cifar10"
    epochs: int = 30
    batch_size: int = 128
    lr: float = 0.2                # peak learning rate for onecycle, initial for the others
    schedule: str = "onecycle"     # onecycle | cosine | step | constant
    pct_start: float = 0.25        # onecycle warm-up fraction
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    no_decay_bn_bias: bool = False  # exclude BatchNorm parameters and biases from weight decay
    label_smoothing: float = 0.0
    seed: int = 0
    threads: int = 0               # 0: leave the thread pools as they are
    data_dir: str = None
    download: bool = None          # None: only into the default cache; True: also into data_dir; False: never
    val: int = 0
    subset: int = None
    init: str = None
    eval_batch_size: int = 500
    test_every: int = 1            # evaluate on the test set every N epochs (and after the last)
    # compression (tinycomp.compress; docs/methods.md)
    method: str = "none"           # none | bc | bwn | xnor | ternary | w<k>a<m> | prune | filter-prune | sal | A+B
    quantizer: str = "dorefa"      # dorefa | pact | lsq, for w<k>a<m>
    keep_float: str = "first,last"  # layers left full precision: first, last, shortcuts (or none)
    bc_stochastic: bool = False    # BC's stochastic sign in training
    bwn_scale: str = "filter"      # BWN's alpha per filter or per layer (bwn, xnor)
    xnor_act_scale: bool = False   # XNOR-Net's activation scale beta
    sparsity: float = 0.9          # prune: the final fraction of weights pruned
    prune_scope: str = "layer"     # prune: each conv to the sparsity, or one global threshold
    prune_start: float = 0.0       # prune: AGP's ramp starts at this epoch ...
    prune_end: float = None        # ... and ends here (None: half the run), before the last epoch ends
    prune_every: int = 100         # prune: steps between mask updates during the ramp
    ratio: float = None            # filter-prune: the fraction of each group's filters removed (None: 0.5)
    target_macs: float = None      # filter-prune: instead, prune until the MACs are at most this fraction
    filter_criterion: str = "l1"   # filter-prune: rank filters by l1, l2 or bn (|BatchNorm scale|)
    sal_t0: float = 20.0           # sal: the attention's softmax temperature at the first step ...
    sal_tf: float = 70.0           # ... rising geometrically every batch to this at the last
    sal_shared: bool = False       # sal: one learned shift per input channel, shared by all filters

    def check(self):
        problems = []
        if self.model not in models.names():
            problems.append(f"--model: unknown model '{self.model}' (choose from {', '.join(models.names())})")
        if self.schedule not in ("onecycle", "cosine", "step", "constant"):
            problems.append(f"--schedule: '{self.schedule}' is not one of onecycle, cosine, step, constant")
        for name in ("epochs", "batch_size", "eval_batch_size", "test_every"):
            if getattr(self, name) < 1:
                problems.append(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        # comparisons written so that NaN fails them; inf is refused explicitly
        if not 0 < self.width <= MAX_WIDTH:
            problems.append(f"--width must be in (0, {MAX_WIDTH}], got {self.width}")
        if not 0 < self.lr < math.inf:
            problems.append(f"--lr must be > 0 and finite, got {self.lr}")
        if not 0 < self.pct_start < 1:
            problems.append(f"--pct-start must be in (0, 1), got {self.pct_start}")
        if not 0 <= self.weight_decay < math.inf:
            problems.append(f"--weight-decay must be >= 0 and finite, got {self.weight_decay}")
        if not 0 <= self.momentum < 1:
            problems.append(f"--momentum must be in [0, 1), got {self.momentum}")
        if not 0 <= self.label_smoothing < 1:
            problems.append(f"--label-smoothing must be in [0, 1), got {self.label_smoothing}")
        for name in ("seed", "threads", "val"):
            if getattr(self, name) < 0:
                problems.append(f"--{name} must be >= 0, got {getattr(self, name)}")
        if self.subset is not None and self.subset < 1:
            problems.append(f"--subset must be >= 1, got {self.subset}")
        try:
            spec = get_spec(self.dataset)
        except ValueError as exc:
            problems.append(f"--dataset: {exc}")
        else:  # the training set's size is fixed by the format: check the split before loading anything
            n_train = sum(count for _, count in spec.train_files)
            if self.val >= n_train:
                problems.append(f"--val {self.val} leaves no training images (the training set has {n_train:,})")
            elif self.subset is not None and self.subset > n_train - self.val:
                problems.append(f"--subset {self.subset} is more than the {n_train - self.val:,} training images "
                                f"left after --val {self.val}")
        if not problems:
            problems += self._check_method()
        if problems:
            raise RunError("; ".join(problems))

    def _check_method(self):
        """The compression options, checked by converting a narrow copy of the model (milliseconds)."""
        from .compress import convert_from_config
        from .compress.run_config import prune_end

        structure = self.method.split("+")[0]
        problems = []
        if structure == "filter-prune":
            if self.ratio is not None and self.target_macs is not None:
                problems.append("--ratio and --target-macs: give one of them")
            if self.ratio is not None and not 0 <= self.ratio < 1:
                problems.append(f"--ratio must be in [0, 1), got {self.ratio}")
            if self.target_macs is not None and not 0 < self.target_macs <= 1:
                problems.append(f"--target-macs must be in (0, 1], got {self.target_macs}")
            if self.filter_criterion not in ("l1", "l2", "bn"):
                problems.append(f"--filter-criterion: {self.filter_criterion!r} is not one of l1, l2, bn")
        if structure == "sal" and not 0 < self.sal_t0 <= self.sal_tf < math.inf:
            problems.append(f"--sal-t0 and --sal-tf must satisfy 0 < t0 <= tf, got {self.sal_t0} and {self.sal_tf}")
        if problems:
            return problems
        if structure == "prune" and not prune_end(self) < self.epochs:
            return [f"--prune-end {prune_end(self):g} must be before the end of the run (--epochs {self.epochs}): "
                    "the schedule must reach its final sparsity while training"]
        try:
            convert_from_config(models.get(self.model, width=1 / 16), self)
        except ValueError as exc:
            return [str(exc)]
        return []


# options that may differ on --resume without changing the result
RESUME_MAY_CHANGE = {"threads", "data_dir", "download"}


def resume_config(saved, given):
    """The configuration a resumed run continues with: ``saved`` (a dict from the run folder) with the
    options in ``given`` (``{field: value}`` the user passed) applied. Raises RunError naming each
    option that differs from the saved run, with both values, unless it is in RESUME_MAY_CHANGE."""
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    changed = [(k, saved.get(k), v) for k, v in sorted(given.items())
               if k in fields and k not in RESUME_MAY_CHANGE and saved.get(k) != v]
    if changed:
        raise RunError("--resume continues the saved run; these options differ from it: " + ", ".join(
            f"--{k.replace('_', '-')} (saved {old!r}, given {new!r})" for k, old, new in changed))
    # fields added to TrainConfig after the run was saved take their defaults
    return TrainConfig(**{k: v for k, v in {**saved, **given}.items() if k in fields})
