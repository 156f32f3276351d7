"""tinycomp bench (smoke only: one timed round at tiny batch sizes; no figure is checked, only the
shape of the report), the runtime model's per-op profile, and the machine record."""
import json

import numpy as np
import pytest
from cli_helpers import tinycomp
from export_helpers import NORMALIZE, images, meta, model

from tinycomp import checkpoint, runtime
from tinycomp.bench import float_model
from tinycomp.cli import main
from tinycomp.export import export
from tinycomp.machine import machine_info

NAMES = ["conv1"] + [f"layer{i}.{j}" for i in (1, 2, 3) for j in range(3)] + ["pool", "linear"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    path = tmp_path_factory.mktemp("bench") / "xnor.npz"
    export(model("xnor"), path, meta())
    return path


def test_profile_times_every_op_and_returns_the_logits(exported):
    rt = runtime.load(exported)
    x = images(3)
    y, times = rt.profile(x, repeats=2)
    np.testing.assert_array_equal(y, rt(x))
    assert list(times) == rt.op_names == NAMES and all(t > 0 for t in times.values())
    with pytest.raises(ValueError, match="repeats"):
        rt.profile(x, repeats=0)


def test_float_side_is_the_zoo_network_of_the_same_name_and_width(exported):
    net = float_model(runtime.load(exported))
    assert not net.training and net.conv1.weight.shape == (4, 3, 3, 3) and net.linear.weight.shape == (10, 16)


def test_bench_json_has_the_machine_and_per_layer_and_total_entries(exported):
    r = tinycomp("bench", str(exported), "--repeats", "1", "--batch-sizes", "1,2", "--threads", "1", "--json")
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert (result["model"], result["method"], result["kind"], result["repeats"]) == ("resnet20", "xnor", "exported", 1)
    m = result["machine"]
    assert m["threads"] == 1 and m["cores"] >= 1 and m["cpu"] and set(m["flags"]) <= {"avx2", "avx512f",
                                                                                       "avx512_vpopcntdq"}
    assert {"numpy", "numba", "blas"} <= set(m)
    assert [b["batch_size"] for b in result["results"]] == [1, 2]
    for b in result["results"]:
        total = b["total"]
        for side in ("runtime", "float"):
            assert total[side]["median_s"] > 0 and total[side]["images_per_s"] > 0
        assert total["speedup"] > 0 and set(total["first_call_s"]) == {"runtime", "float"}
        assert [layer["name"] for layer in b["layers"]] == NAMES
        assert all(layer["runtime_s"] > 0 and layer["float_s"] > 0 for layer in b["layers"])


def test_bench_of_a_checkpoint_exports_it_first_and_prints_text(tmp_path, capsys):
    ckpt = tmp_path / "last.npz"
    cfg = {"model": "resnet20", "width": 0.25, "dataset": "cifar10", "method": "bwn"}
    checkpoint.save(ckpt, model("bwn").state_dict(), None, {"config": cfg, "num_classes": 10, "normalize": NORMALIZE})
    assert main(["bench", str(ckpt), "--repeats", "1", "--batch-sizes", "1"]) == 0
    out = capsys.readouterr().out
    assert f"from {ckpt} (checkpoint)" in out and "random weights" in out and "machine: " in out
    assert "batch 1: runtime" in out and "layer3.2" in out and "pool" in out
    assert list(tmp_path.iterdir()) == [ckpt]  # the temporary export is gone


@pytest.mark.parametrize("args, words", [
    (["--batch-sizes", "1,x"], "--batch-sizes must be"),
    (["--batch-sizes", "0"], "--batch-sizes must be"),
    (["--repeats", "0"], "--repeats must be >= 1"),
    (["--threads", "0"], "--threads must be >= 1"),
])
def test_bench_refuses_bad_options_exit_2(exported, capsys, args, words):
    assert main(["bench", str(exported), *args]) == 2
    assert words in capsys.readouterr().err


def test_bench_checks_the_output_before_timing(exported, capsys, monkeypatch):
    monkeypatch.setattr(runtime.Model, "__call__", lambda self, x: np.full((len(x), 10), np.nan, np.float32))
    assert main(["bench", str(exported), "--repeats", "1", "--batch-sizes", "1"]) == 2
    assert "runtime output" in capsys.readouterr().err


def test_machine_info_records_what_the_figures_depend_on():
    m = machine_info()
    assert {"cpu", "cores", "flags", "threads", "blas", "numpy", "numba", "python", "platform"} <= set(m)
    assert m["numpy"] == np.__version__
