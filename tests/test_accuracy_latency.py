"""benchmarks/accuracy_latency.py: which runs it reads, and how each is timed (no timing here)."""
import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "accuracy_latency.py"


@pytest.fixture(scope="module")
def al():
    import sys

    sys.path.insert(0, str(SCRIPT.parent))  # its sibling modules (harness)
    spec = importlib.util.spec_from_file_location("accuracy_latency", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_run(prefix, method, epochs=2, accs=(0.4, 0.6)):
    Path(f"{prefix}_config.json").write_text(json.dumps({"model": "resnet20", "width": 0.25, "method": method,
                                                         "epochs": epochs}))
    Path(f"{prefix}_log.jsonl").write_text("".join(json.dumps({"epoch": e + 1, "test_acc": a}) + "\n"
                                                   for e, a in enumerate(accs)))


def test_a_results_prefix_of_a_dense_method_is_timed_from_its_configuration(al, tmp_path):
    write_run(tmp_path / "resnet20_bwn_cifar10", "bwn")
    r = al.run_record(tmp_path / "resnet20_bwn_cifar10")
    assert r["checkpoint"] is None and r["timed_on"] == "config, random weights"
    assert r["test_acc"] == 0.6 and r["label"] == "bwn (2 ep)" and r["config"]["width"] == 0.25


def test_a_run_folder_with_its_checkpoint_is_timed_from_it(al, tmp_path):
    run = tmp_path / "r20-bc"
    run.mkdir()
    write_run(run / "x", "bc")
    (run / "x_config.json").rename(run / "config.json")
    (run / "x_log.jsonl").rename(run / "log.jsonl")
    (run / "last.npz").write_bytes(b"")
    r = al.run_record(run)
    assert r["checkpoint"] == str(run / "last.npz") and r["timed_on"] == "checkpoint"


@pytest.mark.parametrize("method", ["prune", "filter-prune", "sal", "sal+bwn", "prune+bwn"])
def test_methods_whose_cost_depends_on_the_weights_need_a_checkpoint(al, tmp_path, method):
    write_run(tmp_path / "run", method)
    with pytest.raises(SystemExit, match="timed from its checkpoint"):
        al.run_record(tmp_path / "run")


def test_weight_independent_methods(al):
    assert all(al.weight_independent(m) for m in ("none", "bc", "bwn", "xnor", "ternary", "w2a2", "w4a32"))
    assert not any(al.weight_independent(m) for m in ("prune", "sal", "w2", "filter-prune+w4a4"))


def test_a_path_that_is_neither_is_refused_by_name(al, tmp_path):
    with pytest.raises(SystemExit, match="neither a run folder nor a results prefix"):
        al.run_record(tmp_path / "missing")


def test_a_configuration_is_exported_and_checked_on_random_weights(al, tmp_path):
    """What main does for a run without its checkpoint: the model of its configuration, calibrated on
    the check images, exported, loaded by the runtime and validated against that model."""
    import numpy as np

    from tinycomp import runtime

    write_run(tmp_path / "r", "bwn")
    record = al.run_record(tmp_path / "r")
    images = np.random.default_rng(0).standard_normal((16, 3, 32, 32)).astype(np.float32)
    model = al.config_model(record["config"], images)
    path = tmp_path / "r.npz"
    al.export(model, path, {"model": "resnet20", "width": 0.25, "num_classes": 10,
                            "normalize": {"mean": [0.5] * 3, "std": [0.25] * 3}})
    assert al.validate(record, runtime.load(path), images, model) >= 0.99
