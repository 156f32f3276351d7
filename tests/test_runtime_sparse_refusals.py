"""Bad pruned, SAL and shift entries are refused at load, naming the file and the entry, never reaching a
kernel: CSR row pointers that decrease or do not end at nnz, indices out of range, an int32 entry of
another dtype or missing, tap codes out of range or of the wrong width, a kept count that disagrees, a
thinned shift's kept channels that are not increasing indices into its assignment, one per channel."""
import json

import numpy as np
import pytest
from export_helpers import assert_refused_in_fresh_process, meta, read_export
from structured_helpers import structured_model

from tinycomp import runtime
from tinycomp.export import export


def _write(path, header, arrays):
    np.savez(path, **dict(arrays, header=np.frombuffer(json.dumps(header).encode(), np.uint8)))
    return path


def _good(tmp_path, method, name="resnet20", **options):
    path = tmp_path / f"good-{method}-{name}.npz"
    export(structured_model(method, name, **options), path, meta(name))
    return read_export(path)


def _bad_files(tmp_path):
    """{name: (path, words its error must contain)}, one broken copy of a good file each."""
    bad = {}
    header, arrays = _good(tmp_path, "prune", sparsity=0.8)
    entry = header["ops"][1]["conv1"]
    ptr, idx = entry["indptr"]["offset"], entry["indices"]["offset"]

    def with_ints(name, change, words):
        ints = arrays["int32"].copy()
        change(ints)
        bad[name] = (_write(tmp_path / f"{name}.npz", header, dict(arrays, int32=ints)), words)

    def swap(ints):
        ints[ptr + 1], ints[ptr + 2] = ints[ptr + 2] + 1, ints[ptr + 1]  # still from 0 to nnz
    with_ints("decreasing", swap, "ops[1].conv1.indptr: is not non-decreasing")
    with_ints("end", lambda ints: ints.__setitem__(ptr + entry["shape"][0], entry["nnz"] - 1),
              "ops[1].conv1.indptr: runs from 0 to")
    with_ints("index_high", lambda ints: ints.__setitem__(idx, 9 * entry["shape"][1]),
              "ops[1].conv1.indices: out of range")
    with_ints("index_negative", lambda ints: ints.__setitem__(idx + 1, -1), "ops[1].conv1.indices: out of range")
    bad["int64"] = (_write(tmp_path / "int64.npz", header, dict(arrays, int32=arrays["int32"].astype(np.int64))),
                    "entry int32: int64")
    bad["no_int32"] = (_write(tmp_path / "no_int32.npz", header, {k: v for k, v in arrays.items() if k != "int32"}),
                       "entry int32: 0 elements, but the header says")
    h = json.loads(json.dumps(header))
    h["ops"][2]["conv2"]["nnz"] += 1
    bad["nnz"] = (_write(tmp_path / "nnz.npz", h, arrays), "ops[2].conv2.indices")
    h = json.loads(json.dumps(header))
    h["ops"][2]["conv1"]["stride"] = [1, 2]
    bad["stride"] = (_write(tmp_path / "stride.npz", h, arrays), "ops[2].conv1: stride [1, 2]")

    header, arrays = _good(tmp_path, "sal+bwn")
    entry = header["ops"][1]["conv2"]
    assert entry["index"] == "codes"
    words = arrays["bits"].copy()
    taps = entry["taps"]
    for plane in (2, 3):  # bits 2 and 3 of pair 0's code: code >= 12
        words[taps["offset"] + plane * taps["size"] // 4] |= np.uint64(1)
    bad["tap_code"] = (_write(tmp_path / "tap_code.npz", header, dict(arrays, bits=words)),
                       "ops[1].conv2.taps: codes out of range [0, 9]")
    h = json.loads(json.dumps(header))
    h["ops"][1]["conv2"]["nnz"] -= 1
    bad["kept"] = (_write(tmp_path / "kept.npz", h, arrays), "ops[1].conv2.taps: keeps")
    h = json.loads(json.dumps(header))
    h["ops"][1]["conv2"]["index"] = "bitmap"
    bad["form"] = (_write(tmp_path / "form.npz", h, arrays), "ops[1].conv2.index: 'bitmap' is not one of")
    h = json.loads(json.dumps(header))
    h["ops"][1]["conv2"]["taps"]["planes"] = 5
    bad["tap_width"] = (_write(tmp_path / "tap_width.npz", h, arrays), "ops[1].conv2.taps")
    h = json.loads(json.dumps(header))
    h["ops"][1]["conv2"]["shape"][2:] = [2, 2]
    bad["even"] = (_write(tmp_path / "even.npz", h, arrays), "ops[1].conv2.shape")

    header, arrays = _good(tmp_path, "sal", temperature=2.0)
    assert header["ops"][1]["conv1"]["index"] == "mask"
    h = json.loads(json.dumps(header))
    h["ops"][1]["conv1"]["nnz"] += 1
    bad["mask_kept"] = (_write(tmp_path / "mask_kept.npz", h, arrays), "ops[1].conv1.taps: keeps")

    header, arrays = _good(tmp_path, "none", "shiftresnet20")
    h = json.loads(json.dumps(header))
    h["ops"][1]["shift"]["kernel_size"] = 0
    bad["shift"] = (_write(tmp_path / "shift.npz", h, arrays), "ops[1].shift.kernel_size")
    h = json.loads(json.dumps(header))
    h["ops"][2]["shift"] = None
    bad["no_shift"] = (_write(tmp_path / "no_shift.npz", h, arrays), "ops[2].shift")
    h = json.loads(json.dumps(header))
    h["ops"][4]["conv2"]["stride"] = [1, 1]  # the shortcut still halves the image
    bad["shift_graph"] = (_write(tmp_path / "shift_graph.npz", h, arrays), "ops[4]")

    header, arrays = _good(tmp_path, "filter-prune", "shiftresnet20", ratio=0.5)
    assert len(header["ops"][1]["shift"]["kept"]) > 2
    for name, change, words in (
            ("kept_order", lambda e: e["kept"].reverse(), "ops[1].shift.kept: not 12 increasing channel indices"),
            ("kept_count", lambda e: e["kept"].pop(), "ops[1].shift.kept: not 12"),
            ("kept_range", lambda e: e["kept"].__setitem__(-1, 24), "ops[1].shift.kept: not 12 increasing channel "
                                                                    "indices in 0..23"),
            ("kept_bool", lambda e: e["kept"].__setitem__(0, False), "ops[1].shift.kept"),
            ("assignment", lambda e: e.__setitem__("assignment", 11), "ops[1].shift.assignment: 11 is not an int in "
                                                                      "12.."),
            ("huge_assignment", lambda e: e.__setitem__("assignment", 1 << 40), "ops[1].shift.assignment"),
            ("no_assignment", lambda e: e.pop("assignment"), "ops[1].shift.assignment: missing"),
            ("no_kept", lambda e: e.pop("kept"), "ops[1].shift.kept: missing")):
        h = json.loads(json.dumps(header))
        change(h["ops"][1]["shift"])
        bad[name] = (_write(tmp_path / f"{name}.npz", h, arrays), words)
    return bad


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    return _bad_files(tmp_path_factory.mktemp("bad"))


def test_bad_entries_are_refused_naming_the_file_and_the_entry(bad_files):
    for name, (path, words) in bad_files.items():
        with pytest.raises(runtime.FormatError) as info:
            runtime.load(path)
        assert str(path) in str(info.value) and words in str(info.value), (name, str(info.value))


def test_bad_entries_are_refused_in_a_fresh_process(bad_files):
    assert_refused_in_fresh_process([p for p, _ in bad_files.values()])
