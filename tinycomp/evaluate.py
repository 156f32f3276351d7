"""Evaluation: loss and accuracy of a model on a loader, and of a checkpoint or an exported model
(``tinycomp.runtime``) on its test set, through the same loader and scoring."""
import numpy as np

from . import checkpoint, functional as F
from .compress import build_model
from .autograd import no_grad
from .data import BatchLoader, Normalize, get_spec, load_cifar
from .tensor import Tensor


@no_grad()
def evaluate(model, loader, num_classes):
    """(mean loss, accuracy, per-class accuracy) of ``model`` on every batch of ``loader``."""
    model.eval()
    return _score(_logits_of(model), loader, num_classes)


def _logits_of(model):
    return lambda x: model(Tensor(x)).data


@no_grad()
def _score(forward, loader, num_classes):
    """``evaluate`` for ``forward``: normalised float32 batch -> logits (NumPy)."""
    loss_sum, correct, total = 0.0, np.zeros(num_classes), np.zeros(num_classes)
    for b in range(len(loader)):
        x, y = loader.batch(0, b)
        logits = forward(x)
        loss_sum += F.cross_entropy(Tensor(logits), y).item() * len(y)
        hit = logits.argmax(axis=1) == y
        np.add.at(correct, y, hit)
        np.add.at(total, y, 1)
    per_class = np.where(total > 0, correct / np.maximum(total, 1), np.nan)
    return loss_sum / total.sum(), correct.sum() / total.sum(), per_class


def _test_result(forward, data, norm, batch_size):
    """The test-set part of an evaluation result: dataset, images, loss, accuracy, per class."""
    loader = BatchLoader(data.test_images, data.test_labels, batch_size, normalize=norm)
    loss, acc, per_class = _score(forward, loader, data.num_classes)
    return {"dataset": data.name, "images": int(len(data.test_labels)), "test_loss": loss, "test_acc": acc,
            "per_class_acc": dict(zip(data.classes, per_class.tolist()))}


def training_position(meta):
    """Where training was when the checkpoint was written: ``{"epoch": finished epochs, "epochs":
    planned epochs, "mid_epoch_batch": batches done in the next epoch (0 at an epoch end)}``, with
    None for what the metadata does not hold."""
    position = meta.get("position") if isinstance(meta.get("position"), dict) else {}
    config = meta.get("config") if isinstance(meta.get("config"), dict) else {}
    return {"epoch": position.get("epoch"), "epochs": config.get("epochs"),
            "mid_epoch_batch": position.get("batch")}


def model_of_checkpoint(path):
    """(the model saved in checkpoint ``path``, with its weights; the checkpoint's metadata). The
    network is rebuilt from the run configuration it stores: checkpoints without a method field stay
    float, a thinned model's shapes come from its channel-count record."""
    ckpt = checkpoint.load(path)
    meta = ckpt["meta"]
    cfg = meta.get("config")
    if not isinstance(cfg, dict) or "normalize" not in meta:
        raise checkpoint.CheckpointError(f"checkpoint {path} has no training configuration; was it written by "
                                         "tinycomp train?")
    with checkpoint.reading_metadata(path):
        model = build_model(cfg, meta["num_classes"], channel_counts=meta.get("channel_counts"))
    try:
        model.load_state_dict(ckpt["model"])
    except ValueError as exc:
        raise checkpoint.CheckpointError(f"checkpoint {path} does not fit model {cfg['model']}: {exc}") from None
    return model, meta


def evaluate_checkpoint(path, data_dir=None, download=None, batch_size=500, progress=True):
    """Test loss, accuracy and per-class accuracy of the model saved in checkpoint ``path``, with the
    model's name and width and where its training was (``training_position``)."""
    model, meta = model_of_checkpoint(path)
    cfg = meta["config"]
    with checkpoint.reading_metadata(path):
        get_spec(cfg["dataset"])
        norm = Normalize(meta["normalize"]["mean"], meta["normalize"]["std"])
    data = load_cifar(cfg["dataset"], root=data_dir, download=download, progress=progress)
    model.eval()
    position = training_position(meta)
    return {"checkpoint": str(path), "file": str(path), "kind": "checkpoint", "model": cfg["model"],
            "width": cfg["width"], "method": cfg.get("method", "none"), **position,
            "mid_epoch": bool(position["mid_epoch_batch"]),
            **_test_result(_logits_of(model), data, norm, batch_size)}


