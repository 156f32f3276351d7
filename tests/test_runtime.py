"""tinycomp.runtime: an exported model's logits against the eval-mode training graph, XNOR layers'
integer accumulators, and the refusal of bad files."""
import json
import zipfile

import numpy as np
import pytest
from tinycomp_kernels.conv import conv2d_ref

from tinycomp import runtime
from tinycomp.compress.layers import QuantConv2d
from tinycomp.runtime.layers import Conv

from export_helpers import assert_refused, assert_refused_in_fresh_process, exported as _exported, images, logits
from export_helpers import read_export as _parts, rows_close as _rows_close

N_IMAGES = 1000


@pytest.fixture(scope="module")
def batch():
    return images(N_IMAGES)


@pytest.mark.parametrize("method", ["none", "bc", "bwn", "xnor"])
def test_runtime_logits_equal_the_training_graph(tmp_path, batch, method):
    m, rt = _exported(tmp_path, method)
    ref, out = logits(m, batch), rt(batch)
    assert out.dtype == np.float32 and out.shape == (N_IMAGES, 10)
    assert (out.argmax(axis=1) == ref.argmax(axis=1)).mean() >= 0.999
    close = _rows_close(out, ref)
    if method == "xnor":
        # a pre-sign value within float rounding of 0 may take the other sign in one of the two graphs
        # (the training graph sums alpha * ±1 in float32, the kernel counts bits): rare, not everywhere
        assert close.mean() >= 0.99, close.mean()
    else:
        assert close.all(), np.flatnonzero(~close)[:10]


def test_xnor_disagreements_start_at_a_sign_within_rounding_of_zero(tmp_path, batch, monkeypatch):
    """Where the XNOR runtime's logits differ from the training graph's, the first XNOR layer input
    whose signs differ between the two graphs (in execution order) differs only where the value is
    within float rounding of 0; every image whose signs all agree has equal logits."""
    m, rt = _exported(tmp_path, "xnor", width=1.25)  # wide enough that a few images meet such a value
    x = batch[:500]
    names = {id(mod): name for name, mod in m.named_modules()}
    seen_training, seen_runtime = {}, {}
    training_forward, runtime_call = QuantConv2d.forward, Conv.__call__

    def training(self, v):
        seen_training[names[id(self)]] = v.data.copy()
        return training_forward(self, v)

    def running(self, v, **fused):
        if self.kind == "xnor":
            seen_runtime[self.name] = v.copy()
        return runtime_call(self, v, **fused)

    monkeypatch.setattr(QuantConv2d, "forward", training)
    monkeypatch.setattr(Conv, "__call__", running)
    ref, out = logits(m, x), rt(x)
    assert set(seen_runtime) <= set(seen_training) and len(seen_runtime) == 20  # the runtime runs a shortcut
    # before its block's conv1 (their order is free: both read the block's input)
    first_flip = {}
    for name, v in seen_runtime.items():
        flip = (v >= 0) != (seen_training[name] >= 0)
        for n in np.unique(np.nonzero(flip)[0]):
            if n not in first_flip:
                first_flip[n] = name
                at = np.abs(np.concatenate([v[n][flip[n]], seen_training[name][n][flip[n]]]))
                assert at.max() <= 1e-5, (n, name, at.max())
    close = _rows_close(out, ref)
    assert set(np.flatnonzero(~close)) <= set(first_flip)
    assert 0 < len(first_flip) < 0.02 * len(x)  # the check above met some flips, and they are rare


def test_resnet18_xnor_and_bwn_agree(tmp_path):
    """The ResNet-18 family (four stages, 1x1 projections on every stage change) at a small width."""
    x = images(64, seed=5)
    for method in ("xnor", "bwn"):
        m, rt = _exported(tmp_path, method, "resnet18", 0.125)
        ref, out = logits(m, x), rt(x)
        assert (out.argmax(axis=1) == ref.argmax(axis=1)).mean() >= 0.98
        assert _rows_close(out, ref).mean() >= (0.95 if method == "xnor" else 1.0)


