"""tinycomp.export of pruned, SAL, thinned and shift networks: what the file holds (CSR at the mask's
kept positions, SAL's tap codes in each index form, the thinned channel counts, the shift), sizes
against the summary, what is refused."""
import os

import numpy as np
import pytest
from export_helpers import meta, read_export
from structured_helpers import exported_structured, structured_model
from tinycomp_kernels.bitserial import unpack_planes
from tinycomp_kernels.csr import csr_to_dense

from tinycomp import bench, models, nn, runtime
from tinycomp.export import ExportError, export
from tinycomp.runtime.summary import summarize as runtime_summary
from tinycomp.summary import summarize


def _span(arrays, pool, ref):
    return arrays[pool][ref["offset"]:ref["offset"] + ref["size"]]


def _fold(bn):
    s = bn.weight.data / np.sqrt(bn.running_var.astype(np.float64) + bn.eps)
    return s, bn.bias.data - bn.running_mean * s


def _exported(tmp_path, method, name="resnet20", width=0.25, **options):
    return exported_structured(tmp_path, method, name, width, **options)


def test_a_pruned_layer_is_csr_at_the_kept_positions_with_batchnorm_folded(tmp_path):
    m, path = _exported(tmp_path, "prune", sparsity=0.8)
    header, arrays = read_export(path)
    assert set(arrays) == {"header", "float32", "bits", "int32"} and arrays["int32"].dtype == np.int32
    assert header["entries"]["int32"] == arrays["int32"].size and header["method"] == "prune"
    entry = header["ops"][1]["conv1"]
    conv, bn = m.layer1[0].conv1, m.layer1[0].bn1
    O = conv.out_channels
    assert entry["kind"] == "sparse" and entry["nnz"] == np.count_nonzero(conv.weight_mask)
    indptr, indices = _span(arrays, "int32", entry["indptr"]), _span(arrays, "int32", entry["indices"])
    values = _span(arrays, "float32", entry["values"])
    dense = csr_to_dense(indptr.astype(np.int64), indices, values, conv.weight.data[0].size).reshape(conv.weight.shape)
    s, t = _fold(bn)
    np.testing.assert_allclose(dense, conv.weight.data * conv.weight_mask * s[:, None, None, None], rtol=1e-6)
    np.testing.assert_array_equal(csr_to_dense(indptr.astype(np.int64), indices, np.ones_like(values), dense[0].size),
                                  conv.weight_mask.reshape(O, -1))  # every kept slot stored, a zero weight too
    np.testing.assert_allclose(_span(arrays, "float32", entry["bias"]), t, rtol=1e-5, atol=1e-6)
    assert header["ops"][0]["layer"]["kind"] == header["ops"][-1]["layer"]["kind"] == "float"  # never pruned


def test_prune_bwn_stores_the_signs_of_the_kept_weights_and_alpha_over_them(tmp_path):
    m, path = _exported(tmp_path, "prune+bwn", sparsity=0.7)
    header, arrays = read_export(path)
    entry = header["ops"][2]["conv2"]
    conv, bn = m.layer1[1].conv2, m.layer1[1].bn2
    assert entry["kind"] == "sparse_binary_weight"
    kept = conv.weight_mask.reshape(conv.out_channels, -1) != 0
    w = conv.weight.data.reshape(conv.out_channels, -1)
    words = _span(arrays, "bits", entry["values"])
    signs = unpack_planes(words.reshape(1, 1, -1), entry["nnz"])[0]  # one plane: the sign bits
    np.testing.assert_array_equal(signs, (w[kept] >= 0).astype(np.int64))
    alpha = np.array([np.abs(w[o][kept[o]]).mean() for o in range(len(w))])
    np.testing.assert_allclose(_span(arrays, "float32", entry["scale"]), alpha * _fold(bn)[0], rtol=1e-5)


@pytest.mark.parametrize("temperature, shared, form", [(20.0, False, "codes"), (2.0, False, "mask"),
                                                        (20.0, True, "shared")])
