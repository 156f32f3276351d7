"""The command line's data folder rules: a named folder without the dataset is an error (exit 2) that
says what belongs there and creates nothing; a failed download says how to point at a copy.
The command runs in this process (``cli``), the environment changed through ``monkeypatch``."""
import os

import pytest

from cli_helpers import SMALL, cli
from data_helpers import require_data


@pytest.fixture
def no_tinycomp_data(monkeypatch):
    """TINYCOMP_DATA unset for the test; the monkeypatch, to set more."""
    monkeypatch.delenv("TINYCOMP_DATA", raising=False)
    return monkeypatch


def test_mistyped_data_dir_is_an_error_and_creates_nothing(tmp_path, no_tinycomp_data):
    typo = tmp_path / "nonexistent" / "data"
    r = cli("train", "--out", str(tmp_path / "r"), "--data-dir", str(typo))
    assert r.returncode == 2, r.stderr
    assert f"looked for {typo / 'cifar-10-batches-bin'}" in r.stderr
    assert "data_batch_1.bin ... data_batch_5.bin, test_batch.bin, batches.meta.txt" in r.stderr
    assert "pass --download" in r.stderr and "Traceback" not in r.stderr
    assert list(tmp_path.iterdir()) == []  # neither the data folder nor the run folder


def test_eval_with_a_mistyped_data_dir_exits_2_and_creates_nothing(tmp_path, monkeypatch):
    from tinycomp import checkpoint, models

    meta = {"config": {"model": "resnet20", "width": 0.25, "dataset": "cifar10"}, "num_classes": 10,
            "normalize": {"mean": [0.5] * 3, "std": [0.25] * 3}}
    checkpoint.save(tmp_path / "c.npz", models.get("resnet20", width=0.25).state_dict(), None, meta)
    r = cli("eval", str(tmp_path / "c.npz"), "--data-dir", "/nonexistent-tinycomp-test")
    assert r.returncode == 2 and "pass --download" in r.stderr, r.stderr
    assert not os.path.exists("/nonexistent-tinycomp-test")
    monkeypatch.setenv("TINYCOMP_DATA", str(tmp_path / "typo"))
    r = cli("eval", str(tmp_path / "c.npz"))
    assert r.returncode == 2 and "from $TINYCOMP_DATA" in r.stderr, r.stderr
    assert not (tmp_path / "typo").exists()


def test_data_dir_one_level_off_suggests_the_right_one(tmp_path, monkeypatch):
    root = require_data()
    monkeypatch.delenv("TINYCOMP_DATA", raising=False)
    for given, suggestion in ((root / "cifar-10-batches-bin", f"point at its parent, {root}"),
                              (root.parent, f"point at {root} instead")):
        r = cli("train", "--out", str(tmp_path / "r"), "--data-dir", str(given))
        assert r.returncode == 2 and suggestion in r.stderr, r.stderr
    assert not (tmp_path / "r").exists()


def test_no_internet_says_where_it_looked_and_how_to_point_at_a_copy(tmp_path, no_tinycomp_data):
    """No --data-dir, no TINYCOMP_DATA: the download to the cache is tried; its failure says the rest."""
    no_tinycomp_data.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    no_tinycomp_data.setenv("TINYCOMP_CIFAR10_URL", "https://127.0.0.1:9/c10.tar.gz")
    r = cli("train", "--out", str(tmp_path / "r"))
    assert r.returncode == 2, r.stderr
    assert "download of https://127.0.0.1:9/c10.tar.gz failed" in r.stderr
    assert f"not in {tmp_path / 'cache' / 'tinycomp' / 'cifar-10-batches-bin'}" in r.stderr
    assert "--data-dir DIR or TINYCOMP_DATA=DIR" in r.stderr
    assert list(tmp_path.iterdir()) == [tmp_path / "cache"]  # the cache's own folder removed, no run folder


def test_init_from_another_model_names_a_few_mismatches(tmp_path):
    require_data()
    from tinycomp import checkpoint, models

    checkpoint.save(tmp_path / "wide.npz", models.get("resnet20", width=0.5).state_dict(), None,
                    {"config": {"model": "resnet20", "width": 0.5}})
    r = cli("train", *SMALL, "--init", str(tmp_path / "wide.npz"), "--out", str(tmp_path / "r"))
    assert r.returncode == 2, r.stderr
    assert len(r.stderr) < 1000, r.stderr
    assert "does not fit" in r.stderr and "problems:" in r.stderr and "... and " in r.stderr
    assert not (tmp_path / "r").exists()
