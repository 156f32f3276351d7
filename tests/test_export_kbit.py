"""tinycomp.export of k-bit and ternary models: the header entries, weight codes on the training
recipe's grid, BatchNorm and input scales folded, file sizes against the summary, and refusals at
export and at load (naming the file and the entry)."""
import json

import numpy as np
import pytest
from export_helpers import assert_refused, assert_refused_in_fresh_process, file_and_summary_bytes, meta, model
from export_helpers import path_rules, read_export
from tinycomp_kernels.batchnorm import batch_norm_eval_affine
from tinycomp_kernels.bitserial import pack_planes, unpack_planes

from tinycomp import compress, models, nn, runtime
from tinycomp.autograd import no_grad
from tinycomp.compress import recipes
from tinycomp.compress import quantizers as Q
from tinycomp.export import ExportError, export
from tinycomp.runtime.summary import summarize as summarize_exported
from tinycomp.tensor import Tensor


@pytest.fixture(autouse=True, scope="module")
def _kernel_path_table():
    """Every layer on its bit-serial / binary-weight kernel where the kernels' table puts it, whatever
    CPU runs the tests (the float table is tested in test_runtime_kbit.py)."""
    with path_rules("kernels"):
        yield


def _floats(arrays, ref):
    return arrays["float32"][ref["offset"]:ref["offset"] + ref["size"]]


def _exported(tmp_path, method, width=0.25, **options):
    m = model(method, width=width, **options)
    path = tmp_path / f"{method}.npz"
    export(m, path, meta(width=width))
    return m, path


def _bn_scale(bn):
    return bn.weight.data / np.sqrt(bn.running_var.astype(np.float64) + bn.eps)


@pytest.mark.parametrize("method, quantizer", [("w2a2", "dorefa"), ("w1a2", "dorefa"), ("w3a2", "pact"),
                                               ("w4a3", "lsq"), ("ternary", "dorefa"), ("w4a32", "lsq")])