def test_sal_taps_are_stored_in_the_smaller_index_form(tmp_path, temperature, shared, form):
    m, path = _exported(tmp_path, "sal", temperature=temperature, sal_shared=shared)
    header, arrays = read_export(path)
    entry = header["ops"][3]["conv1"]
    conv = m.layer1[2].conv1
    taps = conv.tap_index()
    assert entry["kind"] == "sal" and entry["index"] == form and entry["nnz"] == conv.kept_pairs()
    ref = entry["taps"]
    assert ref["planes"] == 4 and not ref["signed"]
    codes = unpack_planes(_span(arrays, "bits", ref).reshape(4, 1, -1), ref["count"])[0]
    if form == "codes":
        np.testing.assert_array_equal(codes.reshape(taps.shape), np.where(taps < 0, 9, taps))
    elif form == "mask":
        mask = unpack_planes(_span(arrays, "bits", entry["mask"]).reshape(1, 1, -1), taps.size)[0]
        np.testing.assert_array_equal(mask.reshape(taps.shape), taps >= 0)
        np.testing.assert_array_equal(codes, taps[taps >= 0])
    else:
        np.testing.assert_array_equal(codes, np.where(taps[0] < 0, 9, taps[0]))
    rows, chans = np.nonzero(taps >= 0)
    w = conv.rounded_weight()[rows, chans, taps[rows, chans] // 3, taps[rows, chans] % 3]
    s, _ = _fold(m.layer1[2].bn1)
    np.testing.assert_allclose(_span(arrays, "float32", entry["values"]), w * s[rows], rtol=1e-5)


def test_a_thinned_model_records_its_channel_counts_and_bench_builds_the_same_shapes(tmp_path):
    m, path = _exported(tmp_path, "filter-prune+bwn", ratio=0.5)
    header, _ = read_export(path)
    counts = header["thinned"]["layers"]
    conv = m.layer1[0].conv1
    assert counts["layer1.0.conv1"] == [conv.in_channels, conv.out_channels]
    assert conv.out_channels < models.get("resnet20", width=0.25).layer1[0].conv1.out_channels
    rt = runtime.load(path)
    assert {name: list(mod.weight.shape) for name, mod in bench.float_model(rt).named_modules()
            if type(mod) in (nn.Conv2d, nn.Linear)} == {name: list(shape) for name, _, _ in rt.layers()
                                                        for shape in [_shape(rt, name)]}
    export(models.get("resnet20", width=0.25), tmp_path / "plain.npz", meta())
    assert read_export(tmp_path / "plain.npz")[0]["thinned"] is None


def _shape(rt, name):
    return next(layer.shape for op in rt.ops for layer in op[1:] if getattr(layer, "name", None) == name)


def test_a_shift_block_stores_the_shift_as_kernel_size_and_dilation(tmp_path):
    _, path = _exported(tmp_path, "none", "shiftresnet20")
    header, arrays = read_export(path)
    assert "int32" not in arrays and [op["op"] for op in header["ops"]][1:4] == ["shift_block"] * 3
    block = header["ops"][4]  # layer2.0: the stride on its second 1x1 conv, a projection shortcut
    assert block["shift"] == {"kernel_size": 3, "dilation": 1}
    assert block["conv2"]["stride"] == [2, 2] and block["shortcut"]["shape"][2:] == [1, 1]


@pytest.mark.parametrize("method, name", [("prune", "resnet20"), ("prune+bwn", "resnet20"), ("sal", "resnet20"),
                                          ("sal+bc", "resnet20"), ("sal+bwn", "resnet20"),
                                          ("filter-prune+bwn", "resnet20"), ("none", "shiftresnet20")])
def test_file_size_is_the_summary_memory_plus_at_most_10_percent_and_16_kb(tmp_path, method, name):
    m, path = _exported(tmp_path, method, name, width=1.0)
    summary_bytes = summarize(m)["total"]["param_bytes"]
    assert os.path.getsize(path) <= 1.10 * summary_bytes + 16 * 1024, (os.path.getsize(path), summary_bytes)


@pytest.mark.parametrize("method, options", [("prune", {}), ("prune+bc", {}), ("sal", {"temperature": 3.0}),
                                             ("sal+bwn", {})])
def test_runtime_summary_counts_kept_weights_index_bits_and_executed_macs(tmp_path, method, options):
    m, path = _exported(tmp_path, method, **options)
    training = {r["name"]: r for r in summarize(m)["layers"]}
    rows = {r["name"]: r for r in runtime_summary(runtime.load(path))["layers"]}
    structured = [n for n, r in rows.items() if r["kind"].startswith(("sparse", "sal"))]
    assert len(structured) == (18 if method.startswith("sal") else 20)  # every 3x3 conv but the stem; + 2 projections
    for name in structured:
        r, t = rows[name], training[name]
        O = r["output"][0]
        assert r["macs"] == t["macs"]  # nnz * OH * OW
        assert r["params"] == t["params"] + O * (2 if "+" in method else 1)  # + the folded bias (and scale)
        # stored beyond the summary: the folded bias, BC's scale, the last word's tail, SAL's index form
        extra = r["stored_bits"] - t["param_bits"] - 32 * O
        pairs = O * r["shape"][1]
        if method == "prune":
            assert extra == 0, name
        assert 0 <= extra <= 32 * O * (method == "prune+bc") + 4 * pairs * method.startswith("sal") + 5 * 64, name


def test_combinations_that_do_not_compose_here_are_refused_naming_what_does(tmp_path):
    m = structured_model("prune+w4a32")
    with pytest.raises(ExportError, match="not exported yet; supported: none, bc, bwn") as info:
        export(m, tmp_path / "m.npz", meta())
    assert all(w in str(info.value) for w in ("prune+bwn", "sal+bc", "filter-prune"))
    m.compression["method"] = "prune"  # the layers still quantize to 4 bits
    with pytest.raises(ExportError, match="layer1.0.conv1 quantizes its weights with DorefaWeight; supported with "
                                          "pruning and SAL: float, bc, bwn"):
        export(m, tmp_path / "m.npz", meta())
    with pytest.raises(ExportError, match="supported models"):
        export(structured_model("prune", "vgg_small"), tmp_path / "m.npz", meta("vgg_small"))
    assert not (tmp_path / "m.npz").exists()


def test_a_thinned_shift_stores_its_kept_channels_of_shiftnets_assignment(tmp_path):
    m, path = _exported(tmp_path, "filter-prune", "shiftresnet20", ratio=0.5)
    header, arrays = read_export(path)
    block = header["ops"][4]  # layer2.0: 48 expansion channels at width 0.25, half of them kept
    kept = m.channel_counts["layers"]["layer2.0.shift"]["kept_out"]
    assert block["shift"] == {"kernel_size": 3, "dilation": 1, "assignment": 48, "kept": kept}
    assert len(kept) == block["conv1"]["shape"][0] == block["conv2"]["shape"][1] == 24
    assert "int32" not in arrays  # the offsets follow from the header
    assert header["thinned"]["layers"]["layer2.0.shift"] == [24, 24]
    rt = runtime.load(path)
    shift = rt.ops[4][4]
    np.testing.assert_array_equal(shift.shift_y, m.layer2[0].shift.shift_y)
    np.testing.assert_array_equal(shift.shift_x, m.layer2[0].shift.shift_x)
    net = bench.float_model(rt)  # the float side of tinycomp bench: the same shapes
    assert net.layer2[0].shift.channels == net.layer2[0].conv1.out_channels == 24


@pytest.mark.parametrize("method", ["none", "filter-prune"])
def test_custom_shift_offsets_are_refused(tmp_path, method):
    m = structured_model(method, "shiftresnet20")
    m.layer1[0].shift.shift_x = m.layer1[0].shift.shift_x[::-1].copy()
    with pytest.raises(ExportError, match="layer1.0.shift has offsets other than ShiftNet"):
        export(m, tmp_path / "m.npz", meta("shiftresnet20"))