@pytest.mark.parametrize("method, width, options", [
    ("xnor", 0.3, {}),      # 5, 10, 19 channels: binary_conv2d's word-per-tap path, not the shared-word one
    ("xnor", 1.25, {}),     # 20, 40, 80 channels: two words per pixel in the last stage
    ("bwn", 0.3, {"scale": "layer"}),
    ("xnor", 0.25, {"keep_float": ()}),  # the stem signs the image, the classifier is an XNOR linear
    ("bwn", 0.25, {"keep_float": ()}),   # a binary-weight stem and classifier
    ("bc", 0.25, {"keep_float": ("first", "last", "shortcuts")}),  # float 1x1 projections inside binary blocks
])
def test_widths_scales_and_kept_layers_agree(tmp_path, method, width, options):
    m, rt = _exported(tmp_path, method, "resnet20", width, **options)
    x = images(200, seed=7)
    ref, out = logits(m, x), rt(x)
    assert (out.argmax(axis=1) == ref.argmax(axis=1)).mean() >= 0.99
    assert _rows_close(out, ref).mean() >= (0.97 if method == "xnor" else 1.0)
    kinds = {name: kind for name, kind, _ in rt.layers()}
    kept = "keep_float" not in options or "first" in options["keep_float"]
    assert kinds["conv1"] == kinds["linear"] == ("float" if kept else "xnor" if method == "xnor" else "binary_weight")
    if "shortcuts" in options.get("keep_float", ()):
        assert kinds["layer2.0.shortcut.0"] == "float" and kinds["layer2.0.conv1"] == "binary_weight"


def test_xnor_integer_accumulators_are_exact(tmp_path):
    """Every XNOR layer's kernel output before the epilogue equals conv2d(sign x, sign W) of the
    training layer's own weights, zeros in x included (sign(0) = +1)."""
    m, rt = _exported(tmp_path, "xnor")
    training = dict(m.named_modules())
    rng = np.random.default_rng(3)
    xnor_layers = [op[k] for op in rt.ops for k in range(1, len(op)) if getattr(op[k], "kind", None) == "xnor"]
    assert len(xnor_layers) == 20  # 18 3x3 convs and the two 1x1 projections
    for layer in xnor_layers:
        O, C, KH, KW = layer.shape
        x = rng.standard_normal((2, C, 9, 9)).astype(np.float32)
        x[0, :, 0, :3] = 0.0
        ints = layer.integer_part(x)
        sx = np.where(x >= 0, 1.0, -1.0)
        sw = np.where(training[layer.name].weight.data >= 0, 1.0, -1.0)
        np.testing.assert_array_equal(ints, conv2d_ref(sx, sw, layer.stride, layer.padding), err_msg=layer.name)


def test_layer_paths_and_description(tmp_path):
    _, rt = _exported(tmp_path, "bwn")
    paths = {name: (kind, path) for name, kind, path in rt.layers()}
    assert paths["conv1"] == ("float", "conv2d_forward")
    # 4..16 channels: the float conv on ±1·scale weights (runtime.paths; both paths: test_runtime_kbit.py)
    assert paths["layer1.0.conv1"] == ("binary_weight", "conv2d_forward")
    assert paths["layer2.0.shortcut.0"] == ("binary_weight", "conv2d_forward")
    assert paths["linear"] == ("float", "matmul")
    assert "binary_weight" in rt.describe() and rt.method == "bwn" and rt.normalize["std"][0] == 0.25
    pixels = np.full((1, 3, 32, 32), 255, np.uint8)
    np.testing.assert_allclose(rt.preprocess(pixels)[0, :, 0, 0], (1 - np.array([0.49, 0.48, 0.45])) /
                               np.array([0.25, 0.24, 0.26]), rtol=1e-6)


# --- refusals ------------------------------------------------------------------------------------------
def _write(path, header, arrays, **extra):
    arrays = dict(arrays, header=np.frombuffer(json.dumps(header).encode(), np.uint8), **extra)
    np.savez(path, **arrays)
    return path


