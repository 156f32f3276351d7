"""Pruning, filter pruning with thinning, SAL and ShiftResNet through the command line: a tiny run
each, killed after its first epoch and resumed bitwise, then eval and summary of its checkpoint."""
import json
import subprocess
import sys
import time

import numpy as np
import pytest

from cli_helpers import SMALL, tinycomp
from data_helpers import require_data

TINY = [a if a != "512" else "256" for a in SMALL] + ["--epochs", "2"]  # 4 batches an epoch

CASES = {
    "prune": ["--method", "prune", "--sparsity", "0.8", "--prune-end", "1", "--prune-every", "2"],
    "filter-prune+bwn": ["--method", "filter-prune+bwn", "--ratio", "0.5"],
    "sal+bwn": ["--method", "sal+bwn"],
}


def _weights(path):
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files if k.startswith("model/")}


@pytest.fixture(scope="module", params=sorted(CASES))
def finished(request, tmp_path_factory):
    require_data()
    out = tmp_path_factory.mktemp("runs") / request.param
    r = tinycomp("train", *TINY, *CASES[request.param], "--out", str(out))
    assert r.returncode == 0, r.stderr
    return request.param, out


def test_killed_after_an_epoch_resumes_bitwise(finished, tmp_path):
    name, ref = finished
    cut = tmp_path / "cut"
    proc = subprocess.Popen([sys.executable, "-m", "tinycomp", "train", *TINY, *CASES[name], "--out", str(cut)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    start = time.time()
    while not (cut / "log.jsonl").exists():
        assert proc.poll() is None, proc.stderr.read()
        assert time.time() - start < 300, "timed out"
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    assert len((cut / "log.jsonl").read_text().splitlines()) == 1
    r = tinycomp("train", "--out", str(cut), "--resume", "--no-progress")
    assert r.returncode == 0, r.stderr
    a, b = _weights(ref / "last.npz"), _weights(cut / "last.npz")
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_eval_and_summary_of_the_checkpoint(finished):
    name, out = finished
    r = tinycomp("eval", str(out / "last.npz"), "--json", "--no-download")
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert result["method"] == name and abs(result["test_acc"] - log[-1]["test_acc"]) < 1e-9
    r = tinycomp("summary", str(out / "last.npz"), "--json")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["method"] == name
    full = json.loads(tinycomp("summary", "--model", "resnet20", "--width", "0.25", "--json").stdout)["total"]
    assert s["total"]["macs"] < 0.6 * full["macs"]  # every method here removes work
    weights = _weights(out / "last.npz")
    if name == "prune":
        masks = [v for k, v in weights.items() if k.endswith("weight_mask")]
        assert masks and abs(1 - sum(m.sum() for m in masks) / sum(m.size for m in masks) - 0.8) < 0.01
    if name.startswith("filter-prune"):
        assert weights["model/layer1.0.conv1.weight"].shape[0] < 4  # thinned (width 0.25: 4 filters)


def test_shiftresnet_summary():
    r = tinycomp("summary", "--model", "shiftresnet20", "--json")
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
    r = tinycomp("train", *TINY, "--out", str(tmp_path / "r"), *args)
    assert r.returncode == 2, r.stderr
    assert message in r.stderr
