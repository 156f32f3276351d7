"""Checkpoints: round trip, atomic writes, refusal of pickles, garbage and other models."""
import numpy as np
import pytest

import tinycomp
from tinycomp import checkpoint, nn, optim
from tinycomp.checkpoint import CheckpointError


def small_model():
    return nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Linear(3, 2))


def trained_optimizer(model, cls=optim.SGD, **kw):
    opt = cls(model.parameters(), lr=0.1, **kw)
    for p in model.parameters():
        p.grad = np.ones_like(p.data)
    opt.step()
    opt.step()
    return opt


@pytest.mark.parametrize("cls, kw", [(optim.SGD, {"momentum": 0.9}), (optim.Adam, {})])
def test_round_trip_model_optimizer_and_meta(tmp_path, cls, kw):
    tinycomp.manual_seed(0)
    model = small_model()
    opt = trained_optimizer(model, cls, **kw)
    meta = {"epoch": 3, "rng": tinycomp.random.generator().bit_generator.state, "note": "x"}
    path = tmp_path / "c.npz"
    checkpoint.save(path, model.state_dict(), opt.state_dict(), meta)
    other = small_model()
    opt2 = cls(other.parameters(), lr=0.1, **kw)
    ckpt = checkpoint.load_into(path, other, opt2)
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(other.state_dict()[k], v)
    assert ckpt["meta"]["epoch"] == 3 and ckpt["meta"]["rng"] == meta["rng"]
    # the restored optimizer continues exactly like the original
    for p, q in zip(model.parameters(), other.parameters()):
        p.grad = q.grad = np.full_like(p.data, 0.5)
    opt.step()
    opt2.step()
    for p, q in zip(model.parameters(), other.parameters()):
        np.testing.assert_array_equal(p.data, q.data)


def test_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    model = small_model()
    path = tmp_path / "last.npz"
    checkpoint.save(path, model.state_dict(), None, {"epoch": 1})
    before = path.read_bytes()

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", full_disk)
    with pytest.raises(OSError, match="No space"):
        checkpoint.save(path, model.state_dict(), None, {"epoch": 2})
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.npz"]  # no temporary file left


def test_pickled_arrays_are_refused(tmp_path):
    path = tmp_path / "evil.npz"
    np.savez(path, meta=np.array('{"format": "tinycomp-checkpoint-1"}'),
             **{"model/w": np.array([{"a": 1}], dtype=object)})
    with pytest.raises(CheckpointError, match="nothing pickled"):
        checkpoint.load(path)


@pytest.mark.parametrize("content, message", [
    (b"not a zip file at all", "not an .npz archive"),
    (None, "no such file"),
])
def test_garbage_and_missing_files(tmp_path, content, message):
    path = tmp_path / "c.npz"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=message):
        checkpoint.load(path)


def test_truncated_file_is_refused(tmp_path):
    path = tmp_path / "c.npz"
    checkpoint.save(path, small_model().state_dict(), None, {})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError):
        checkpoint.load(path)


def test_foreign_npz_is_refused(tmp_path):
    path = tmp_path / "c.npz"
    np.savez(path, weights=np.zeros(3))
    with pytest.raises(CheckpointError, match="no 'meta' entry"):
        checkpoint.load(path)


def test_another_model_is_refused_and_left_unchanged(tmp_path):
    path = tmp_path / "c.npz"
    checkpoint.save(path, nn.Linear(5, 2).state_dict(), None, {"config": {"model": "linear5"}})
    model = small_model()
    before = model.state_dict()
    with pytest.raises(CheckpointError, match="does not fit the model"):
        checkpoint.load_into(path, model)
    with pytest.raises(CheckpointError, match="holds a 'linear5' model"):
        checkpoint.load_into(path, model, expect_model="resnet20")
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, before[k])


def test_failed_text_write_keeps_the_previous_file_and_no_temporary(tmp_path, monkeypatch):
    import os

    from tinycomp.train import write_text_atomic

    path = tmp_path / "log.jsonl"
    write_text_atomic(path, "epoch 1\n")

    def failing_replace(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="No space"):
        write_text_atomic(path, "epoch 2\n")
    assert path.read_text() == "epoch 1\n"
    assert [p.name for p in tmp_path.iterdir()] == ["log.jsonl"]


