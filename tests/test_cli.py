"""The command line: exit codes, messages, and a real training run with resume.

Most calls run ``tinycomp.cli.main`` in this process (``cli``); ``tinycomp`` starts the real command
where a fresh process is the point: the exit code the shell sees, runs stopped by a signal or killed."""
import json
import signal

import numpy as np
import pytest

from cli_helpers import (SMALL, WIDTH, assert_same_weights, cli, kill_after_the_first_epoch, start_train, tinycomp,
                         wait_for)
from data_helpers import require_data


def test_help_everywhere():
    for args in ([], ["train"], ["eval"], ["summary"]):
        r = cli(*args, "--help")
        assert r.returncode == 0 and "usage:" in r.stdout


def test_summary_of_resnet20():
    r = cli("summary", "--model", "resnet20", "--json")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["total"]["params"] == 272_474
    # 3×3 convs of ResNet-20 + projections + classifier, per 32×32 image
    assert 40e6 < s["total"]["macs"] < 42e6
    text = cli("summary", "--model", "resnet20", "--width", "0.5").stdout
    assert "total:" in text and "layer1.0.conv1" in text


@pytest.mark.parametrize("args, message", [
    (["summary", "--model", "nope"], "invalid choice"),
    (["train", "--out", "{tmp}/r", "--epochs", "0"], "--epochs must be >= 1"),
    (["train", "--out", "{tmp}/r", "--model", "nope"], "unknown model 'nope'"),
    (["train", "--out", "{tmp}/r", "--lr", "abc"], "invalid float value"),
    (["train", "--out", "{tmp}/r", "--resume"], "nothing to resume"),
    (["train", "--out", "{tmp}/r", "--data-dir", "{tmp}/nowhere", "--no-download"], "{tmp}/nowhere"),
    (["eval", "{tmp}/missing.npz"], "no such file"),
    (["eval", "{tmp}/missing.npz", "--batch-size", "0"], "--batch-size must be >= 1"),
    (["summary", "--model", "resnet20", "--width", "0"], "--width must be in (0, 16.0], got 0.0"),
    (["summary", "--model", "resnet20", "--width", "inf"], "--width must be in (0, 16.0], got inf"),
    (["summary", "--model", "resnet20", "--width", "1e9"], "--width must be in (0, 16.0]"),
    (["summary", "--model", "resnet20", "--num-classes", "0"], "--num-classes must be >= 1, got 0"),
    (["train", "--out", "{tmp}/r", "--width", "inf"], "--width must be in (0, 16.0], got inf"),
    (["train", "--out", "{tmp}/r", "--weight-decay", "nan"], "--weight-decay must be >= 0 and finite, got nan"),
    (["train", "--out", "{tmp}/r", "--lr", "inf"], "--lr must be > 0 and finite, got inf"),
    (["train", "--out", "{tmp}/r", "--momentum", "1"], "--momentum must be in [0, 1), got 1.0"),
    (["train", "--out", "{tmp}/r", "--subset", "0"], "--subset must be >= 1, got 0"),
    (["train", "--out", "{tmp}/r", "--threads", "-1"], "--threads must be >= 0, got -1"),
    (["eval", "{tmp}"], "is a folder, not a checkpoint file"),
    (["train", "--out", "{tmp}/r", "--val", "50000"], "--val 50000 leaves no training images"),
    (["train", "--out", "{tmp}/r", "--val", "10000", "--subset", "40001"], "--subset 40001 is more than"),
])
def test_bad_input_exits_2_with_a_message(tmp_path, args, message):
    r = cli(*[a.format(tmp=tmp_path) for a in args])
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert message.format(tmp=tmp_path) in r.stderr


def test_the_command_itself_exits_2_on_an_option_argparse_refuses(tmp_path):
    """The table above runs in this process; the real command's exit code 2 from argparse (a refused run's
    is checked by the tests below that start it: missing dataset, existing run folder)."""
    r = tinycomp("summary", "--model", "nope")
    assert r.returncode == 2 and "invalid choice" in r.stderr, (r.returncode, r.stderr)


def test_one_cycle_over_a_single_batch_exits_2(tmp_path):
    require_data()
    r = cli("train", "--subset", "128", "--batch-size", "128", "--epochs", "1", "--no-download", "--no-progress",
            "--out", str(tmp_path / "r"))
    assert r.returncode == 2, r.stderr
    assert "--schedule onecycle over 1 batches" in r.stderr


def test_missing_dataset_says_how_to_point_at_it(tmp_path):
    r = tinycomp("train", "--out", str(tmp_path / "r"), "--data-dir", str(tmp_path / "nowhere"), "--no-download")
    assert r.returncode == 2
    assert "TINYCOMP_DATA" in r.stderr or "--data-dir" in r.stderr


def test_out_that_is_a_file_exits_2(tmp_path):
    (tmp_path / "afile").write_text("x")
    for out in ("afile", "afile/sub"):
        r = cli("train", "--out", str(tmp_path / out), "--no-download")
        assert r.returncode == 2 and f"{tmp_path / 'afile'} is not a folder" in r.stderr, r.stderr


