"""The training loop: data -> model -> loss -> backward -> optimizer, with checkpoints and resume.

A run folder holds
    last.npz     the latest checkpoint: weights, optimizer, scheduler, RNG, data position, metrics;
                 written atomically at every epoch end and when SIGINT / SIGTERM arrives mid-epoch
    best.npz     the epoch with the best *validation* accuracy (only with a validation split;
                 never chosen on the test set)
    log.jsonl    one line per finished epoch (losses, accuracies, learning rate, wall time),
                 rewritten atomically from the history stored in last.npz
    config.json  the run's configuration

Resume (``resume=True``) restores everything in last.npz, so an interrupted and resumed run ends
with the same weights, bitwise, as an uninterrupted one on the same machine and thread count: the
data stream is a pure function of (seed, epoch, batch) and every kernel is deterministic.
"""
import dataclasses
import json
import math
import signal
import time
from pathlib import Path

import numpy as np

from . import checkpoint, functional as F, models, optim
from .data import BatchLoader, Normalize, get_spec, load_cifar, train_val_split
from .autograd import no_grad
from .random import generator, manual_seed
from .tensor import Tensor
from .threads import set_num_threads


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
    download: bool = True
    val: int = 0
    subset: int = None
    init: str = None
    eval_batch_size: int = 500
    test_every: int = 1            # evaluate on the test set every N epochs (and after the last)

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
        if problems:
            raise RunError("; ".join(problems))


