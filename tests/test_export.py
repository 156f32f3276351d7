"""tinycomp.export: the file's layout, BatchNorm folding, sizes against the summary, what is refused,
and ``tinycomp export`` on the command line."""
import numpy as np
import pytest
from cli_helpers import tinycomp
from export_helpers import NORMALIZE, file_and_summary_bytes, images, logits, meta, model, read_export as _read
from tinycomp_kernels.bits import unpack_signs

from tinycomp import checkpoint, compress, models, runtime
from tinycomp.export import ExportError, export, export_checkpoint


def _tensor(arrays, ref):
    return arrays["float32"][ref["offset"]:ref["offset"] + ref["size"]]


def test_layout_three_plain_entries_with_a_versioned_header(tmp_path):
    path = tmp_path / "m.npz"
    export(model("bwn"), path, meta())
    header, arrays = _read(path)
    assert set(arrays) == {"header", "float32", "bits"}
    assert arrays["float32"].dtype == np.float32 and arrays["bits"].dtype == np.uint64
    assert header["format"] == runtime.FORMAT and header["method"] == "bwn"
    assert (header["model"], header["width"], header["num_classes"]) == ("resnet20", 0.25, 10)
    assert header["normalize"] == NORMALIZE and header["dataset"] == "cifar10"
    assert [op["op"] for op in header["ops"]] == ["conv"] + ["basic_block"] * 9 + ["global_avg_pool", "linear"]
    assert header["entries"] == {"float32": arrays["float32"].size, "bits": arrays["bits"].size}
    assert not list(tmp_path.glob(".tmp-*"))  # written atomically: no temporary left


def test_batchnorm_is_folded_and_binary_weights_are_the_training_signs(tmp_path):
    m = model("bwn")
    path = tmp_path / "m.npz"
    export(m, path, meta())
    header, arrays = _read(path)
    stem = header["ops"][0]["layer"]
    bn = m.bn1
    s = bn.weight.data / np.sqrt(bn.running_var.astype(np.float64) + bn.eps)
    np.testing.assert_allclose(_tensor(arrays, stem["weight"]).reshape(stem["shape"]),
                               m.conv1.weight.data * s[:, None, None, None], rtol=1e-6)
    np.testing.assert_allclose(_tensor(arrays, stem["bias"]), bn.bias.data - bn.running_mean * s, rtol=1e-5, atol=1e-6)
    layer = header["ops"][1]["conv1"]
    conv, bn = m.layer1[0].conv1, m.layer1[0].bn1
    w = conv.weight.data
    ref = layer["weight"]
    words = arrays["bits"][ref["offset"]:ref["offset"] + ref["size"]]
    np.testing.assert_array_equal(unpack_signs(words.reshape(1, -1), w.size).reshape(w.shape), np.where(w >= 0, 1, -1))
    s = bn.weight.data / np.sqrt(bn.running_var.astype(np.float64) + bn.eps)
    np.testing.assert_allclose(_tensor(arrays, layer["scale"]), np.abs(w).mean(axis=(1, 2, 3)) * s, rtol=1e-5)


@pytest.mark.parametrize("method", ["bwn", "xnor"])
def test_file_size_is_the_summary_memory_plus_a_small_header(tmp_path, method):
    size, summary_bytes, _ = file_and_summary_bytes(tmp_path, method)
    assert size <= 1.10 * summary_bytes + 16 * 1024, (size, summary_bytes)
    assert size < summary_bytes * 32 / 16  # far below the float model (its 32 bits a parameter): not unpacked


def test_a_3x3_bwn_layer_payload_is_at_most_a_twentieth_of_float(tmp_path):
    m = models.get("resnet20")
    compress.convert(m, "bwn")
    path = tmp_path / "m.npz"
    export(m, path, meta(width=1.0))
    header, _ = _read(path)
    layer = header["ops"][1]["conv1"]
    assert layer["kind"] == "binary_weight" and layer["shape"][2:] == [3, 3]
    payload = 8 * layer["weight"]["size"] + 4 * layer["scale"]["size"]  # bits and alpha, in bytes
    assert payload <= 4 * np.prod(layer["shape"]) / 20, payload


