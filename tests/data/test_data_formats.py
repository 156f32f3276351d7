"""Parsing the binary CIFAR formats, and rejecting bad files with errors that name them."""
import dataclasses

import numpy as np
import pytest
from data_helpers import CLASS_NAMES, write_folder

from tinycomp.data import CIFAR10, CIFAR100, DatasetError, get_spec, load_cifar
from tinycomp.data.formats import check_folder, read_names, read_records, read_split


def test_record_layout_byte_by_byte(tmp_path, small10):
    # one record built by hand: label, then 1024 R, 1024 G, 1024 B bytes, each plane row-major
    n, c, y, x = 0, 2, 5, 7
    record = bytearray(1 + 3072)
    record[0] = 9
    record[1 + c * 1024 + y * 32 + x] = 200
    record[1 + 0 * 1024 + 31 * 32 + 0] = 17  # red, last row, first column
    path = tmp_path / "one.bin"
    path.write_bytes(bytes(record) * 2)
    images, labels = read_records(path, small10, expected_records=2)
    assert images.shape == (2, 3, 32, 32) and images.dtype == np.uint8 and images.flags.c_contiguous
    assert images[n, c, y, x] == 200 and images[1, 0, 31, 0] == 17
    assert images.sum() == 2 * (200 + 17)
    np.testing.assert_array_equal(labels["label"], [9, 9])
    assert labels["label"].dtype == np.int64


def test_cifar100_record_has_coarse_then_fine(tmp_path, small100):
    record = bytearray(2 + 3072)
    record[0], record[1] = 19, 99
    record[2 + 1 * 1024] = 5  # green, pixel (0, 0)
    path = tmp_path / "train.bin"
    path.write_bytes(bytes(record))
    images, labels = read_records(path, small100)
    assert labels["coarse"].tolist() == [19] and labels["fine"].tolist() == [99]
    assert images[0, 1, 0, 0] == 5 and images.sum() == 5


@pytest.mark.parametrize("spec_name", ["cifar10", "cifar100"])
def test_load_synthetic_folder(tmp_path, spec_name, small10, small100):
    spec = small10 if spec_name == "cifar10" else small100
    _, arrays = write_folder(tmp_path, spec)
    data = load_cifar(spec, root=tmp_path, download=False)
    train = [arrays[f] for f, _ in spec.train_files]
    field = spec.default_field()
    np.testing.assert_array_equal(data.train_images, np.concatenate([a[0] for a in train]))
    np.testing.assert_array_equal(data.train_labels, np.concatenate([a[1][field] for a in train]))
    test_images, test_labels = arrays[spec.test_files[0][0]]
    np.testing.assert_array_equal(data.test_images, test_images)
    np.testing.assert_array_equal(data.test_labels, test_labels[field])
    assert data.classes == CLASS_NAMES[field]
    assert data.train_images.shape == (6 * len(spec.train_files), 3, 32, 32)


def test_cifar100_coarse_labels(tmp_path, small100):
    _, arrays = write_folder(tmp_path, small100)
    data = load_cifar(small100, root=tmp_path, download=False, label="coarse")
    np.testing.assert_array_equal(data.train_labels, arrays["train.bin"][1]["coarse"])
    assert data.classes == CLASS_NAMES["coarse"] and data.num_classes == 20
    with pytest.raises(ValueError, match="no label"):
        load_cifar(small100, root=tmp_path, download=False, label="label")


def test_truncated_file_is_named(tmp_path, small10):
    folder, _ = write_folder(tmp_path, small10)
    bad = folder / "data_batch_3.bin"
    bad.write_bytes(bad.read_bytes()[:-100])
    with pytest.raises(DatasetError, match=r"data_batch_3\.bin.*whole number"):
        load_cifar(small10, root=tmp_path, download=False)


def test_wrong_record_count_is_named(tmp_path, small10):
    folder, _ = write_folder(tmp_path, small10)
    bad = folder / "test_batch.bin"
    bad.write_bytes(bad.read_bytes()[:-3073])
    with pytest.raises(DatasetError, match=r"test_batch\.bin holds 5 records, expected 6"):
        check_folder(folder, small10)


def test_missing_and_empty_files_are_named(tmp_path, small10):
    folder, _ = write_folder(tmp_path, small10)
    (folder / "data_batch_2.bin").unlink()
    with pytest.raises(DatasetError, match=r"missing file .*data_batch_2\.bin"):
        load_cifar(small10, root=tmp_path, download=False)
    (folder / "data_batch_2.bin").write_bytes(b"")
    with pytest.raises(DatasetError, match=r"data_batch_2\.bin has 0 bytes"):
        check_folder(folder, small10)


def test_label_out_of_range(tmp_path, small10, small100):
    folder, _ = write_folder(tmp_path, small10)
    path = folder / "data_batch_5.bin"
    raw = bytearray(path.read_bytes())
    raw[3 * 3073] = 10  # record 3's label
    path.write_bytes(bytes(raw))
    with pytest.raises(DatasetError, match=r"data_batch_5\.bin: label 10 at record 3 is out of range 0\.\.9"):
        load_cifar(small10, root=tmp_path, download=False)
    folder, _ = write_folder(tmp_path / "c100", small100)
    path = folder / "test.bin"
    raw = bytearray(path.read_bytes())
    raw[1] = 100  # record 0's fine label
    path.write_bytes(bytes(raw))
    with pytest.raises(DatasetError, match=r"test\.bin: fine label 100 .*0\.\.99"):
        read_split(folder, small100, "test")


def test_names_file_checked(tmp_path, small10):
    folder, _ = write_folder(tmp_path, small10)
    meta = folder / "batches.meta.txt"
    meta.write_text("a\nb\n\n")
    with pytest.raises(DatasetError, match=r"batches\.meta\.txt lists 2 class names, expected 10"):
        load_cifar(small10, root=tmp_path, download=False)
    meta.unlink()
    with pytest.raises(DatasetError, match=r"missing file .*batches\.meta\.txt"):
        read_names(meta, small10, "label")


def test_folder_is_a_file(tmp_path, small10):
    (tmp_path / small10.folder).write_text("not a folder")
    with pytest.raises(DatasetError, match="not a folder"):
        load_cifar(small10, root=tmp_path, download=False)


def test_specs_and_names():
    assert get_spec("CIFAR-10") is CIFAR10 and get_spec("cifar_100") is CIFAR100
    assert get_spec(CIFAR10) is CIFAR10
    with pytest.raises(ValueError, match="unknown dataset"):
        get_spec("mnist")
    assert CIFAR10.record_bytes == 3073 and CIFAR100.record_bytes == 3074
    assert sum(n for _, n in CIFAR10.train_files) == 50_000 and CIFAR100.test_files == (("test.bin", 10_000),)
    with pytest.raises(ValueError, match="split"):
        read_split(".", CIFAR10, "val")
    assert isinstance(DatasetError("x"), ValueError)
    assert dataclasses.is_dataclass(CIFAR10)
