"""tinycomp eval and summary of an exported model (beside its checkpoint) on a tiny synthetic CIFAR-10,
eval --json for both kinds of file, and the refusal of bad exported files on the command line."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from data_helpers import small_spec, write_folder
from export_helpers import NORMALIZE, model

from tinycomp import checkpoint, runtime
from tinycomp.cli import main
from tinycomp.data import CIFAR10, formats
from tinycomp.export import export_checkpoint

TEST_IMAGES = 40


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """(checkpoint, its exported model) of a BWN ResNet-20 at width 0.25 with non-trivial BatchNorms."""
    folder = tmp_path_factory.mktemp("files")
    cfg = {"model": "resnet20", "width": 0.25, "dataset": "cifar10", "method": "bwn"}
    ckpt, exported = folder / "last.npz", folder / "model.npz"
    checkpoint.save(ckpt, model("bwn").state_dict(), None, {"config": cfg, "num_classes": 10, "normalize": NORMALIZE})
    export_checkpoint(ckpt, exported)
    return ckpt, exported


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    """A CIFAR-10 folder of TEST_IMAGES test images, which "cifar10" names for the test's duration."""
    spec = small_spec(CIFAR10, records=TEST_IMAGES)
    write_folder(tmp_path, spec)
    monkeypatch.setitem(formats.SPECS, "cifar10", spec)
    return str(tmp_path)