def test_eval_refuses_checkpoints_with_broken_metadata_exit_2(tmp_path):
    """Caught before any data is loaded: each names the file, none shows a traceback."""
    from tinycomp import checkpoint, models

    state = models.get("resnet20", width=0.25).state_dict()
    good = {"config": {"model": "resnet20", "width": 0.25, "dataset": "cifar10"}, "num_classes": 10,
            "normalize": {"mean": [0.5] * 3, "std": [0.25] * 3}}
    broken = {"no_num_classes": {k: v for k, v in good.items() if k != "num_classes"},
              "config_is_text": dict(good, config="resnet20"),
              "unknown_model": dict(good, config=dict(good["config"], model="nope")),
              "bad_dataset": dict(good, config=dict(good["config"], dataset="cifar7")),
              "negative_width": dict(good, config=dict(good["config"], width=-1)),
              "zero_std": dict(good, normalize={"mean": [0.5] * 3, "std": [0.0] * 3})}
    for name, meta in broken.items():
        path = tmp_path / f"{name}.npz"
        checkpoint.save(path, state, None, meta)
        r = cli("eval", str(path), "--no-download")  # an uncaught exception would fail the test here
        assert r.returncode == 2 and str(path) in r.stderr and "Traceback" not in r.stderr, (name, r.stderr)
    np.save(tmp_path / "plain.npy", np.zeros(3))
    r = cli("eval", str(tmp_path / "plain.npy"))
    assert r.returncode == 2 and "not an .npz archive" in r.stderr


def test_existing_run_folder_is_not_overwritten(tmp_path):
    out = tmp_path / "r"
    out.mkdir()
    (out / "last.npz").write_bytes(b"precious")
    r = tinycomp("train", "--out", str(out))
    assert r.returncode == 2 and "already exists" in r.stderr
    assert (out / "last.npz").read_bytes() == b"precious"


@pytest.fixture(scope="module")
def uninterrupted_run(tmp_path_factory):
    """A 2-epoch reference run (run folder, its CompletedProcess), shared by the resume tests; the test set
    is evaluated after every epoch (the default)."""
    require_data()
    out = tmp_path_factory.mktemp("runs") / "ref"
    r = cli("train", *SMALL, "--epochs", "2", "--val", "256", "--out", str(out))
    assert r.returncode == 0, r.stderr
    return out, r


@pytest.fixture(scope="module")
def uninterrupted(uninterrupted_run):
    return uninterrupted_run[0]


def test_run_folder_contents_and_eval(uninterrupted):
    out = uninterrupted
    assert {p.name for p in out.iterdir()} >= {"last.npz", "best.npz", "log.jsonl", "config.json"}
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in log] == [1, 2]
    assert all({"train_loss", "val_acc", "test_acc", "wall_time_s"} <= e.keys() for e in log)
    r = cli("eval", str(out / "last.npz"), "--json", "--no-download")
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert abs(result["test_acc"] - log[-1]["test_acc"]) < 1e-9
    assert len(result["per_class_acc"]) == 10
    assert (result["width"], result["epoch"], result["epochs"], result["mid_epoch_batch"]) == (WIDTH, 2, 2, 0)


# The interrupted runs evaluate the test set only after their last epoch (--test-every 2), the reference
# after both: a run's weights must not depend on when it was tested.
def _start(out, *extra, lines=False):
    """The reference run's command in the background; ``lines``: with the in-epoch lines on stderr."""
    small = [a for a in SMALL if a != "--no-progress"] if lines else SMALL
    return start_train(*small, "--epochs", "2", "--val", "256", "--test-every", "2", "--out", out, *extra)