def _bad_files(tmp_path):
    """{name: (path, words its error must contain)} for one broken copy of a good file each."""
    _exported(tmp_path, "xnor")
    good = tmp_path / "resnet20-xnor.npz"
    header, arrays = _parts(good)
    bad = {}
    data = good.read_bytes()
    (tmp_path / "truncated.npz").write_bytes(data[: len(data) * 2 // 3])
    bad["truncated"] = (tmp_path / "truncated.npz", "not an .npz")
    bad["version"] = (_write(tmp_path / "version.npz", dict(header, format="tinycomp-export-0"), arrays),
                      "header.format")
    h = json.loads(json.dumps(header))
    h["ops"][1]["conv1"]["shape"][1] += 1  # one more input channel than the stored bits and the input
    bad["shape"] = (_write(tmp_path / "shape.npz", h, arrays), "ops[1].conv1.weight")
    h = json.loads(json.dumps(header))
    h["ops"][2]["conv2"]["bias"]["offset"] = arrays["float32"].size - 1
    bad["range"] = (_write(tmp_path / "range.npz", h, arrays), "ops[2].conv2.bias")
    h = json.loads(json.dumps(header))
    h["ops"][3]["conv1"]["weight"]["offset"] = -1
    bad["negative"] = (_write(tmp_path / "negative.npz", h, arrays), "ops[3].conv1.weight")
    h = json.loads(json.dumps(header))
    h["entries"]["bits"] += 1
    bad["entry_size"] = (_write(tmp_path / "entry_size.npz", h, arrays), "entry bits")
    h = json.loads(json.dumps(header))
    h["ops"][4]["conv2"]["stride"] = [2, 2]  # the residual sum would add two shapes
    bad["graph"] = (_write(tmp_path / "graph.npz", h, arrays), "ops[4]")
    nested = tmp_path / "nesting.npz"  # JSON nested past the recursion limit
    np.savez(nested, **dict(arrays, header=np.frombuffer(("[" * 100000 + "]" * 100000).encode(), np.uint8)))
    bad["nesting"] = (nested, "entry header")
    h = json.loads(json.dumps(header))
    h["ops"][1]["op"] = "mystery_block"
    bad["op"] = (_write(tmp_path / "op.npz", h, arrays), "ops[1].op")
    tail = arrays["bits"].copy()
    ref = header["ops"][1]["conv1"]["weight"]  # the first binary layer (conv1 is float)
    if ref["bits"] % 64:
        tail[ref["offset"] + ref["size"] - 1] |= np.uint64(1) << np.uint64(63)
        bad["tail"] = (_write(tmp_path / "tail.npz", header, dict(arrays, bits=tail)), "tail bits")
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, header=arrays["header"], float32=arrays["float32"], bits=np.array([{"a": 1}], dtype=object))
    bad["pickled"] = (pickled, "entry bits")
    bad["dtype"] = (_write(tmp_path / "dtype.npz", header, dict(arrays, float32=arrays["float32"].astype(np.float64))),
                    "entry float32")
    bad["extra"] = (_write(tmp_path / "extra.npz", header, arrays, extra=np.zeros(2)), "entry extra")
    with zipfile.ZipFile(tmp_path / "missing.npz", "w") as z:
        z.writestr("float32.npy", b"")
    bad["missing"] = (tmp_path / "missing.npz", "entry header")
    return bad


def test_bad_files_are_refused_naming_the_file_and_the_entry(tmp_path):
    assert_refused(_bad_files(tmp_path))
    with pytest.raises(runtime.FormatError, match="no such file"):
        runtime.load(tmp_path / "absent.npz")


def test_bad_files_are_refused_in_a_fresh_process(tmp_path):
    """No crash (segfault, kernel assertion) hides behind the refusals: each file is loaded in a child
    process that must print a FormatError for every one."""
    assert_refused_in_fresh_process([p for p, _ in _bad_files(tmp_path).values()])


def test_runtime_model_refuses_bad_inputs(tmp_path):
    _, rt = _exported(tmp_path, "bwn")
    with pytest.raises(TypeError, match="float"):
        rt(np.zeros((1, 3, 32, 32), np.uint8))
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        rt(np.zeros((1, 4, 32, 32), np.float32))