def _run(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_eval_of_an_exported_file_prints_what_its_checkpoint_does(files, data_dir, capsys):
    ckpt, exported = files
    code, from_ckpt, _ = _run(capsys, "eval", ckpt, "--data-dir", data_dir, "--no-download")
    assert code == 0
    code, from_export, err = _run(capsys, "eval", exported, "--data-dir", data_dir, "--no-download", "--batch-size", 7)
    assert code == 0, err
    first_ckpt, first_export = from_ckpt.splitlines()[0], from_export.splitlines()[0]
    assert first_export.startswith("resnet20 (width 0.25, method bwn, exported model) on CIFAR-10 test set: accuracy")
    assert first_ckpt.split(", loss")[0].replace("epoch unknown", "exported model") == first_export.split(", loss")[0]
    assert from_ckpt.splitlines()[1:] == from_export.splitlines()[1:]  # per class, to 0.01 %
    assert len(from_export.splitlines()) == 11


def test_eval_json_of_both_kinds_of_file(files, data_dir, capsys):
    ckpt, exported = files
    results = {}
    for path in files:
        code, out, _ = _run(capsys, "eval", path, "--data-dir", data_dir, "--no-download", "--json")
        assert code == 0
        results[path] = json.loads(out)  # stdout holds the JSON alone
    common = {"test_acc", "test_loss", "per_class_acc", "images", "dataset", "model", "width", "method", "kind", "file"}
    assert common <= set(results[exported]) and common | {"epoch", "mid_epoch", "mid_epoch_batch"} <= set(results[ckpt])
    assert results[exported]["kind"] == "exported" and results[ckpt]["kind"] == "checkpoint"
    assert results[ckpt]["mid_epoch"] is False and results[ckpt]["epoch"] is None
    for r in results.values():
        assert (r["model"], r["width"], r["method"], r["images"]) == ("resnet20", 0.25, "bwn", TEST_IMAGES)
        assert len(r["per_class_acc"]) == 10
    assert results[exported]["test_acc"] == results[ckpt]["test_acc"]
    assert abs(results[exported]["test_loss"] - results[ckpt]["test_loss"]) < 1e-4


def test_eval_against_compares_an_exported_file_with_its_checkpoint(files, data_dir, capsys, tmp_path):
    ckpt, exported = files
    code, out, err = _run(capsys, "eval", exported, "--against", ckpt, "--data-dir", data_dir, "--no-download",
                          "--json")
    assert code == 0, err
    r = json.loads(out)
    assert (r["images"], r["agreement"], r["disagreeing"], r["method"]) == (TEST_IMAGES, 1.0, 0, "bwn")
    assert r["exported_acc"] == r["checkpoint_acc"] and 0 <= r["max_logit_diff"] < 1e-4
    code, out, _ = _run(capsys, "eval", exported, "--against", ckpt, "--data-dir", data_dir, "--no-download")
    assert code == 0 and f"predict the same class for 100.00 % of {TEST_IMAGES} images (0 differ)" in out


def test_eval_against_refuses_swapped_files_and_another_network(files, data_dir, capsys, tmp_path):
    ckpt, exported = files
    code, _, err = _run(capsys, "eval", ckpt, "--against", exported, "--data-dir", data_dir, "--no-download")
    assert code == 2 and "--against: compare an exported model with the checkpoint it came from" in err
    other = tmp_path / "other.npz"
    cfg = {"model": "resnet20", "width": 0.25, "dataset": "cifar10", "method": "bc"}
    checkpoint.save(other, model("bc").state_dict(), None, {"config": cfg, "num_classes": 10, "normalize": NORMALIZE})
    code, _, err = _run(capsys, "eval", exported, "--against", other, "--data-dir", data_dir, "--no-download")
    assert code == 2 and f"checkpoint {other} has method 'bc' but exported model {exported} has 'bwn'" in err


def test_a_file_is_told_apart_by_content_not_name(files, data_dir, capsys, tmp_path):
    ckpt, exported = files
    disguised = tmp_path / "looks_like_a_checkpoint.ckpt"
    disguised.write_bytes(exported.read_bytes())
    code, out, _ = _run(capsys, "eval", disguised, "--data-dir", data_dir, "--no-download", "--json")
    assert code == 0 and json.loads(out)["kind"] == "exported"


def test_summary_of_an_exported_file(files, capsys):
    ckpt, exported = files
    code, text, _ = _run(capsys, "summary", exported)
    assert code == 0
    size = os.path.getsize(exported)
    assert f"file on disk {size:,} bytes" in text and "layer1.0.conv1" in text and "binary_weight" in text
    # each layer's kernel as the runtime chose it at load (runtime/paths.py's rule)
    paths = {name: path for name, _, path in runtime.load(exported).layers()}
    assert paths["layer1.0.conv1"] in text.split("layer1.0.conv1", 1)[1].splitlines()[0]
    code, out, _ = _run(capsys, "summary", exported, "--json")
    s = json.loads(out)
    assert s["kind"] == "exported" and s["method"] == "bwn" and s["total"]["file_bytes"] == size
    rows = {r["name"]: r for r in s["layers"]}
    conv = rows["layer1.0.conv1"]  # 4x4x3x3 signs in ceil(144/64) = 3 words, a scale and a bias per filter
    assert (conv["kind"], conv["shape"], conv["output"]) == ("binary_weight", [4, 4, 3, 3], [4, 32, 32])
    assert conv["params"] == 144 + 4 + 4 and conv["stored_bits"] == 3 * 64 + 32 * 8
    assert rows["conv1"]["kind"] == "float" and rows["conv1"]["stored_bits"] == 32 * (4 * 27 + 4)
    total = s["total"]
    assert total["stored_bits"] == 8 * total["tensor_bytes"] == sum(r["stored_bits"] for r in s["layers"])
    assert total["tensor_bytes"] + total["header_bytes"] <= size
    code, out, _ = _run(capsys, "summary", ckpt, "--json")
    trained = json.loads(out)["total"]
    assert total["macs"] == trained["macs"]  # the same convolutions and classifier
    assert total["tensor_bytes"] <= trained["param_bytes"] * 1.1  # BatchNorm folded: no larger than counted


# --- refusals ------------------------------------------------------------------------------------------
def _parts(path):
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def _with_header(arrays, change):
    """``arrays`` with ``change(header dict)`` applied to a copy of the header."""
    header = json.loads(arrays["header"].tobytes().decode())
    change(header)
    return dict(arrays, header=np.frombuffer(json.dumps(header).encode(), np.uint8))


def _broken(folder, good):
    """{name: (path, words the error must contain)}: one defect each."""
    arrays = _parts(good)
    data = good.read_bytes()
    cases = {
        "version": (lambda h: h.update(format="tinycomp-export-0"), "header.format"),
        "shape": (lambda h: h["ops"][2]["conv1"]["shape"].__setitem__(0, 5), "ops[2].conv1"),
        "range": (lambda h: h["ops"][3]["conv2"]["scale"].update(offset=arrays["float32"].size), "ops[3].conv2.scale"),
        "words": (lambda h: h["ops"][5]["conv1"]["weight"].update(offset=arrays["bits"].size - 1),
                  "ops[5].conv1.weight"),
    }
    out = {}
    for name, (change, words) in cases.items():
        np.savez(folder / f"{name}.npz", **_with_header(arrays, change))
        out[name] = (folder / f"{name}.npz", words)
    (folder / "truncated.npz").write_bytes(data[: len(data) // 2])
    out["truncated"] = (folder / "truncated.npz", "not an .npz archive")
    np.savez(folder / "pickled.npz", **dict(arrays, float32=np.array([[1.0], "x"], dtype=object)))
    out["pickled"] = (folder / "pickled.npz", "entry float32: holds Python objects")
    np.savez(folder / "neither.npz", weights=np.zeros(3))
    out["neither"] = (folder / "neither.npz", "neither a tinycomp checkpoint")
    return out


def test_bad_exported_files_exit_2_naming_file_and_entry(files, tmp_path):
    """Each file through ``python -m tinycomp eval`` in a process of its own (the processes run side by
    side), and through summary and bench in one more child: exit 2, the file and the entry named, no
    traceback, no crash."""
    broken = _broken(tmp_path, files[1])
    evals = {name: subprocess.Popen([sys.executable, "-m", "tinycomp", "eval", str(path), "--no-download"],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for name, (path, _) in broken.items()}
    script = ("import contextlib, io, json, sys\nfrom tinycomp.cli import main\nout = {}\n"
              "for p in sys.argv[1:]:\n    for cmd in (['summary', p], ['bench', p, '--repeats', '1']):\n"
              "        err = io.StringIO()\n        with contextlib.redirect_stderr(err):\n"
              "            out[cmd[0] + ' ' + p] = [main(cmd), err.getvalue()]\nprint(json.dumps(out))\n")
    others = subprocess.run([sys.executable, "-c", script, *(str(p) for p, _ in broken.values())],
                            capture_output=True, text=True, timeout=300)
    assert others.returncode == 0, others.stderr
    others = json.loads(others.stdout)
    for name, (path, words) in broken.items():
        stdout, stderr = evals[name].communicate(timeout=300)
        results = [(evals[name].returncode, stderr)] + [others[f"{cmd} {path}"] for cmd in ("summary", "bench")]
        for code, message in results:
            assert code == 2 and message.count(str(path)) == 1 and words in message, (name, code, message)
            assert "Traceback" not in message and stdout == ""