def evaluate_exported(path, data_dir=None, download=None, batch_size=500, progress=True):
    """``evaluate_checkpoint`` for an exported model (``tinycomp.export``), run by ``tinycomp.runtime``
    on the test set of the dataset its header names (CIFAR-10 / -100 by its class count if none)."""
    from . import runtime  # here, not at the top: training needs none of the runtime's kernels

    model = runtime.load(path)
    dataset = model.header.get("dataset") or {10: "cifar10", 100: "cifar100"}.get(model.num_classes)
    try:
        get_spec(dataset)
    except ValueError as exc:
        raise runtime.FormatError(f"exported model {path}: entry header.dataset: {exc}") from None
    data = load_cifar(dataset, root=data_dir, download=download, progress=progress)
    if data.num_classes != model.num_classes:
        raise runtime.FormatError(f"exported model {path}: entry header.num_classes: {model.num_classes}, but "
                                  f"{data.name} has {data.num_classes} classes")
    norm = Normalize(model.normalize["mean"], model.normalize["std"])
    return {"file": str(path), "kind": "exported", "model": model.model, "width": model.width,
            "method": model.method, **_test_result(model, data, norm, batch_size)}


@no_grad()
def agreement(exported_path, checkpoint_path, data_dir=None, download=None, batch_size=500, progress=True):
    """How an exported model's predictions compare with the eval-mode training graph of the checkpoint
    it was exported from, on the test set: {"agreement": fraction of images with the same predicted
    class, "disagreeing": their count, "max_logit_diff", the largest |logit difference| relative to
    that image's largest |logit|, "exported_acc", "checkpoint_acc", ...}. The two files must describe
    the same network (model, width, method, classes, normalisation)."""
    from . import runtime

    exported = runtime.load(exported_path)
    model, meta = model_of_checkpoint(checkpoint_path)
    cfg = meta["config"]
    mine = {"model": cfg["model"], "width": float(cfg["width"]), "method": cfg.get("method", "none"),
            "num_classes": meta["num_classes"], "normalize": meta["normalize"]}
    theirs = {"model": exported.model, "width": float(exported.width), "method": exported.method,
              "num_classes": exported.num_classes, "normalize": exported.normalize}
    for key in mine:
        a, b = mine[key], theirs[key]
        differ = not np.allclose(list(a["mean"]) + list(a["std"]), list(b["mean"]) + list(b["std"])) \
            if key == "normalize" else a != b
        if differ:
            raise checkpoint.CheckpointError(f"--against: checkpoint {checkpoint_path} has {key} {mine[key]!r} but "
                                             f"exported model {exported_path} has {theirs[key]!r}")
    data = load_cifar(cfg["dataset"], root=data_dir, download=download, progress=progress)
    loader = BatchLoader(data.test_images, data.test_labels, batch_size,
                         normalize=Normalize(exported.normalize["mean"], exported.normalize["std"]))
    model.eval()
    same = hit_exported = hit_checkpoint = 0
    worst = 0.0
    for b in range(len(loader)):
        x, y = loader.batch(0, b)
        ref, out = model(Tensor(x)).data, exported(x)
        same += int((ref.argmax(axis=1) == out.argmax(axis=1)).sum())
        hit_checkpoint += int((ref.argmax(axis=1) == y).sum())
        hit_exported += int((out.argmax(axis=1) == y).sum())
        scale = np.maximum(np.abs(ref).max(axis=1), 1e-30)
        worst = max(worst, float((np.abs(out - ref).max(axis=1) / scale).max()))
    n = len(data.test_labels)
    return {"file": str(exported_path), "against": str(checkpoint_path), "dataset": data.name, "images": int(n),
            "model": exported.model, "method": exported.method, "agreement": same / n, "disagreeing": n - same,
            "max_logit_diff": worst, "exported_acc": hit_exported / n, "checkpoint_acc": hit_checkpoint / n}