def parameter_groups(model, weight_decay, no_decay_bn_bias):
    if not no_decay_bn_bias:
        return [{"params": list(model.parameters()), "weight_decay": weight_decay}]
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim <= 1 else decay).append(p)  # 1-D: biases and BatchNorm scales/shifts
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_scheduler(cfg, optimizer, total_steps):
    """Learning-rate schedule stepped once per batch."""
    if cfg.schedule == "onecycle":
        return optim.OneCycleLR(optimizer, max_lr=cfg.lr, total_steps=total_steps, pct_start=cfg.pct_start)
    if cfg.schedule == "cosine":
        return optim.CosineAnnealingLR(optimizer, T_max=total_steps)
    if cfg.schedule == "step":  # x0.1 at 50 % and again at 75 % of training
        return optim.MultiStepLR(optimizer, [max(1, total_steps // 2), max(1, 3 * total_steps // 4)], gamma=0.1)
    return optim.StepLR(optimizer, step_size=total_steps + 1, gamma=1.0)


@no_grad()
def evaluate(model, loader, num_classes):
    """(mean loss, accuracy, per-class accuracy) of ``model`` on every batch of ``loader``."""
    model.eval()
    loss_sum, correct, total = 0.0, np.zeros(num_classes), np.zeros(num_classes)
    for b in range(len(loader)):
        x, y = loader.batch(0, b)
        logits = model(Tensor(x))
        loss_sum += F.cross_entropy(logits, y).item() * len(y)
        hit = logits.data.argmax(axis=1) == y
        np.add.at(correct, y, hit)
        np.add.at(total, y, 1)
    per_class = np.where(total > 0, correct / np.maximum(total, 1), np.nan)
    return loss_sum / total.sum(), correct.sum() / total.sum(), per_class


def write_text_atomic(path, text):
    """Replace the file ``path`` by ``text`` atomically (``checkpoint.write_atomic``)."""
    checkpoint.write_atomic(path, lambda f: f.write(text), mode="w")


class _StopSignal:
    """Turn SIGINT / SIGTERM into a flag the loop checks after each batch."""

    def __init__(self):
        self.signum = None

    def __enter__(self):
        self.previous = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def _handle(self, signum, frame):
        self.signum = signum

    def __exit__(self, *exc):
        for s, handler in self.previous.items():
            signal.signal(s, handler)
        return False


class Trainer:
    """One training run in folder ``out``: ``Trainer(cfg, out).run()``; ``resume=True`` continues it."""

    def __init__(self, cfg, out, resume=False, progress=True):
        cfg.check()
        self.cfg, self.out, self.progress = cfg, Path(out), progress
        self.last_path, self.best_path = self.out / "last.npz", self.out / "best.npz"
        self._check_folder(resume)
        if cfg.threads:
            set_num_threads(cfg.threads)
        manual_seed(cfg.seed)
        data = load_cifar(cfg.dataset, root=cfg.data_dir, download=cfg.download, progress=progress)
        self.classes = data.classes
        train_idx, val_idx = train_val_split(len(data.train_labels), cfg.val, cfg.seed, cfg.subset)
        self.normalize = Normalize.from_images(data.train_images, train_idx)
        self.train_loader = BatchLoader(data.train_images, data.train_labels, cfg.batch_size, indices=train_idx,
                                        shuffle=True, seed=cfg.seed, drop_last=True, augment=True,
                                        normalize=self.normalize)
        if len(self.train_loader) == 0:
            raise RunError(f"--batch-size {cfg.batch_size} is larger than the {train_idx.size} training images")
        self.val_loader = None if not cfg.val else BatchLoader(
            data.train_images, data.train_labels, cfg.eval_batch_size, indices=val_idx, normalize=self.normalize)
        self.test_loader = BatchLoader(data.test_images, data.test_labels, cfg.eval_batch_size,
                                       normalize=self.normalize)
        self.model = models.get(cfg.model, num_classes=data.num_classes, width=cfg.width)
        if cfg.init and not resume:  # a resumed run takes its weights from last.npz, not from --init
            checkpoint.load_into(cfg.init, self.model)
        self.optimizer = optim.SGD(parameter_groups(self.model, cfg.weight_decay, cfg.no_decay_bn_bias), lr=cfg.lr,
                                   momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0)
        self.total_steps = cfg.epochs * len(self.train_loader)
        try:
            self.scheduler = make_scheduler(cfg, self.optimizer, self.total_steps)
        except ValueError as exc:  # e.g. onecycle over a single batch in all
            raise RunError(f"--schedule {cfg.schedule} over {self.total_steps} batches: {exc}") from None
        self.history, self.best_val, self.elapsed = [], -1.0, 0.0
        self.running = {"loss": 0.0, "correct": 0, "seen": 0}
        if resume:
            self._restore()
        else:
            self.out.mkdir(parents=True, exist_ok=True)
            write_text_atomic(self.out / "config.json", json.dumps(dataclasses.asdict(cfg), indent=1) + "\n")

    def _check_folder(self, resume):
        existing = self.out
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir():
            raise RunError(f"--out {self.out}: {existing} is not a folder")
        if resume and not self.last_path.is_file():
            raise RunError(f"--resume: {self.last_path} does not exist; nothing to resume")
        if not resume and self.out.exists() and any(self.out.iterdir()):
            raise RunError(f"run folder {self.out} already exists and is not empty; pass --resume to continue "
                           "it or choose another --out")

    def _meta(self):
        return {"config": dataclasses.asdict(self.cfg), "position": self.train_loader.state(),
                "scheduler": self.scheduler.state_dict(), "rng": generator().bit_generator.state,
                "running": self.running, "history": self.history, "best_val": self.best_val,
                "elapsed": self.elapsed, "normalize": {"mean": self.normalize.mean.tolist(),
                                                       "std": self.normalize.std.tolist()},
                "classes": self.classes, "num_classes": len(self.classes)}

    def _restore(self):
        ckpt = checkpoint.load_into(self.last_path, self.model, self.optimizer, expect_model=self.cfg.model)
        meta = ckpt["meta"]
        with checkpoint.reading_metadata(self.last_path):
            self.scheduler.load_state_dict(meta["scheduler"])
            self.train_loader.load_state(meta["position"])
            generator().bit_generator.state = meta["rng"]
            self.running, self.history = meta["running"], meta["history"]
            self.best_val, self.elapsed = meta["best_val"], meta["elapsed"]
        self._write_log()

    def _write_log(self):
        write_text_atomic(self.out / "log.jsonl", "".join(json.dumps(h) + "\n" for h in self.history))

    def _step(self, x, y):
        self.model.train()
        logits = self.model(Tensor(x))
        loss = F.cross_entropy(logits, y, self.cfg.label_smoothing)
        value = loss.item()
        if not math.isfinite(value):
            state = self.train_loader.state()
            kept = (f"The last good checkpoint is kept: {self.last_path}" if self.last_path.is_file() else
                    f"No epoch had ended, so there is no checkpoint; remove {self.out} before running again")
            raise DivergedError(f"the loss became {value} at epoch {state['epoch'] + 1}, batch {state['batch']}; "
                                f"training stopped. {kept}")
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        if self.scheduler.last_step < self.total_steps - 1:
            self.scheduler.step()
        self.running["loss"] += value * len(y)
        self.running["correct"] += int((logits.data.argmax(axis=1) == y).sum())
        self.running["seen"] += len(y)

    def run(self):
        """Train to the last epoch, or until SIGINT / SIGTERM (then checkpoint and return the signal)."""
        from tqdm import tqdm

        loader, epochs = self.train_loader, self.cfg.epochs
        with _StopSignal() as stop:
            while loader.epoch < epochs:
                epoch, t0 = loader.epoch, time.perf_counter()
                bar = tqdm(total=len(loader), initial=loader.position, desc=f"epoch {epoch + 1}/{epochs}",
                           disable=not self.progress, leave=False)
                for x, y in loader:
                    tb = time.perf_counter()
                    self._step(x, y)
                    r = self.running
                    bar.update(1)
                    bar.set_postfix(loss=f"{r['loss'] / r['seen']:.3f}", acc=f"{r['correct'] / r['seen']:.3f}",
                                    img_s=f"{len(y) / (time.perf_counter() - tb):.0f}")
                    if stop.signum is not None and loader.position != 0:  # mid-epoch: save and leave
                        self.elapsed += time.perf_counter() - t0
                        checkpoint.save(self.last_path, self.model.state_dict(), self.optimizer.state_dict(),
                                        self._meta())
                        bar.close()
                        return stop.signum
                bar.close()
                self._end_epoch(epoch, t0)
                if stop.signum is not None:
                    return stop.signum
        return None

    def _end_epoch(self, epoch, t0):
        line = {"epoch": epoch + 1, "train_loss": self.running["loss"] / max(1, self.running["seen"]),
                "train_acc": self.running["correct"] / max(1, self.running["seen"]),
                "lr": self.optimizer.param_groups[0]["lr"]}
        if (epoch + 1) % self.cfg.test_every == 0 or epoch + 1 == self.cfg.epochs:
            line["test_loss"], line["test_acc"], _ = evaluate(self.model, self.test_loader, len(self.classes))
        is_best = False
        if self.val_loader is not None:
            line["val_loss"], line["val_acc"], _ = evaluate(self.model, self.val_loader, len(self.classes))
            is_best = line["val_acc"] > self.best_val
            self.best_val = max(self.best_val, line["val_acc"])
        self.elapsed += time.perf_counter() - t0
        line["wall_time_s"] = self.elapsed
        self.history.append(line)
        self.running = {"loss": 0.0, "correct": 0, "seen": 0}
        if is_best:  # best first: a crash before last.npz replays this epoch and rewrites both
            checkpoint.save(self.best_path, self.model.state_dict(), None, self._meta())
        checkpoint.save(self.last_path, self.model.state_dict(), self.optimizer.state_dict(), self._meta())
        self._write_log()
        if self.progress:
            shown = {k: round(v, 4) if isinstance(v, float) else v for k, v in line.items()}
            print(json.dumps(shown), flush=True)


def evaluate_checkpoint(path, data_dir=None, download=True, batch_size=500, progress=True):
    """Test loss, accuracy and per-class accuracy of the model saved in checkpoint ``path``."""
    ckpt = checkpoint.load(path)
    meta = ckpt["meta"]
    cfg = meta.get("config")
    if not isinstance(cfg, dict) or "normalize" not in meta:
        raise checkpoint.CheckpointError(f"checkpoint {path} has no training configuration; was it written by "
                                         "tinycomp train?")
    with checkpoint.reading_metadata(path):
        model = models.get(cfg["model"], num_classes=meta["num_classes"], width=cfg["width"])
        get_spec(cfg["dataset"])
        norm = Normalize(meta["normalize"]["mean"], meta["normalize"]["std"])
    try:
        model.load_state_dict(ckpt["model"])
    except ValueError as exc:
        raise checkpoint.CheckpointError(f"checkpoint {path} does not fit model {cfg['model']}: {exc}") from None
    data = load_cifar(cfg["dataset"], root=data_dir, download=download, progress=progress)
    loader = BatchLoader(data.test_images, data.test_labels, batch_size, normalize=norm)
    loss, acc, per_class = evaluate(model, loader, data.num_classes)
    return {"checkpoint": str(path), "model": cfg["model"], "dataset": data.name, "test_loss": loss,
            "test_acc": acc, "per_class_acc": dict(zip(data.classes, per_class.tolist()))}
