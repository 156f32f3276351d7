"""Data root resolution and the download path, against a synthetic archive on 127.0.0.1."""
import hashlib
import tarfile
from pathlib import Path

import numpy as np
import pytest
from data_helpers import folder_members, make_archive

from tinycomp.data import DatasetError, ensure_dataset, load_cifar, resolve_root
from tinycomp.data.download import check_url, dataset_source, default_root, safe_extract


def md5_of(path):
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


def test_resolve_root_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("TINYCOMP_DATA", str(tmp_path / "env"))
    assert resolve_root(tmp_path / "arg") == (tmp_path / "arg", "--data-dir")
    assert resolve_root(None) == (tmp_path / "env", "$TINYCOMP_DATA")
    monkeypatch.delenv("TINYCOMP_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert resolve_root(None) == (tmp_path / "xdg" / "tinycomp", "default cache folder")
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_root() == tmp_path / "home" / ".cache" / "tinycomp"


def test_missing_dataset_without_download_says_where(tmp_path, small10):
    with pytest.raises(DatasetError) as err:
        ensure_dataset(small10, tmp_path, download=False)
    message = str(err.value)
    assert str(tmp_path / "cifar-10-batches-bin") in message
    assert "--data-dir" in message and "TINYCOMP_DATA" in message
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("url, ok", [
    ("https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz", True),
    ("http://127.0.0.1:8000/a.tar.gz", True),
    ("http://localhost/a.tar.gz", True),
    ("http://[::1]:9/a.tar.gz", True),
    ("http://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz", False),
    ("http://10.0.0.1/a.tar.gz", False),
    ("ftp://127.0.0.1/a.tar.gz", False),
    ("file:///etc/passwd", False),
    ("https:///nohost", False),
])
def test_url_policy(url, ok):
    if ok:
        check_url(url)
    else:
        with pytest.raises(DatasetError, match="refusing"):
            check_url(url)


def test_source_overrides(monkeypatch, small10):
    assert dataset_source(small10) == (small10.url, small10.md5)
    monkeypatch.setenv("TINYCOMP_CIFAR10_URL", "http://127.0.0.1/x.tgz")
    monkeypatch.setenv("TINYCOMP_CIFAR10_MD5", "AB" * 16)
    assert dataset_source(small10) == ("http://127.0.0.1/x.tgz", "ab" * 16)
    assert dataset_source(small10, "https://h/y", "cd" * 16) == ("https://h/y", "cd" * 16)


def test_download_good_md5_extracts_and_loads(tmp_path, http_server, small10):
    served, base = http_server
    archive = make_archive(served / "c10.tar.gz", folder_members(small10, seed=3))
    root = tmp_path / "root"
    folder = ensure_dataset(small10, root, download=True, url=f"{base}/c10.tar.gz", md5=md5_of(archive),
                            progress=False)
    assert folder == root / "cifar-10-batches-bin" and folder.is_dir()
    assert sorted(p.name for p in root.iterdir()) == ["cifar-10-batches-bin"]  # no temporary left
    data = load_cifar(small10, root=root, download=False)
    assert data.train_images.shape == (30, 3, 32, 32) and data.test_labels.shape == (6,)
    # present now: a second call neither downloads nor needs the server
    assert ensure_dataset(small10, root, url="https://invalid.invalid/x", md5="0" * 32) == folder


def test_download_through_env_vars(tmp_path, http_server, small100, monkeypatch):
    served, base = http_server
    archive = make_archive(served / "c100.tar.gz", folder_members(small100))
    monkeypatch.setenv("TINYCOMP_DATA", str(tmp_path / "envroot"))
    monkeypatch.setenv("TINYCOMP_CIFAR100_URL", f"{base}/c100.tar.gz")
    monkeypatch.setenv("TINYCOMP_CIFAR100_MD5", md5_of(archive))
    data = load_cifar(small100, download=True, progress=False)
    assert data.num_classes == 100 and data.train_images.shape == (6, 3, 32, 32)
    assert (tmp_path / "envroot" / "cifar-100-binary" / "train.bin").is_file()


def test_download_bad_md5_refused_nothing_left(tmp_path, http_server, small10):
    served, base = http_server
    make_archive(served / "c10.tar.gz", folder_members(small10))
    root = tmp_path / "root"
    with pytest.raises(DatasetError, match="md5 .* does not match"):
        ensure_dataset(small10, root, download=True, url=f"{base}/c10.tar.gz", md5="0" * 32, progress=False)
    assert not root.exists()  # created for the download, removed with it


def test_download_http_error_and_non_loopback_http(tmp_path, http_server, small10):
    _, base = http_server
    root = tmp_path / "root"
    with pytest.raises(DatasetError, match="failed"):
        ensure_dataset(small10, root, download=True, url=f"{base}/missing.tar.gz", md5="0" * 32, progress=False)
    assert not root.exists()
    with pytest.raises(DatasetError, match="refusing"):
        ensure_dataset(small10, tmp_path / "other", download=True, url="http://example.com/a.tgz", md5="0" * 32)
    assert not (tmp_path / "other").exists()


def _evil(name, kind=tarfile.REGTYPE, linkname=""):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info, (b"owned" if kind == tarfile.REGTYPE else None)


@pytest.mark.parametrize("member", [
    ("../evil", tarfile.REGTYPE, ""),
    ("cifar-10-batches-bin/../../evil", tarfile.REGTYPE, ""),
    ("/tmp/tinycomp-test-evil-absolute", tarfile.REGTYPE, ""),
    ("cifar-10-batches-bin/link", tarfile.SYMTYPE, "/etc/passwd"),
    ("cifar-10-batches-bin/hard", tarfile.LNKTYPE, "cifar-10-batches-bin/test_batch.bin"),
    ("cifar-10-batches-bin/fifo", tarfile.FIFOTYPE, ""),
])
def test_unsafe_archive_refused(tmp_path, http_server, small10, member):
    served, base = http_server
    members = folder_members(small10) + [_evil(*member)]
    archive = make_archive(served / "evil.tar.gz", members)
    root = tmp_path / "a" / "root"
    root.mkdir(parents=True)  # a root that exists is kept, empty
    with pytest.raises(DatasetError, match="refused"):
        ensure_dataset(small10, root, download=True, url=f"{base}/evil.tar.gz", md5=md5_of(archive), progress=False)
    assert list(root.iterdir()) == []
    assert not (tmp_path / "a" / "evil").exists() and not (tmp_path / "evil").exists()
    assert not Path("/tmp/tinycomp-test-evil-absolute").exists()


def test_safe_extract_checks_every_member_before_writing(tmp_path):
    # the bad member comes last: nothing at all may have been written
    good = tarfile.TarInfo("ok.txt")
    archive = make_archive(tmp_path / "a.tar.gz", [(good, b"fine"), _evil("../evil")])
    target = tmp_path / "out"
    target.mkdir()
    with pytest.raises(DatasetError, match="outside"):
        safe_extract(archive, target)
    assert list(target.iterdir()) == []


def test_archive_with_invalid_content_refused(tmp_path, http_server, small10):
    served, base = http_server
    members = folder_members(small10)
    info, data = members[2]  # a data file, cut short
    members[2] = (info, data[:-7])
    archive = make_archive(served / "short.tar.gz", members)
    root = tmp_path / "root"
    root.mkdir()
    with pytest.raises(DatasetError, match=r"invalid: .*whole number"):
        ensure_dataset(small10, root, download=True, url=f"{base}/short.tar.gz", md5=md5_of(archive), progress=False)
    assert list(root.iterdir()) == []
    # an archive without the dataset folder
    other = make_archive(served / "other.tar.gz", [(tarfile.TarInfo("readme.txt"), b"hi")])
    with pytest.raises(DatasetError, match="no cifar-10-batches-bin/ folder"):
        ensure_dataset(small10, root, download=True, url=f"{base}/other.tar.gz", md5=md5_of(other), progress=False)
    assert list(root.iterdir()) == []


def test_not_a_tar(tmp_path, http_server, small10):
    served, base = http_server
    (served / "junk.tar.gz").write_bytes(np.arange(1000, dtype=np.uint8).tobytes())
    root = tmp_path / "root"
    root.mkdir()
    with pytest.raises(DatasetError, match="not a valid tar"):
        ensure_dataset(small10, root, download=True, url=f"{base}/junk.tar.gz", md5=md5_of(served / "junk.tar.gz"),
                       progress=False)
    assert list(root.iterdir()) == []


def test_named_root_without_the_dataset_is_an_error_not_a_download(tmp_path, http_server, small10, monkeypatch):
    """A mistyped --data-dir or $TINYCOMP_DATA: no download, no folder created, a message naming
    what belongs there; download=True allows it."""
    served, base = http_server
    archive = make_archive(served / "c10.tar.gz", folder_members(small10))
    monkeypatch.setenv("TINYCOMP_CIFAR10_URL", f"{base}/c10.tar.gz")
    monkeypatch.setenv("TINYCOMP_CIFAR10_MD5", md5_of(archive))
    typo = tmp_path / "typo" / "data"
    with pytest.raises(DatasetError) as err:
        ensure_dataset(small10, typo, progress=False)
    message = str(err.value)
    assert str(typo / "cifar-10-batches-bin") in message and "from --data-dir" in message
    assert "data_batch_1.bin ... data_batch_5.bin, test_batch.bin, batches.meta.txt" in message
    assert "--download" in message
    assert not (tmp_path / "typo").exists()
    monkeypatch.setenv("TINYCOMP_DATA", str(typo))
    with pytest.raises(DatasetError, match=r"from \$TINYCOMP_DATA"):
        ensure_dataset(small10, progress=False)
    assert not (tmp_path / "typo").exists()
    with pytest.raises(DatasetError, match="cannot create data root"):  # only the root itself is created
        ensure_dataset(small10, download=True, progress=False)
    assert not (tmp_path / "typo").exists()
    (tmp_path / "typo").mkdir()
    assert ensure_dataset(small10, download=True, progress=False) == typo / "cifar-10-batches-bin"


def test_root_one_level_off_suggests_the_right_path(tmp_path, small10):
    from data_helpers import write_folder

    folder, _ = write_folder(tmp_path / "copy", small10)
    with pytest.raises(DatasetError, match=f"point at its parent, {tmp_path / 'copy'}"):
        ensure_dataset(small10, folder, download=False)
    with pytest.raises(DatasetError, match=f"{tmp_path / 'copy'} holds cifar-10-batches-bin/"):
        ensure_dataset(small10, tmp_path)
    assert ensure_dataset(small10, tmp_path / "copy") == folder


def test_failed_download_to_the_cache_says_how_to_point_at_a_copy(tmp_path, http_server, small10, monkeypatch):
    """No internet: the download error, where it looked, and --data-dir / TINYCOMP_DATA."""
    _, base = http_server
    monkeypatch.delenv("TINYCOMP_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    with pytest.raises(DatasetError) as err:
        ensure_dataset(small10, url=f"{base}/missing.tar.gz", md5="0" * 32, progress=False)
    message = str(err.value)
    assert "download of" in message and "failed" in message
    assert str(tmp_path / "xdg" / "tinycomp" / "cifar-10-batches-bin") in message
    assert "--data-dir DIR" in message and "TINYCOMP_DATA=DIR" in message
    assert not (tmp_path / "xdg" / "tinycomp").exists()  # the cache folder it made is gone again
