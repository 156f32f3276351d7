"""benchmarks/torch_train_recipe.py's --state: a run stopped after an epoch and continued from the saved
state ends bitwise where the run straight through ends (what lets pair_interleaved.sh alternate the two
libraries epoch by epoch). PyTorch runs in a separate process; the test skips without it."""
import importlib.util
import json
import os
import subprocess
import sys

import pytest

from tinycomp_kernels import thread_pools

pytestmark = pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="PyTorch is not installed")


def test_a_resumed_recipe_run_ends_where_the_straight_one_does(tmp_path):
    script = os.path.join(os.path.dirname(__file__), "torch_side", "recipe_state.py")
    done = subprocess.run([sys.executable, script, str(tmp_path / "state")], check=True, capture_output=True,
                          text=True, timeout=300,
                          env={k: v for k, v in os.environ.items() if k not in thread_pools.SETTINGS})
    difference, extra = done.stdout.split(maxsplit=1)
    assert float(difference) == 0.0
    assert json.loads(extra) == {"elapsed": 12.5, "history": [{"epoch": 1}], "run": {"lr": 0.2}}
    assert os.listdir(tmp_path / "state") == ["state.npz"]   # one file, no temporary left
