"""Training-loop failure behaviour: a diverging loss stops the run and keeps the last good checkpoint."""
import numpy as np
import pytest

from cli_helpers import cli
from data_helpers import require_data
from tinycomp import checkpoint
from tinycomp.config import DivergedError, TrainConfig
from tinycomp.train import Trainer

SMALL = dict(model="resnet20", width=0.25, subset=256, batch_size=64, threads=1, download=False, test_every=99)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    require_data()
    trainer = Trainer(TrainConfig(epochs=3, **SMALL), tmp_path / "run", progress=False)
    end_epoch = trainer._end_epoch

    def poison_after_first_epoch(epoch, t0):
        end_epoch(epoch, t0)
        if epoch == 0:  # after epoch 1 is checkpointed, a weight goes bad
            trainer.model.linear.weight.data[0, 0] = np.nan

    trainer._end_epoch = poison_after_first_epoch
    with pytest.raises(DivergedError, match=r"the loss became nan at epoch 2, batch 1.*last good checkpoint is kept"):
        trainer.run()
    saved = checkpoint.load(tmp_path / "run" / "last.npz")
    assert saved["meta"]["position"] == {"epoch": 1, "batch": 0}
    assert all(np.all(np.isfinite(v)) for v in saved["model"].values())
    assert len(saved["meta"]["history"]) == 1


def test_cli_exits_3_when_the_loss_diverges(tmp_path):
    """In this process (the real command's exit code 3: test_cli_output, under a progress bar)."""
    require_data()
    r = cli("train", "--model", "resnet20", "--width", "0.25", "--subset", "256", "--batch-size", "64",
            "--epochs", "1", "--lr", "1e30", "--threads", "1", "--schedule", "constant", "--no-progress",
            "--no-download", "--out", str(tmp_path / "r"))
    assert r.returncode == 3, r.stderr
    assert "the loss became" in r.stderr and "training stopped" in r.stderr
    assert not (tmp_path / "r").exists()  # nothing good to keep yet: the folder it made is gone again
    assert "there is no checkpoint" in r.stderr and "checkpoint is kept" not in r.stderr
    assert f"the run's files were removed from {tmp_path / 'r'}" in r.stderr
    assert r.stderr.splitlines()[-1].startswith("tinycomp train: error: the loss became")


def test_a_run_diverging_in_a_folder_it_did_not_make_leaves_it_empty(tmp_path):
    require_data()
    out = tmp_path / "r"
    out.mkdir()
    cfg = TrainConfig(epochs=1, lr=1e30, schedule="constant", **SMALL)
    with pytest.raises(DivergedError, match="no checkpoint"):
        Trainer(cfg, out, progress=False).run()
    assert out.is_dir() and list(out.iterdir()) == []
    with pytest.raises(DivergedError):  # and it does not block the same run again
        Trainer(cfg, out, progress=False).run()
