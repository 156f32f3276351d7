"""benchmarks/time_to_accuracy.py: the README's time-to-accuracy table, and its refusals."""
import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "time_to_accuracy.py"


def run(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True)


def write_log(path, accs):
    path.write_text("".join(json.dumps({"epoch": e + 1, "test_acc": a, "wall_time_s": 60.0 * (e + 1)}) + "\n"
                            for e, a in enumerate(accs)))
    return path


def test_first_epoch_reaching_each_threshold(tmp_path):
    log = write_log(tmp_path / "a.jsonl", [0.5, 0.82, 0.79, 0.86, 0.9])
    res = run(f"a={log}", "--thresholds", "0.8", "0.85", "0.95")
    assert res.returncode == 0, res.stderr
    row = res.stdout.splitlines()[-1]
    assert row == "| a | 5 | 90.00% | 5.0 min | 2.0 min (epoch 2) | 4.0 min (epoch 4) | - |"


def test_bad_logs_exit_2_naming_file_and_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"epoch": 1, "test_acc": 0.5, "wall_time_s": 1}\n{"epoch": 2, "test_acc": "x"}\n')
    res = run(f"b={bad}")
    assert res.returncode == 2 and f"{bad}:2" in res.stderr and "test_acc" in res.stderr
    res = run(f"m={tmp_path / 'missing.jsonl'}")
    assert res.returncode == 2 and "missing.jsonl" in res.stderr
    res = run("no-equals-sign")
    assert res.returncode == 2 and "NAME=LOG" in res.stderr
    log = write_log(tmp_path / "ok.jsonl", [0.5])
    res = run(f"a={log}", "--thresholds", "87")
    assert res.returncode == 2 and "thresholds" in res.stderr