def test_float_and_bc_layers_have_the_kinds_of_their_method(tmp_path):
    for method, kind in (("none", "float"), ("bc", "binary_weight"), ("xnor", "xnor")):
        path = tmp_path / f"{method}.npz"
        export(model(method), path, meta())
        header, _ = _read(path)
        block = header["ops"][4]  # layer2.0: stride 2, with the 1x1 projection
        assert block["op"] == ("bireal_block" if method == "xnor" else "basic_block")
        assert {block[k]["kind"] for k in ("conv1", "conv2", "shortcut")} == {kind}
        assert header["ops"][0]["layer"]["kind"] == header["ops"][-1]["layer"]["kind"] == "float"  # kept float


@pytest.mark.parametrize("make, words", [
    (lambda: compress.convert(models.get("vgg_small", width=0.25), "bwn"), "resnet20, resnet32"),
    (lambda: compress.convert(models.get("resnet20", width=0.25), "xnor", act_scale=True), "activation scale"),
    (lambda: compress.convert(models.get("resnet20", width=0.25, shortcut="A"), "bwn"), "option A"),
])
def test_unsupported_models_and_methods_are_refused_saying_what_is(tmp_path, make, words):
    with pytest.raises(ExportError, match=words):
        export(make(), tmp_path / "m.npz", meta())
    assert not (tmp_path / "m.npz").exists()


def test_export_of_a_checkpoint_and_on_the_command_line(tmp_path):
    m = model("xnor")
    cfg = {"model": "resnet20", "width": 0.25, "dataset": "cifar10", "method": "xnor"}
    ckpt = tmp_path / "last.npz"
    checkpoint.save(ckpt, m.state_dict(), None, {"config": cfg, "num_classes": 10, "normalize": NORMALIZE})
    export_checkpoint(ckpt, tmp_path / "py.npz")
    x = images(50)
    np.testing.assert_array_equal(runtime.load(tmp_path / "py.npz")(x).argmax(axis=1), logits(m, x).argmax(axis=1))
    r = tinycomp("export", str(ckpt), "--out", str(tmp_path / "cli.npz"))
    assert r.returncode == 0 and "xnor" in r.stdout, r.stderr
    assert (tmp_path / "cli.npz").read_bytes() == (tmp_path / "py.npz").read_bytes()


def test_export_on_the_command_line_refuses_bad_input_exit_2(tmp_path):
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    pruned_ckpt = tmp_path / "prune-w4a32.npz"
    pruned_model = compress.build_model({"model": "resnet20", "width": 0.25, "method": "prune+w4a32"}, 10)
    checkpoint.save(pruned_ckpt, pruned_model.state_dict(), None,
                    {"config": {"model": "resnet20", "width": 0.25, "dataset": "cifar10", "method": "prune+w4a32"},
                     "num_classes": 10, "normalize": NORMALIZE})
    for path, words in ((tmp_path / "absent.npz", "no such file"), (tmp_path / "junk.npz", "not an .npz"),
                        (pruned_ckpt, "method 'prune+w4a32' is not exported yet")):
        r = tinycomp("export", str(path), "--out", str(tmp_path / "out.npz"))
        assert r.returncode == 2 and str(path) in r.stderr and words in r.stderr, r.stderr
        assert "Traceback" not in r.stderr
    assert not (tmp_path / "out.npz").exists()
    good = tmp_path / "good.npz"
    checkpoint.save(good, models.get("resnet20", width=0.25).state_dict(), None,
                    {"config": {"model": "resnet20", "width": 0.25, "dataset": "cifar10"}, "num_classes": 10,
                     "normalize": NORMALIZE})
    out = tmp_path / "no_such_folder" / "out.npz"
    r = tinycomp("export", str(good), "--out", str(out))
    assert r.returncode == 2 and str(out) in r.stderr and "Traceback" not in r.stderr, r.stderr
