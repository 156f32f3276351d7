"""--method through the command line: refusals, --init from a float checkpoint (and a resume that no longer
needs it), resume of a quantized run
(``cli``: in this process; ``start_train``: the runs that are killed, in a subprocess)."""
import json

import numpy as np
import pytest

from cli_helpers import TINY, WIDTH, assert_same_weights, cli, kill_after_the_first_epoch, model_arrays, start_train
from data_helpers import require_data
from tinycomp import checkpoint, models


@pytest.mark.parametrize("args, message", [
    (["--method", "bnn"], "--method: unknown method 'bnn'"),
    (["--method", "w4a9"], "--method w4a9: bits out of range"),
    (["--method", "bwn", "--quantizer", "lsq"], "--quantizer lsq applies to w<k>a<m>"),
    (["--method", "w4a4", "--quantizer", "apot"], "--quantizer: 'apot'"),
    (["--method", "xnor", "--model", "densenet_cifar"], "--method xnor: binary activations"),
    (["--method", "w2a2", "--model", "mobilenetv2"], "--method w2a2"),
    (["--method", "bwn", "--keep-float", "first,middle"], "--keep-float: unknown 'middle'"),
    (["--method", "bwn", "--bc-stochastic"], "--method bc"),
])
def test_bad_method_options_exit_2_naming_the_flag(tmp_path, args, message):
    r = cli("train", "--out", str(tmp_path / "r"), *args)
    assert r.returncode == 2, r.stderr
    assert message in r.stderr
    assert not (tmp_path / "r").exists()


def test_summary_with_a_method_json():
    r = cli("summary", "--model", "resnet20", "--method", "bwn", "--json")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["method"] == "bwn" and s["total"]["params"] == 272_474
    assert {"params", "param_bits", "param_megabits", "macs", "float_macs", "binary_macs", "kbit_macs"} <= \
        s["total"].keys()
    assert s["total"]["param_megabits"] < 0.1 * 8.72
    r = cli("summary", "--model", "resnet20", "--method", "w9a9")
    assert r.returncode == 2 and "bits out of range" in r.stderr


def _float_checkpoint(path, model_name="resnet20", width=WIDTH):
    model = models.get(model_name, width=width)
    checkpoint.save(path, model.state_dict(), None, {"config": {"model": model_name, "width": width}})
    return model.state_dict()


def test_init_from_float_checkpoint_names_the_new_quantizer_parameters_and_resumes_without_it(tmp_path):
    """A float checkpoint into a w4a4 run, killed after its first epoch: --resume takes the weights from
    last.npz, so the --init file may be gone by then."""
    require_data()
    init = tmp_path / "float.npz"
    state = _float_checkpoint(init)
    out = tmp_path / "r"
    proc = start_train(*TINY, "--method", "w4a4", "--quantizer", "pact", "--init", init, "--out", out)
    kill_after_the_first_epoch(out, proc)
    stderr = proc.stderr.read()
    assert "entries the method adds are not in" in stderr and "input_quantizer.alpha" in stderr, stderr
    with np.load(out / "last.npz", allow_pickle=False) as z:
        assert "model/layer1.0.conv1.input_quantizer.alpha" in z.files
        assert z["model/conv1.weight"].shape == state["conv1.weight"].shape
    init.unlink()
    r = cli("train", "--out", str(out), "--resume", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert len((out / "log.jsonl").read_text().splitlines()) == 2


def test_init_from_another_model_exits_2_naming_init(tmp_path):
    require_data()
    _float_checkpoint(tmp_path / "r32.npz", "resnet32")
    r = cli("train", *TINY, "--method", "bwn", "--init", str(tmp_path / "r32.npz"), "--out", str(tmp_path / "r"))
    assert r.returncode == 2 and "--init" in r.stderr and "resnet32" in r.stderr


@pytest.mark.parametrize("method", [["--method", "bc", "--bc-stochastic"], ["--method", "w2a2", "--quantizer", "lsq"]])
def test_quantized_run_killed_after_an_epoch_resumes_bitwise(tmp_path, method):
    """Stochastic BC draws from the saved RNG; LSQ's step and its 'initialized' flag live in the checkpoint."""
    require_data()
    ref = tmp_path / "ref"
    r = cli("train", *TINY, *method, "--out", str(ref))
    assert r.returncode == 0, r.stderr
    cut = tmp_path / "cut"
    kill_after_the_first_epoch(cut, start_train(*TINY, *method, "--out", cut))
    r = cli("train", "--out", str(cut), "--resume", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert_same_weights(ref / "last.npz", cut / "last.npz")
    assert method[1] == "bc" or any(k.endswith("input_quantizer.step") for k in model_arrays(ref / "last.npz"))