def test_resume_after_sigterm_mid_epoch_is_bitwise_equal(uninterrupted, tmp_path):
    from tinycomp import checkpoint

    out = tmp_path / "r"
    proc = _start(out, lines=True)
    line = proc.stderr.readline()
    while ": batch " not in line:  # the first in-epoch line: 2 of the 8 batches of epoch 1 are done
        assert line, f"training ended early: {proc.stderr.read()}"
        line = proc.stderr.readline()
    assert line.startswith("epoch 1/2: batch "), line
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM, proc.stderr.read()
    position = checkpoint.load(out / "last.npz")["meta"]["position"]
    assert position["epoch"] == 0 and position["batch"] > 0, position  # saved mid-epoch
    r = cli("train", "--out", str(out), "--resume", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert_same_weights(out / "last.npz", uninterrupted / "last.npz")
    assert (out / "log.jsonl").read_text().count("\n") == 2


def test_resume_refuses_changed_options_naming_both_values(uninterrupted, tmp_path):
    r = cli("train", "--out", str(uninterrupted), "--resume", "--lr", "0.5", "--epochs", "3", "--threads", "2")
    assert r.returncode == 2
    assert "--epochs (saved 2, given 3), --lr (saved 0.2, given 0.5)" in r.stderr, r.stderr
    assert "--threads" not in r.stderr  # may change on resume


def test_resume_of_a_finished_run_says_so_and_what_it_reached(uninterrupted):
    r = cli("train", "--out", str(uninterrupted), "--resume", "--no-download")
    assert r.returncode == 0, r.stderr
    log = [json.loads(line) for line in (uninterrupted / "log.jsonl").read_text().splitlines()]
    assert "already finished (2 epochs)" in r.stdout
    assert f"test accuracy {100 * log[-1]['test_acc']:.2f} % (epoch 2)" in r.stdout
    assert str(uninterrupted / "last.npz") in r.stdout and str(uninterrupted / "best.npz") in r.stdout


def test_real_data_smoke_training_beats_chance(tmp_path):
    require_data()
    out = tmp_path / "smoke"
    r = cli("train", "--model", "resnet20", "--width", "0.5", "--subset", "4000", "--epochs", "3",
            "--batch-size", "64", "--lr", "0.1", "--test-every", "3", "--no-progress", "--no-download",
            "--out", str(out))
    assert r.returncode == 0, r.stderr
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert "test_acc" not in log[0] and "test_acc" in log[-1]
    assert log[-1]["test_acc"] >= 0.35, log[-1]   # chance is 0.10


def test_ctrl_c_before_training_starts_exits_130(monkeypatch, capsys):
    """A KeyboardInterrupt outside the training loop (e.g. while the data loads) ends quietly with 130."""
    from tinycomp import cli as cli_module

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_module, "cmd_summary", interrupted)
    assert cli_module.main(["summary", "--model", "resnet20"]) == 130
    assert "interrupted" in capsys.readouterr().err


def test_no_progress_keeps_one_line_per_epoch_and_a_summary(uninterrupted_run):
    out, r = uninterrupted_run
    lines = r.stdout.splitlines()
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [line.split(":")[0] for line in lines[:2]] == ["epoch 1/2", "epoch 2/2"]
    assert f"test acc {100 * log[1]['test_acc']:.2f} %" in lines[1]
    # one-cycle ends at 0.2 / 25 / 1e4 = 8e-07: shown as such, not rounded to 0.0
    assert f"lr {log[1]['lr']:.3g}," in lines[1] and log[1]["lr"] < 1e-5
    assert f"train loss {log[1]['train_loss']:.4f}," in lines[1]
    assert lines[2].startswith("tinycomp train: done: 2 epochs in ") and str(out / "last.npz") in lines[2]
    assert ": batch " not in r.stderr  # --no-progress: no in-epoch lines


def test_eval_text_names_width_epoch_and_a_mid_epoch_checkpoint(uninterrupted, tmp_path):
    """The text of eval's result (its JSON is checked in test_run_folder_contents_and_eval)."""
    from tinycomp import checkpoint

    r = cli("eval", str(uninterrupted / "last.npz"), "--no-download")
    assert r.returncode == 0, r.stderr
    first = r.stdout.splitlines()[0]
    assert first.startswith(f"resnet20 (width {WIDTH:g}, ")
    assert "after epoch 2/2) on CIFAR-10 test set: accuracy" in first
    saved = checkpoint.load(uninterrupted / "last.npz")
    saved["meta"]["position"] = {"epoch": 1, "batch": 3}  # as a SIGTERM three batches into epoch 2 leaves it
    checkpoint.save(tmp_path / "mid.npz", saved["model"], None, saved["meta"])
    r = cli("eval", str(tmp_path / "mid.npz"), "--no-download")
    assert r.returncode == 0, r.stderr
    first = r.stdout.splitlines()[0]
    # width, epoch (1: the epochs finished), epochs and batch: the fields eval --json prints, from the same result
    assert first.startswith(f"resnet20 (width {WIDTH:g}, ")
    assert "saved mid-epoch: 3 batches into epoch 2/2) on CIFAR-10" in first


def test_run_killed_before_its_first_checkpoint_then_after_it_resumes_bitwise(uninterrupted, tmp_path):
    """A folder with config.json and no last.npz: refused without --resume (saying why), restarted with it;
    that run SIGKILLed after its first epoch and resumed ends with the uninterrupted run's weights."""
    require_data()
    out = tmp_path / "r"
    proc = _start(out)
    wait_for(lambda: (out / "config.json").exists(), proc)
    proc.kill()
    proc.wait()
    assert not (out / "last.npz").exists()
    r = cli("train", *SMALL, "--epochs", "1", "--out", str(out))
    assert r.returncode == 2 and "pass --resume to start it again" in r.stderr, r.stderr
    r = cli("train", "--out", str(out), "--resume", "--epochs", "1")
    assert r.returncode == 2 and "--epochs (saved 2, given 1)" in r.stderr, r.stderr  # config.json is the saved run
    kill_after_the_first_epoch(out, start_train("--out", out, "--resume", "--no-progress"))
    r = cli("train", "--out", str(out), "--resume", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert [json.loads(line)["epoch"] for line in (out / "log.jsonl").read_text().splitlines()] == [1, 2]
    assert_same_weights(out / "last.npz", uninterrupted / "last.npz")
    assert_same_weights(out / "best.npz", uninterrupted / "best.npz")
