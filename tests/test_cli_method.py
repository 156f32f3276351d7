"""--method through the command line: refusals, --init from a float checkpoint, resume of a quantized run."""
import json
import subprocess
import sys
import time

import numpy as np
import pytest

from cli_helpers import SMALL, tinycomp
from data_helpers import require_data
from tinycomp import checkpoint, models

TINY = [a if a != "512" else "256" for a in SMALL] + ["--epochs", "2"]  # 4 batches an epoch


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
    r = tinycomp("train", "--out", str(tmp_path / "r"), *args)
    assert r.returncode == 2, r.stderr
    assert message in r.stderr
    assert not (tmp_path / "r").exists()


def test_summary_with_a_method_json():
    r = tinycomp("summary", "--model", "resnet20", "--method", "bwn", "--json")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["method"] == "bwn" and s["total"]["params"] == 272_474
    assert {"params", "param_bits", "param_megabits", "macs", "float_macs", "binary_macs", "kbit_macs"} <= \
        s["total"].keys()
    assert s["total"]["param_megabits"] < 0.1 * 8.72
    r = tinycomp("summary", "--model", "resnet20", "--method", "w9a9")
    assert r.returncode == 2 and "bits out of range" in r.stderr


def _float_checkpoint(path, model_name="resnet20", width=0.25):
    model = models.get(model_name, width=width)
    checkpoint.save(path, model.state_dict(), None, {"config": {"model": model_name, "width": width}})
    return model.state_dict()


def test_init_from_float_checkpoint_names_the_new_quantizer_parameters(tmp_path):
    require_data()
    state = _float_checkpoint(tmp_path / "float.npz")
    out = tmp_path / "r"
    r = tinycomp("train", *TINY, "--epochs", "1", "--method", "w4a4", "--quantizer", "pact",
                 "--init", str(tmp_path / "float.npz"), "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "entries the method adds are not in" in r.stderr and "input_quantizer.alpha" in r.stderr
    with np.load(out / "last.npz", allow_pickle=False) as z:
        assert "model/layer1.0.conv1.input_quantizer.alpha" in z.files
        assert z["model/conv1.weight"].shape == state["conv1.weight"].shape


def test_init_from_another_model_exits_2_naming_init(tmp_path):
    require_data()
    _float_checkpoint(tmp_path / "r32.npz", "resnet32")
    r = tinycomp("train", *TINY, "--method", "bwn", "--init", str(tmp_path / "r32.npz"), "--out", str(tmp_path / "r"))
    assert r.returncode == 2 and "--init" in r.stderr and "resnet32" in r.stderr


@pytest.mark.parametrize("method", [["--method", "bc", "--bc-stochastic"], ["--method", "w2a2", "--quantizer", "lsq"]])
def test_quantized_run_killed_after_an_epoch_resumes_bitwise(tmp_path, method):
    """Stochastic BC draws from the saved RNG; LSQ's step and its 'initialized' flag live in the checkpoint."""
    require_data()
    ref = tmp_path / "ref"
    r = tinycomp("train", *TINY, *method, "--out", str(ref))
    assert r.returncode == 0, r.stderr
    cut = tmp_path / "cut"
    proc = subprocess.Popen([sys.executable, "-m", "tinycomp", "train", *TINY, *method, "--out", str(cut)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    start = time.time()
    while not (cut / "log.jsonl").exists():  # written after epoch 1's last.npz
        assert proc.poll() is None, proc.stderr.read()
        assert time.time() - start < 300, "timed out"
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    assert len((cut / "log.jsonl").read_text().splitlines()) == 1  # killed inside epoch 2: a real resume
    r = tinycomp("train", "--out", str(cut), "--resume", "--no-progress")
    assert r.returncode == 0, r.stderr
    with np.load(ref / "last.npz", allow_pickle=False) as a, np.load(cut / "last.npz", allow_pickle=False) as b:
        keys = [k for k in a.files if k.startswith("model/")]
        assert keys == [k for k in b.files if k.startswith("model/")]
        assert method[1] == "bc" or any(k.endswith("input_quantizer.step") for k in keys)
        for k in keys:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
