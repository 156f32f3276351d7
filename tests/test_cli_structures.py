"""Pruning, filter pruning with thinning, SAL and ShiftResNet through the command line: a tiny run
each, killed after its first epoch and resumed bitwise, then eval and summary of its checkpoint
(``cli``: in this process; ``start_train``: the runs that are killed, in a subprocess)."""
import json

import pytest

from cli_helpers import TINY, WIDTH, assert_same_weights, cli, kill_after_the_first_epoch, model_arrays, start_train
from data_helpers import require_data

CASES = {
    "prune": ["--method", "prune", "--sparsity", "0.8", "--prune-end", "1", "--prune-every", "2"],
    "filter-prune+bwn": ["--method", "filter-prune+bwn", "--ratio", "0.5"],
    "sal+bwn": ["--method", "sal+bwn"],
}


@pytest.fixture(scope="module", params=sorted(CASES))
def finished(request, tmp_path_factory):
    require_data()
    out = tmp_path_factory.mktemp("runs") / request.param
    r = cli("train", *TINY, *CASES[request.param], "--out", str(out))
    assert r.returncode == 0, r.stderr
    return request.param, out


def test_killed_after_an_epoch_resumes_bitwise(finished, tmp_path):
    name, ref = finished
    cut = tmp_path / "cut"
    kill_after_the_first_epoch(cut, start_train(*TINY, *CASES[name], "--out", cut))
    r = cli("train", "--out", str(cut), "--resume", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert_same_weights(ref / "last.npz", cut / "last.npz")


def test_eval_and_summary_of_the_checkpoint(finished):
    name, out = finished
    r = cli("eval", str(out / "last.npz"), "--json", "--no-download")
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert result["method"] == name and abs(result["test_acc"] - log[-1]["test_acc"]) < 1e-9
    r = cli("summary", str(out / "last.npz"), "--json")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["method"] == name
    full = json.loads(cli("summary", "--model", "resnet20", "--width", WIDTH, "--json").stdout)["total"]
    assert s["total"]["macs"] < 0.6 * full["macs"]  # every method here removes work
    weights = model_arrays(out / "last.npz")
    if name == "prune":
        masks = [v for k, v in weights.items() if k.endswith("weight_mask")]
        assert masks and abs(1 - sum(m.sum() for m in masks) / sum(m.size for m in masks) - 0.8) < 0.01
    if name.startswith("filter-prune"):
        assert weights["model/layer1.0.conv1.weight"].shape[0] < 16 * WIDTH  # thinned (layer1: 16 * WIDTH filters)


def test_shiftresnet_summary():
    r = cli("summary", "--model", "shiftresnet20", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["total"]["params"] > 0


@pytest.mark.parametrize("args, message", [
    (["--method", "prune+w4a4"], "prune combines with"),
    (["--method", "sal+w2a2"], "sal combines with"),
    (["--method", "bwn+prune"], "a combination is one of"),
    (["--method", "prune", "--sparsity", "1.5"], "sparsity"),
    (["--method", "prune", "--prune-end", "2"], "--prune-end 2 must be before the end of the run"),
    (["--method", "filter-prune", "--ratio", "0.5", "--target-macs", "0.5"], "give one of them"),
    (["--method", "filter-prune", "--target-macs", "0"], "--target-macs must be in (0, 1]"),
    (["--method", "sal", "--sal-t0", "80"], "--sal-t0 and --sal-tf"),
])
def test_bad_structure_options_exit_2(tmp_path, args, message):
    r = cli("train", *TINY, "--out", str(tmp_path / "r"), *args)
    assert r.returncode == 2, r.stderr
    assert message in r.stderr
