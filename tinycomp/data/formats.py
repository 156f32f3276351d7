"""CIFAR-10 and CIFAR-100 in their official *binary* formats: layout, validation, parsing.

Nothing here unpickles anything: the files are fixed-length uint8 records read with
``np.fromfile``.

Layouts (https://www.cs.toronto.edu/~kriz/cifar.html, "binary version"):

- CIFAR-10, folder ``cifar-10-batches-bin/``: ``data_batch_1.bin`` ... ``data_batch_5.bin``
  (training, 10,000 records each) and ``test_batch.bin`` (10,000); ``batches.meta.txt`` holds the
  10 class names, one a line. Record = 1 label byte (0-9) + 3,072 pixel bytes.
- CIFAR-100, folder ``cifar-100-binary/``: ``train.bin`` (50,000 records), ``test.bin`` (10,000);
  ``coarse_label_names.txt`` (20 names) and ``fine_label_names.txt`` (100 names).
  Record = 1 coarse label byte (0-19) + 1 fine label byte (0-99) + 3,072 pixel bytes.

The 3,072 pixel bytes are 1,024 red, 1,024 green, 1,024 blue values, each plane row-major 32x32,
so a record's pixels reshape directly to (3, 32, 32): images come out as uint8 NCHW arrays.

Validation happens before anything is used: every file present, its size a whole number of
records and the expected number of records, every label inside its range, the names files
holding the expected number of names. Each failure raises ``DatasetError`` naming the file and
what is wrong with it.
"""
import dataclasses
from pathlib import Path

import numpy as np

IMAGE_SHAPE = (3, 32, 32)
PIXELS = 3 * 32 * 32  # 3,072 bytes per image


class DatasetError(ValueError):
    """A dataset file or folder is missing, malformed, or could not be obtained."""


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """Everything that defines one binary CIFAR layout.

    ``label_fields`` names the label bytes at the start of each record, in order, with their
    number of classes (CIFAR-10: ``(("label", 10),)``; CIFAR-100: coarse then fine).
    ``train_files`` / ``test_files`` map file name -> expected number of records.
    ``names_files`` maps a label field -> the text file that holds its class names.
    The tests build small variants with ``dataclasses.replace`` (fewer records per file).
    """
    name: str
    title: str
    folder: str
    label_fields: tuple
    train_files: tuple
    test_files: tuple
    names_files: tuple
    url: str
    md5: str

    @property
    def label_bytes(self):
        return len(self.label_fields)

    @property
    def record_bytes(self):
        return self.label_bytes + PIXELS

    def num_classes(self, field):
        return dict(self.label_fields)[field]

    def default_field(self):
        """The label used for training: CIFAR-10's only label, CIFAR-100's fine label."""
        return self.label_fields[-1][0]


CIFAR10 = DatasetSpec(
    name="cifar10", title="CIFAR-10", folder="cifar-10-batches-bin",
    label_fields=(("label", 10),),
    train_files=tuple((f"data_batch_{i}.bin", 10_000) for i in range(1, 6)),
    test_files=(("test_batch.bin", 10_000),),
    names_files=(("label", "batches.meta.txt"),),
    url="https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
    md5="c32a1d4ab5d03f1284b67883e8d87530",
)

CIFAR100 = DatasetSpec(
    name="cifar100", title="CIFAR-100", folder="cifar-100-binary",
    label_fields=(("coarse", 20), ("fine", 100)),
    train_files=(("train.bin", 50_000),),
    test_files=(("test.bin", 10_000),),
    names_files=(("coarse", "coarse_label_names.txt"), ("fine", "fine_label_names.txt")),
    url="https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz",
    md5="03b5dce01913d631647c71ecec9e9cb8",
)

SPECS = {"cifar10": CIFAR10, "cifar100": CIFAR100}


def get_spec(name):
    """The ``DatasetSpec`` for ``"cifar10"`` / ``"cifar100"`` (a spec passes through unchanged)."""
    if isinstance(name, DatasetSpec):
        return name
    key = str(name).lower().replace("-", "").replace("_", "")
    if key not in SPECS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {sorted(SPECS)}")
    return SPECS[key]


def check_record_file(path, spec, expected_records=None):
    """Check a record file's presence and size without reading it; return its record count."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{spec.title}: missing file {path}")
    size = path.stat().st_size
    if size == 0 or size % spec.record_bytes:
        raise DatasetError(
            f"{spec.title}: {path} has {size:,} bytes, not a whole number of {spec.record_bytes}-byte "
            f"records (truncated or not a {spec.title} binary file)")
    count = size // spec.record_bytes
    if expected_records is not None and count != expected_records:
        raise DatasetError(f"{spec.title}: {path} holds {count:,} records, expected {expected_records:,}")
    return count


def read_records(path, spec, expected_records=None):
    """Parse one record file: ``(images, labels)``.

    ``images``: uint8 (N, 3, 32, 32), C-contiguous. ``labels``: dict field -> int64 (N,), each
    checked against its number of classes.
    """
    path = Path(path)
    count = check_record_file(path, spec, expected_records)
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size != count * spec.record_bytes:  # the file changed between stat and read
        raise DatasetError(f"{spec.title}: {path} changed size while being read")
    records = raw.reshape(count, spec.record_bytes)  # (N, label_bytes + 3072)
    labels = {}
    for j, (field, classes) in enumerate(spec.label_fields):
        values = records[:, j].astype(np.int64)
        bad = np.flatnonzero(values >= classes)
        if bad.size:
            what = "label" if field == "label" else f"{field} label"
            raise DatasetError(
                f"{spec.title}: {path}: {what} {values[bad[0]]} at record {bad[0]} is out of "
                f"range 0..{classes - 1} ({bad.size} bad records)")
        labels[field] = values
    images = np.ascontiguousarray(records[:, spec.label_bytes:]).reshape(count, *IMAGE_SHAPE)
    return images, labels


def read_names(path, spec, field):
    """Class names from a text file, one a line; blank lines ignored; count checked."""
    path = Path(path)
    classes = spec.num_classes(field)
    if not path.is_file():
        raise DatasetError(f"{spec.title}: missing file {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise DatasetError(f"{spec.title}: cannot read class names from {path}: {err}") from err
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if len(names) != classes:
        raise DatasetError(f"{spec.title}: {path} lists {len(names)} class names, expected {classes}")
    return names


def check_folder(folder, spec):
    """Check a dataset folder cheaply (files present, sizes, names files) before any parsing."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"{spec.title}: {folder} is not a folder")
    for fname, count in spec.train_files + spec.test_files:
        check_record_file(folder / fname, spec, count)
    for field, fname in spec.names_files:
        read_names(folder / fname, spec, field)


def read_split(folder, spec, split):
    """Read the ``"train"`` or ``"test"`` files of a folder into one array.

    Returns ``(images uint8 (N, 3, 32, 32), labels dict field -> int64 (N,))``; the training
    files are concatenated in the spec's order (data_batch_1 first).
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    files = spec.train_files if split == "train" else spec.test_files
    folder = Path(folder)
    total = sum(count for _, count in files)
    images = np.empty((total, *IMAGE_SHAPE), dtype=np.uint8)
    labels = {field: np.empty(total, dtype=np.int64) for field, _ in spec.label_fields}
    start = 0
    for fname, count in files:
        part_images, part_labels = read_records(folder / fname, spec, count)
        images[start:start + count] = part_images
        for field in labels:
            labels[field][start:start + count] = part_labels[field]
        start += count
    return images, labels

