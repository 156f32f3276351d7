"""The training loop: data -> model -> loss -> backward -> optimizer, with checkpoints and resume.

A run folder holds
    last.npz     the latest checkpoint: weights, optimizer, scheduler, RNG, data position, metrics;
                 written atomically at every epoch end and when SIGINT / SIGTERM arrives mid-epoch
    best.npz     the epoch with the best *validation* accuracy (only with a validation split;
                 never chosen on the test set)
    log.jsonl    one line per finished epoch (losses, accuracies, learning rate, wall time),
                 rewritten atomically from the history stored in last.npz
    config.json  the run's configuration, written when the run starts

Resume (``resume=True``) restores everything in last.npz, so an interrupted and resumed run ends
with the same weights, bitwise, as an uninterrupted one on the same machine and thread count: the
data stream is a pure function of (seed, epoch, batch) and every kernel is deterministic. A folder
with config.json but no last.npz (a run killed before its first epoch ended) resumes from the start.
A run that diverges before its first checkpoint removes the files it wrote, so its folder does not
block running it again.
"""
import dataclasses
import json
import math
import signal
import sys
import time
from pathlib import Path

import numpy as np

from . import checkpoint, compress, functional as F, optim
from .compress.run_config import filter_prune_from_config, float_model
from .config import DivergedError, RunError, TrainConfig  # noqa: F401 (TrainConfig: re-exported)
from .data import BatchLoader, Normalize, load_cifar, train_val_split
from .evaluate import evaluate
from .progress import EpochProgress, choose_mode, format_epoch, run_summary
from .random import generator, manual_seed
from .tensor import Tensor
from .threads import set_num_threads

COMPILE_NOTE = "compiling kernels on the first batch (first run only; later runs load them from the cache)"


