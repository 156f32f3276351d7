"""Checkpoints: one ``.npz`` holding arrays only, written atomically, read with ``allow_pickle=False``.

Layout of the archive:
    model/<state-dict key>            every parameter and buffer
    optim/<param index>/<name>        optimizer state arrays (momentum buffers, Adam moments, steps)
    meta                              a JSON string (0-d unicode array): format, config, epoch, step,
                                      optimizer groups, scheduler state, RNG states, metrics

Writing goes to a temporary file in the same folder, is flushed to disk, then renamed over the
target, so a crash, a full disk or a signal mid-write leaves the previous checkpoint intact.
Nothing is ever unpickled: an archive with object arrays is refused.
"""
import contextlib
import json
import os
import tempfile
import zipfile

import numpy as np

FORMAT = "tinycomp-checkpoint-1"


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used: unreadable, not ours, or not matching the model."""


def save(path, model_state, optimizer_state=None, meta=None):
    """Write a checkpoint atomically to ``path`` (a ``.npz``)."""
    arrays = {f"model/{k}": np.asarray(v) for k, v in model_state.items()}
    groups = None
    if optimizer_state is not None:
        for i, entry in optimizer_state["state"].items():
            for name, value in entry.items():
                arrays[f"optim/{i}/{name}"] = np.asarray(value)
        groups = optimizer_state["param_groups"]
    meta = dict(meta or {}, format=FORMAT, optimizer_groups=groups)
    arrays["meta"] = np.array(json.dumps(meta, default=_json_default))
    write_atomic(path, lambda f: np.savez(f, **arrays), suffix=".npz")


def write_atomic(path, write, mode="wb", suffix=""):
    """Call ``write(f)`` on a temporary file in ``path``'s folder, flush it to disk, rename it over
    ``path``. On any failure the temporary file is removed and ``path`` keeps its previous content."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=suffix, dir=folder)
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(folder)


def load(path):
    """Read a checkpoint: returns dict(model=state dict, optimizer=state dict or None, meta=dict)."""
    if os.path.isdir(path):
        raise CheckpointError(f"checkpoint {path}: is a folder, not a checkpoint file")
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path}: no such file")
    if not zipfile.is_zipfile(path):  # np.load would open a plain .npy as an array
        raise CheckpointError(f"checkpoint {path}: not an .npz archive; not a tinycomp checkpoint")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in archive.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError, MemoryError) as exc:
        # MemoryError: an entry whose header claims an impossible shape
        raise CheckpointError(f"checkpoint {path}: not a readable tinycomp checkpoint (.npz of plain arrays, "
                              f"nothing pickled): {type(exc).__name__}: {exc}") from None
    if "meta" not in arrays:
        raise CheckpointError(f"checkpoint {path}: no 'meta' entry; not a tinycomp checkpoint")
    try:
        meta = json.loads(str(arrays.pop("meta")))
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"checkpoint {path}: its metadata is not valid JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"checkpoint {path}: its metadata is a JSON {type(meta).__name__}, not an object; "
                              "not a tinycomp checkpoint")
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path}: format {meta.get('format')!r}, expected {FORMAT!r}")
    model = {k[len("model/"):]: v for k, v in arrays.items() if k.startswith("model/")}
    optimizer = None
    if meta.get("optimizer_groups") is not None:
        state = {}
        for k, v in arrays.items():
            if k.startswith("optim/"):
                _, i, name = (k.split("/", 2) + ["", ""])[:3]
                if not i.isdigit() or not name:
                    raise CheckpointError(f"checkpoint {path}: malformed optimizer entry {k!r}")
                state.setdefault(int(i), {})[name] = v  # 0-d stays an array: a () parameter's buffer
        optimizer = {"state": state, "param_groups": meta["optimizer_groups"]}
    return {"model": model, "optimizer": optimizer, "meta": meta}


@contextlib.contextmanager
def reading_metadata(path):
    """Turn the errors of using a checkpoint's metadata (a missing key, a wrong type, a value the
    model, scheduler or data loader refuses) into a CheckpointError naming the file."""
    try:
        yield
    except CheckpointError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, MemoryError) as exc:
        raise CheckpointError(f"checkpoint {path}: incomplete or malformed metadata "
                              f"({type(exc).__name__}: {exc})") from None


def load_into(path, model, optimizer=None, expect_model=None):
    """Load ``path`` into ``model`` (and ``optimizer``); refuse a checkpoint of another model."""
    ckpt = load(path)
    config = ckpt["meta"].get("config")
    saved_name = config.get("model") if isinstance(config, dict) else None
    if expect_model is not None and saved_name is not None and saved_name != expect_model:
        raise CheckpointError(f"checkpoint {path} holds a '{saved_name}' model, not '{expect_model}'")
    try:
        model.load_state_dict(ckpt["model"])
        if optimizer is not None and ckpt["optimizer"] is not None:
            optimizer.load_state_dict(ckpt["optimizer"])
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        width = config.get("width") if isinstance(config, dict) else None
        held = "" if not saved_name else f" (it holds a '{saved_name}' model" + (
            f" of width {width:g})" if isinstance(width, (int, float)) else ")")
        raise CheckpointError(f"checkpoint {path}{held} does not fit the model: {exc}") from None
    return ckpt


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"checkpoint metadata: cannot store {type(value).__name__}")


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(folder):
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