def test_entries_hold_the_training_codes_and_scales(tmp_path, method, quantizer):
    m, path = _exported(tmp_path, method, quantizer=quantizer)
    header, arrays = read_export(path)
    entry = header["ops"][1]["conv1"]
    conv, bn = m.layer1[0].conv1, m.layer1[0].bn1
    O = conv.out_channels
    kbit = not method.endswith("a32") and method != "ternary"
    assert entry["kind"] == ("kbit" if kbit else "kbit_weight") and header["method"] == method
    assert header["ops"][0]["layer"]["kind"] == header["ops"][-1]["layer"]["kind"] == "float"  # kept float
    ref = entry["weight"]
    lo, hi = entry["codes"]
    a, z = entry["affine"]
    assert ref["count"] == conv.weight.data.size and ref["size"] == ref["planes"] * -(-ref["count"] // 64)
    words = arrays["bits"][ref["offset"]:ref["offset"] + ref["size"]].reshape(ref["planes"], 1, -1)
    codes = unpack_planes(words, ref["count"], ref["signed"]).reshape(conv.weight.shape)
    assert lo <= codes.min() and codes.max() <= hi and ref["signed"] == (lo < 0)
    with no_grad():
        wq = conv.quantized_weight().data.astype(np.float64)
        s_w = np.abs(wq).reshape(O, -1).max(axis=1) / np.abs(a * codes - z).reshape(O, -1).max(axis=1)
        np.testing.assert_allclose(wq, s_w[:, None, None, None] * (a * codes - z), rtol=1e-6, atol=1e-7)
    s_x = 1.0
    if kbit:
        spec, iq = entry["input"], conv.input_quantizer
        assert spec["quantizer"] == quantizer and spec["bits"] == iq.bits
        levels = 2 ** iq.bits - 1
        s_x = {"dorefa": lambda: 1 / levels, "pact": lambda: float(np.float32(iq.alpha.data) / np.float32(levels)),
               "lsq": lambda: float(iq.step.data)}[quantizer]()
        if quantizer != "dorefa":
            assert _floats(arrays, spec["alpha" if quantizer == "pact" else "step"])[0] == \
                (iq.alpha.data if quantizer == "pact" else iq.step.data)
    if kbit:  # a network with k-bit inputs keeps its BatchNorms unfolded, as the graph applies them
        np.testing.assert_allclose(_floats(arrays, entry["scale"]), s_w * s_x, rtol=1e-6)
        np.testing.assert_array_equal(_floats(arrays, entry["bias"]), 0)
        scale, shift = batch_norm_eval_affine(O, bn.running_mean, bn.running_var, bn.weight.data, bn.bias.data, bn.eps)
        np.testing.assert_array_equal(_floats(arrays, entry["bn"]["scale"]), scale)
        np.testing.assert_array_equal(_floats(arrays, entry["bn"]["shift"]), shift)
        assert "bn" in header["ops"][0]["layer"]  # the float stem too
        return
    assert "bn" not in entry
    np.testing.assert_allclose(_floats(arrays, entry["scale"]), _bn_scale(bn) * s_w * s_x, rtol=1e-5)
    np.testing.assert_allclose(_floats(arrays, entry["bias"]), bn.bias.data - bn.running_mean * _bn_scale(bn),
                               rtol=1e-5, atol=1e-6)


def test_ternary_codes_are_twn_signs_in_two_signed_planes(tmp_path):
    m, path = _exported(tmp_path, "ternary")
    header, _ = read_export(path)
    entry = header["ops"][2]["conv2"]
    assert entry["codes"] == [-1, 1] and entry["affine"] == [1, 0]
    assert (entry["weight"]["planes"], entry["weight"]["signed"]) == (2, True)
    layer = [l for op in runtime.load(path).ops for l in op[1:] if getattr(l, "name", "") == "layer1.1.conv2"][0]
    with no_grad():
        q = Q.ternarize_weight(Tensor(m.layer1[1].conv2.weight.data)).data
    np.testing.assert_array_equal(layer.codes, np.sign(q))


@pytest.mark.parametrize("method, quantizer", [("w2a2", "dorefa"), ("w4a4", "pact"), ("w3a3", "lsq"),
                                               ("ternary", "dorefa"), ("w4a32", "dorefa"), ("w8a8", "dorefa")])
def test_file_size_is_the_summary_memory_plus_a_small_header(tmp_path, method, quantizer):
    size, summary_bytes, path = file_and_summary_bytes(tmp_path, method, quantizer=quantizer)
    assert size <= 1.10 * summary_bytes + 16 * 1024, (size, summary_bytes)
    bits = 2 if method == "ternary" else int(method[1])
    assert size < summary_bytes * 32 / (bits + 4)  # far below float32 weights: the codes stay packed
    t = summarize_exported(runtime.load(path))["total"]
    assert t["tensor_bytes"] + t["header_bytes"] <= size
    weight_only = method.endswith("a32") or method == "ternary"
    assert t["kbit_macs"] == (0 if weight_only else t["macs"] - t["float_macs"]) and t["binary_macs"] == 0


# --- refusals at export --------------------------------------------------------------------------
def _signed_lsq_inputs():
    m = compress.convert(models.get("resnet20", width=0.25), "w2a2", quantizer="lsq")
    m.layer1[0].conv1.input_quantizer.signed = True
    return m


def _per_channel_alpha():
    m = compress.convert(models.get("resnet20", width=0.25), "w2a2", quantizer="pact")
    m.layer1[0].conv1.input_quantizer.alpha = nn.Parameter(np.full((1, 4, 1, 1), 3.0, np.float32))
    return m


def _float_weights_kbit_inputs():
    m = compress.convert(models.get("resnet20", width=0.25), "w2a2")
    m.layer2[0].conv2.weight_quantizer = None
    return m


def _binary_weights_kbit_inputs():
    m = compress.convert(models.get("resnet20", width=0.25), "w2a2")
    m.layer2[0].conv2.weight_quantizer = recipes.BinaryWeight()
    return m


def _unknown_method():
    m = compress.convert(models.get("resnet20", width=0.25), "w2a2")
    m.compression["method"] = "w2a2x"
    return m


@pytest.mark.parametrize("make, words", [
    (_signed_lsq_inputs, "layer1.0.conv1 quantizes its input with signed LSQ"),
    (_per_channel_alpha, "layer1.0.conv1: PACT has a parameter of shape (1, 4, 1, 1)"),
    (_float_weights_kbit_inputs, "layer2.0.conv2 has quantizers NoneType / DorefaActivation"),
    (_binary_weights_kbit_inputs, "layer2.0.conv2 has quantizers BinaryWeight / DorefaActivation"),
    (_unknown_method, "method 'w2a2x' is not exported yet; supported: none, bc, bwn, xnor, ternary, w<k>a<m>"),
])
def test_unsupported_kbit_layers_are_refused_saying_what_is(tmp_path, make, words):
    with pytest.raises(ExportError, match=words.replace("(", r"\(").replace(")", r"\)")):
        export(make(), tmp_path / "m.npz", meta())
    assert not (tmp_path / "m.npz").exists()


# --- refusals at load ----------------------------------------------------------------------------
def _write(path, header, arrays):
    np.savez(path, **dict(arrays, header=np.frombuffer(json.dumps(header).encode(), np.uint8)))
    return path


def _drop(d, key):
    del d[key]


def _bad_files(tmp_path):
    """{name: (path, words its error must contain)}: one broken copy of a good k-bit file each."""
    _, good = _exported(tmp_path, "w2a2", quantizer="pact")
    _, tern = _exported(tmp_path, "ternary")
    bad = {}

    def edit(name, source, change, words):
        """``change(header, arrays)`` edits the header in place, or returns new arrays."""
        header, arrays = read_export(source)
        new_arrays = change(header, arrays)
        arrays = arrays if new_arrays is None else new_arrays
        bad[name] = (_write(tmp_path / f"{name}.npz", header, arrays), words)

    def ternary_code_minus_two(header, arrays):  # -2 is a 2-bit signed pattern but not a ternary code
        ref = header["ops"][1]["conv1"]["weight"]
        codes = np.zeros((1, ref["count"]), np.int64)
        codes[0, 5] = -2
        words = arrays["bits"].copy()
        words[ref["offset"]:ref["offset"] + ref["size"]] = pack_planes(codes, 2, signed=True).reshape(-1)
        return dict(arrays, bits=words)

    edit("range", tern, ternary_code_minus_two, "ops[1].conv1.weight: codes in [-2, 0], outside the header's codes [-1, 1]")
    edit("planes", good, lambda h, a: h["ops"][1]["conv1"]["weight"].update(planes=3),
         "ops[1].conv1.weight: size 6 disagrees")
    edit("too_many_planes", good, lambda h, a: h["ops"][2]["conv2"].update(codes=[0, 1]),
         "ops[2].conv2.weight: 2 unsigned planes, but codes in [0, 1] take 1 unsigned ones")
    edit("signed", good, lambda h, a: h["ops"][1]["conv2"]["weight"].update(signed=True),
         "ops[1].conv2.weight: 2 signed planes, but codes in [0, 3] take 2 unsigned ones")
    edit("count", good, lambda h, a: h["ops"][3]["conv1"]["weight"].update(count=7), "ops[3].conv1.weight: holds 7 codes")
    edit("bad_range", good, lambda h, a: h["ops"][3]["conv2"].update(codes=[3, 0]), "ops[3].conv2.codes")
    edit("affine", good, lambda h, a: h["ops"][4]["conv1"].update(affine=[0, 3]), "ops[4].conv1.affine")
    edit("quantizer", good, lambda h, a: h["ops"][4]["conv2"]["input"].update(quantizer="mystery"),
         "ops[4].conv2.input.quantizer")
    edit("input_bits", good, lambda h, a: h["ops"][5]["conv1"]["input"].update(bits=9), "ops[5].conv1.input.bits")
    edit("no_alpha", good, lambda h, a: _drop(h["ops"][5]["conv2"]["input"], "alpha"), "ops[5].conv2.input.alpha: missing")
    edit("no_input", good, lambda h, a: _drop(h["ops"][6]["conv1"], "input"), "ops[6].conv1.input: missing")

    def negative_alpha(header, arrays):
        floats = arrays["float32"].copy()
        floats[header["ops"][6]["conv2"]["input"]["alpha"]["offset"]] = -1.0
        return dict(arrays, float32=floats)

    edit("alpha", good, negative_alpha, "ops[6].conv2.input.alpha: -1.0 is not > 0")

    def tail_bit(header, arrays):
        ref = header["ops"][1]["conv1"]["weight"]  # 4 * 4 * 9 = 144 codes: the last word of a plane has a tail
        words = arrays["bits"].copy()
        words[ref["offset"] + ref["size"] // ref["planes"] - 1] |= np.uint64(1) << np.uint64(63)
        return dict(arrays, bits=words)

    edit("tail", good, tail_bit, "ops[1].conv1.weight: nonzero tail bits past code 144")
    return bad


def test_bad_kbit_files_are_refused_naming_the_file_and_the_entry(tmp_path):
    assert_refused(_bad_files(tmp_path))


def test_bad_kbit_files_are_refused_in_a_fresh_process(tmp_path):
    assert_refused_in_fresh_process([p for p, _ in _bad_files(tmp_path).values()])