def test_written_files_get_the_usual_permissions(tmp_path):
    import os

    path = tmp_path / "c.npz"
    checkpoint.save(path, small_model().state_dict(), None, {})
    mask = os.umask(0)
    os.umask(mask)
    assert (path.stat().st_mode & 0o777) == 0o666 & ~mask


def _zip_npz(path, entries):
    """An .npz written by hand: {name: raw .npy bytes}."""
    import zipfile
    with zipfile.ZipFile(path, "w") as z:
        for name, data in entries.items():
            z.writestr(name + ".npy", data)


def _npy_bytes(array):
    import io
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def test_other_kinds_of_file_are_refused(tmp_path):
    np.save(tmp_path / "plain.npy", np.zeros(3))  # np.load opens it as an array, not an archive
    with pytest.raises(CheckpointError, match="not an .npz archive"):
        checkpoint.load(tmp_path / "plain.npy")
    (tmp_path / "folder.npz").mkdir()
    with pytest.raises(CheckpointError, match="is a folder"):
        checkpoint.load(tmp_path / "folder.npz")
    for meta in ("[1, 2]", "3", '"text"'):
        np.savez(tmp_path / "m.npz", meta=np.array(meta))
        with pytest.raises(CheckpointError, match="metadata is a JSON .*not an object"):
            checkpoint.load(tmp_path / "m.npz")
    meta = np.array('{"format": "%s", "optimizer_groups": []}' % checkpoint.FORMAT)
    np.savez(tmp_path / "o.npz", meta=meta, **{"optim/abc/momentum_buffer": np.zeros(2)})
    with pytest.raises(CheckpointError, match="malformed optimizer entry 'optim/abc/momentum_buffer'"):
        checkpoint.load(tmp_path / "o.npz")


def test_an_entry_claiming_an_impossible_shape_is_refused(tmp_path):
    import io
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": (10**14,)})
    _zip_npz(tmp_path / "h.npz", {"meta": _npy_bytes(np.array('{"format": "%s"}' % checkpoint.FORMAT)),
                                  "model/w": header.getvalue()})
    with pytest.raises(CheckpointError, match="not a readable tinycomp checkpoint"):
        checkpoint.load(tmp_path / "h.npz")


def test_reading_metadata_names_the_file():
    with pytest.raises(CheckpointError, match=r"checkpoint x.npz: incomplete or malformed metadata \(KeyError"):
        with checkpoint.reading_metadata("x.npz"):
            {}["num_classes"]
    with pytest.raises(CheckpointError, match="^own$"):  # a CheckpointError passes unchanged
        with checkpoint.reading_metadata("x.npz"):
            raise CheckpointError("own")


def test_checkpoint_of_another_model_names_a_few_mismatches_and_the_count(tmp_path):
    """Every tensor of a wider model mismatches: the message stays short, says how many and which model."""
    from tinycomp import models

    path = tmp_path / "wide.npz"
    checkpoint.save(path, models.get("resnet20", width=0.5).state_dict(), None,
                    {"config": {"model": "resnet20", "width": 0.5}})
    with pytest.raises(CheckpointError) as err:
        checkpoint.load_into(path, models.get("resnet20", width=0.25))
    message = str(err.value)
    assert len(message) < 800, message
    assert "it holds a 'resnet20' model of width 0.5" in message
    shapes = message.count(" in the state dict, ")
    assert shapes == 5 and "problems:" in message
    total = int(message.split(" problems:")[0].rsplit(" ", 1)[-1])
    assert f"... and {total - 5} more" in message and total > 50


@pytest.mark.parametrize("make", [lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9), lambda ps: optim.Adam(ps, lr=0.1)])
def test_optimizer_state_of_a_0d_parameter_round_trips(tmp_path, make):
    """A quantizer's step or alpha is a () Parameter: its momentum buffer is a 0-d array, not a count."""
    p, q = nn.Parameter(np.ones((), np.float32)), nn.Parameter(np.ones(3, np.float32))
    opt = make([p, q])
    (p * 2.0 + q.sum()).backward()
    opt.step()
    checkpoint.save(tmp_path / "c.npz", {}, opt.state_dict(), {})
    again = make([p, q])
    again.load_state_dict(checkpoint.load(tmp_path / "c.npz")["optimizer"])
    for k, v in opt.state[id(p)].items():
        np.testing.assert_array_equal(again.state[id(p)][k], v)
        assert type(again.state[id(p)][k]) is type(v)
