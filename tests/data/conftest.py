"""Fixtures for the data tests: synthetic CIFAR folders and archives, a loopback HTTP server."""
import dataclasses
import functools
import http.server
import io
import tarfile
import threading

import numpy as np
import pytest

from data_helpers import require_data
from tinycomp.data import CIFAR10, CIFAR100

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
    folder = root / spec.folder
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
    files, _ = synthetic_files(spec, seed)
    members = [(tarfile.TarInfo(spec.folder), None)]
    members[0][0].type = tarfile.DIRTYPE
    for fname, data in files.items():
        members.append((tarfile.TarInfo(f"{spec.folder}/{fname}"), data))
    return members


@pytest.fixture
def small10():
    return small_spec(CIFAR10)


@pytest.fixture
def small100():
    return small_spec(CIFAR100)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def http_server(tmp_path):
    """Serve ``tmp_path / "srv"`` on 127.0.0.1; yields (folder, base URL)."""
    served = tmp_path / "srv"
    served.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield served, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture(scope="session")
def cifar10_root():
    """The real CIFAR-10 data root (skips, or fails under TINYCOMP_REQUIRE_DATA=1, when absent)."""
    return require_data("cifar10")