def parameter_groups(model, weight_decay, no_decay_bn_bias):
    """One group with ``weight_decay``, one without: the quantizers' learned scales (PACT's alpha,
    LSQ's step) and SAL's attention never decay, and with ``no_decay_bn_bias`` neither do biases and BatchNorm parameters."""
    scales = {id(p) for p in compress.quantizer_parameters(model) + compress.sal_parameters(model)}
    decay, no_decay = [], []
    for p in model.parameters():
        # 1-D: biases and BatchNorm scales/shifts
        (no_decay if id(p) in scales or (no_decay_bn_bias and p.ndim <= 1) else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    return groups + [{"params": no_decay, "weight_decay": 0.0}] if no_decay else groups


def make_scheduler(cfg, optimizer, total_steps):
    """Learning-rate schedule stepped once per batch."""
    if cfg.schedule == "onecycle":
        return optim.OneCycleLR(optimizer, max_lr=cfg.lr, total_steps=total_steps, pct_start=cfg.pct_start)
    if cfg.schedule == "cosine":
        return optim.CosineAnnealingLR(optimizer, T_max=total_steps)
    if cfg.schedule == "step":  # x0.1 at 50 % and again at 75 % of training
        return optim.MultiStepLR(optimizer, [max(1, total_steps // 2), max(1, 3 * total_steps // 4)], gamma=0.1)
    return optim.StepLR(optimizer, step_size=total_steps + 1, gamma=1.0)



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



def read_run(out):
    """What the run folder ``out`` holds for ``--resume``: ``(saved configuration dict, last.npz's
    metadata)``, the metadata None when the run never wrote a checkpoint (it starts again from its
    config.json). RunError when there is nothing to resume."""
    out = Path(out)
    last, config = out / "last.npz", out / "config.json"
    if last.is_file():
        meta = checkpoint.load(last)["meta"]
        saved = meta.get("config")
        if not isinstance(saved, dict):
            raise checkpoint.CheckpointError(f"checkpoint {last}: no run configuration in its metadata")
        return saved, meta
    if not config.is_file():
        raise RunError(f"--resume: {last} does not exist; nothing to resume")
    try:
        saved = json.loads(config.read_text())
    except (OSError, ValueError) as exc:
        raise RunError(f"--resume: {config} is not readable JSON ({exc})") from None
    if not isinstance(saved, dict):
        raise RunError(f"--resume: {config} does not hold a run configuration")
    return saved, None


def finished_epochs(meta, path):
    """The number of finished epochs recorded in the metadata of checkpoint ``path``."""
    with checkpoint.reading_metadata(path):
        return int(meta["position"]["epoch"])


class Trainer:
    """One training run in folder ``out``: ``Trainer(cfg, out).run()``; ``resume=True`` continues it.

    ``progress``: a bar on a terminal, plain lines elsewhere (``progress.choose_mode``); the epoch
    lines (stdout) are printed either way.
    """
    _kernels_ready = False  # after the first batch in this process: later batches compile nothing

    def __init__(self, cfg, out, resume=False, progress=True):
        cfg.check()
        self.cfg, self.out, self.mode = cfg, Path(out), choose_mode(progress)
        self.last_path, self.best_path = self.out / "last.npz", self.out / "best.npz"
        restore = self._check_folder(resume)
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
        self.model = self._build_model(data.num_classes, restore)
        self.optimizer = optim.SGD(parameter_groups(self.model, cfg.weight_decay, cfg.no_decay_bn_bias), lr=cfg.lr,
                                   momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0)
        self.total_steps = cfg.epochs * len(self.train_loader)
        pruner = getattr(self.model, "pruner", None)
        if pruner is not None and pruner.steps(len(self.train_loader))[1] >= self.total_steps:
            end = pruner.steps(len(self.train_loader))[1]
            raise RunError(f"--prune-end {pruner.end_epoch:g} is step {end} of a run of {self.total_steps} steps "
                           f"({len(self.train_loader)} an epoch): the schedule must end before the last step")
        try:
            self.scheduler = make_scheduler(cfg, self.optimizer, self.total_steps)
        except ValueError as exc:  # e.g. onecycle over a single batch in all
            raise RunError(f"--schedule {cfg.schedule} over {self.total_steps} batches: {exc}") from None
        self.history, self.best_val, self.elapsed = [], -1.0, 0.0
        self.running = {"loss": 0.0, "correct": 0, "seen": 0}
        self.created_out = not self.out.exists()
        if restore:
            self._restore()
        else:
            self.out.mkdir(parents=True, exist_ok=True)
            write_text_atomic(self.out / "config.json", json.dumps(dataclasses.asdict(cfg), indent=1) + "\n")

    def _build_model(self, num_classes, restore):
        """The run's network. Restored: the shapes its last.npz records (a thinned model's channel
        counts), weights loaded later with the optimizer. New: --init's weights (a float checkpoint,
        or one of the same method; a thinned one gives its shapes), then filter-prune's thinning,
        which must see trained weights, then the method's conversion."""
        cfg, init = self.cfg, None
        if restore:
            counts = checkpoint.load(self.last_path)["meta"].get("channel_counts")
        else:
            init = checkpoint.load(cfg.init) if cfg.init else None
            counts = init["meta"].get("channel_counts") if init else None
        try:
            model = float_model(cfg, num_classes, counts)
            float_keys = list(model._state_slots())  # the names only: state_dict() would copy every array
            if cfg.method.split("+")[0] == "filter-prune" and not restore:
                if init:
                    self._load_init(model, init, float_keys)
                    init = None
                filter_prune_from_config(model, cfg)
            model = compress.convert_from_config(model, cfg)
        except RunError:
            raise
        except ValueError as exc:  # e.g. a record that does not fit, a target the model cannot reach
            raise RunError(f"--method {cfg.method}: {exc}") from None
        if init:
            self._load_init(model, init, float_keys)
        return model

    def _load_init(self, model, ckpt, float_keys):
        """--init: the weights of a checkpoint of the same model (float or the same method); what the
        method adds and a float checkpoint lacks (quantizer scales, masks, attention) keeps its
        initial values and is named."""
        path = self.cfg.init
        config = ckpt["meta"].get("config")
        saved = config.get("model") if isinstance(config, dict) else None
        if saved is not None and saved != self.cfg.model:
            raise RunError(f"--init {path}: it holds a '{saved}' model, not --model {self.cfg.model}")
        try:
            left = compress.load_float_state(model, ckpt["model"], float_keys)
        except ValueError as exc:
            raise RunError(f"--init {path} does not fit --model {self.cfg.model} --width {self.cfg.width:g} "
                           f"--method {self.cfg.method}: {exc}") from None
        if left:
            shown = ", ".join(left[:4]) + (f" and {len(left) - 4} more" if len(left) > 4 else "")
            print(f"--init: {len(left)} entries the method adds are not in {path} and start from their initial values "
                  f"({shown})", file=sys.stderr, flush=True)

    def _check_folder(self, resume):
        """Refuse an unusable --out; True when there is a last.npz to restore."""
        existing = self.out
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir():
            raise RunError(f"--out {self.out}: {existing} is not a folder")
        never_checkpointed = (self.out / "config.json").is_file() and not self.last_path.is_file()
        if resume:
            if not self.last_path.is_file() and not never_checkpointed:
                raise RunError(f"--resume: {self.last_path} does not exist; nothing to resume")
            return not never_checkpointed
        if self.out.exists() and any(self.out.iterdir()):
            hint = ("it holds a run stopped before its first epoch ended: pass --resume to start it again"
                    if never_checkpointed else "pass --resume to continue it")
            raise RunError(f"run folder {self.out} already exists and is not empty; {hint} or choose another --out")
        return False

    def _meta(self):
        return {"config": dataclasses.asdict(self.cfg), "position": self.train_loader.state(),
                "scheduler": self.scheduler.state_dict(), "rng": generator().bit_generator.state,
                "running": self.running, "history": self.history, "best_val": self.best_val,
                "elapsed": self.elapsed, "normalize": {"mean": self.normalize.mean.tolist(),
                                                       "std": self.normalize.std.tolist()},
                "classes": self.classes, "num_classes": len(self.classes),
                "channel_counts": getattr(self.model, "channel_counts", None)}

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

    def _discard(self):
        """Remove what a run that never checkpointed wrote, so that its folder does not block a re-run."""
        (self.out / "config.json").unlink(missing_ok=True)
        if self.created_out:
            try:
                self.out.rmdir()
            except OSError:  # something else was put in it meanwhile: leave it
                pass

    def _step(self, x, y, step):
        self.model.train()
        compress.before_step(self.model, step, len(self.train_loader), self.total_steps)
        # a diverging run's overflow is reported once, below, as a DivergedError; NumPy's warnings
        # on the way would only be printed across the progress bar
        with np.errstate(over="ignore", invalid="ignore"):
            logits = self.model(Tensor(x))
            loss = F.cross_entropy(logits, y, self.cfg.label_smoothing)
        value = loss.item()
        if not math.isfinite(value):
            state = self.train_loader.state()
            if self.last_path.is_file():
                kept = f"The last good checkpoint is kept: {self.last_path}"
            else:
                self._discard()
                kept = (f"No epoch had ended, so there is no checkpoint; the run's files were removed from "
                        f"{self.out}, so the same command can run again (with a lower --lr, say)")
            raise DivergedError(f"the loss became {value} at epoch {state['epoch'] + 1}, batch {state['batch']}; "
                                f"training stopped. {kept}")
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        compress.after_step(self.model)  # the method's own update rule (BC's clip), if any
        if self.scheduler.last_step < self.total_steps - 1:
            self.scheduler.step()
        self.running["loss"] += value * len(y)
        self.running["correct"] += int((logits.data.argmax(axis=1) == y).sum())
        self.running["seen"] += len(y)

    def run(self):
        """Train to the last epoch, or until SIGINT / SIGTERM (then checkpoint and return the signal)."""
        loader, epochs = self.train_loader, self.cfg.epochs
        with _StopSignal() as stop:
            while loader.epoch < epochs:
                epoch, t0 = loader.epoch, time.perf_counter()
                shown = EpochProgress(self.mode, len(loader), loader.position, f"epoch {epoch + 1}/{epochs}")
                try:
                    stopped = self._run_batches(shown, stop, t0)
                finally:  # an error is then printed on a line of its own, not on the bar's
                    shown.close()
                if stopped:
                    return stop.signum
                self._end_epoch(epoch, t0)
                if stop.signum is not None:
                    return stop.signum
        return None

    def _run_batches(self, shown, stop, t0):
        """The rest of the current epoch; True when a signal stopped it mid-epoch (after a checkpoint)."""
        images, seconds, tb = 0, 0.0, time.perf_counter()
        loader = self.train_loader
        step = loader.epoch * len(loader) + loader.position  # this batch's index over the whole run
        for x, y in loader:
            if not Trainer._kernels_ready:
                shown.note(COMPILE_NOTE)
            self._step(x, y, step)
            step += 1
            now = time.perf_counter()
            if Trainer._kernels_ready:  # the first batch's compile time stays out of images/s
                images, seconds = images + len(y), seconds + (now - tb)
            Trainer._kernels_ready, tb = True, now
            r = self.running
            stats = {"loss": r["loss"] / r["seen"], "acc": r["correct"] / r["seen"],
                     "lr": self.optimizer.param_groups[0]["lr"]}
            if seconds > 0:
                stats["images/s"] = images / seconds
            shown.update(stats)
            if stop.signum is not None and self.train_loader.position != 0:  # mid-epoch: save and leave
                self.elapsed += time.perf_counter() - t0
                checkpoint.save(self.last_path, self.model.state_dict(), self.optimizer.state_dict(), self._meta())
                return True
        return False

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
        print(format_epoch(line, self.cfg.epochs), flush=True)

    def summary(self):
        """The end-of-run line (``progress.run_summary``)."""
        return run_summary(self.history, self.last_path, self.best_path if self.val_loader is not None else None)
