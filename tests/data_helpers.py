"""CIFAR data for tests: the real data (skip when absent, fail when CI requires it), and
small synthetic folders and archives in the official binary layout.

    from data_helpers import require_data, small_spec, write_folder
    root = require_data("cifar10")   # the data root (contains cifar-10-batches-bin/)
    spec = small_spec(CIFAR10, records=6)
    write_folder(tmp_path, spec)     # then load_cifar(spec, root=tmp_path, download=False)

The data root is resolved as the library does (``TINYCOMP_DATA``, else ``~/.cache/tinycomp``).
A user's fresh machine has neither, so these tests skip with the reason; ``.ci/run`` sets
``TINYCOMP_REQUIRE_DATA=1``, which turns that skip into a failure so CI always runs them.
"""
import dataclasses
import io
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest

from tinycomp.data import get_spec, resolve_root

REQUIRE_ENV = "TINYCOMP_REQUIRE_DATA"


def data_required():
    """True when ``TINYCOMP_REQUIRE_DATA=1``: a missing dataset must fail, not skip."""
    return os.environ.get(REQUIRE_ENV, "") == "1"


def require_data(name="cifar10"):
    """The data root holding ``name``'s folder; otherwise skip (or fail under TINYCOMP_REQUIRE_DATA=1)."""
    spec = get_spec(name)
    root, source = resolve_root(None)
    if (root / spec.folder).is_dir():
        return root
    reason = (f"no {spec.title} data: {root / spec.folder} does not exist (data root from {source}); "
              f"set TINYCOMP_DATA to the folder that contains {spec.folder}/")
    if data_required():
        pytest.fail(f"{reason} [{REQUIRE_ENV}=1 makes a missing dataset an error]", pytrace=False)
    pytest.skip(reason)


CLASS_NAMES = {"label": [f"class{i}" for i in range(10)],
               "coarse": [f"super{i}" for i in range(20)],
               "fine": [f"fine{i}" for i in range(100)]}


def small_spec(spec, records=6):
    """``spec`` with ``records`` records per file (the official layout otherwise)."""
    return dataclasses.replace(
        spec,
        train_files=tuple((f, records) for f, _ in spec.train_files),
        test_files=tuple((f, records) for f, _ in spec.test_files))


def synthetic_files(spec, seed=0):
    """{file name: bytes} of a valid synthetic folder for ``spec``, and the arrays written."""
    rng = np.random.default_rng(seed)
    files, arrays = {}, {}
    for fname, count in spec.train_files + spec.test_files:
        images = rng.integers(0, 256, size=(count, 3, 32, 32), dtype=np.uint8)
        labels = {field: rng.integers(0, classes, size=count) for field, classes in spec.label_fields}
        records = np.empty((count, spec.record_bytes), dtype=np.uint8)
        for j, (field, _) in enumerate(spec.label_fields):
            records[:, j] = labels[field]
        records[:, spec.label_bytes:] = images.reshape(count, -1)
        files[fname] = records.tobytes()
        arrays[fname] = (images, labels)
    for field, fname in spec.names_files:
        files[fname] = ("\n".join(CLASS_NAMES[field]) + "\n").encode()
    return files, arrays


def write_folder(root, spec, seed=0):
    """Write a synthetic dataset folder ``root/spec.folder``; returns (folder, arrays)."""
    folder = Path(root) / spec.folder
    folder.mkdir(parents=True, exist_ok=True)
    files, arrays = synthetic_files(spec, seed)
    for fname, data in files.items():
        (folder / fname).write_bytes(data)
    return folder, arrays


def make_archive(path, members):
    """Write a tar.gz at ``path`` from a list of (TarInfo, bytes or None)."""
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return path


def folder_members(spec, seed=0):
    """Archive members (TarInfo, bytes or None) of a valid synthetic ``spec.folder``."""
    files, _ = synthetic_files(spec, seed)
    members = [(tarfile.TarInfo(spec.folder), None)]
    members[0][0].type = tarfile.DIRTYPE
    for fname, data in files.items():
        members.append((tarfile.TarInfo(f"{spec.folder}/{fname}"), data))
    return members
