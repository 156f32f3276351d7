"""kernels/allocator.py: on glibc, ``import tinycomp_kernels`` lets malloc reuse freed arrays of up to
32 MiB instead of returning them to the system, which shows as page faults: a step-like pattern (ten
4 MiB arrays written, all freed, again) faults in its first round only, where glibc's defaults give
the memory back after each round and fault on it again. Each case in a fresh interpreter.
"""
import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux") or os.confstr("CS_GNU_LIBC_VERSION") is None,
                                reason="glibc only")

VARS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "TINYCOMP_MALLOC")

REPORT = """
import json, resource
import numpy as np
from tinycomp_kernels import allocator
def rounds(n):
    for _ in range(n):
        live = [np.empty(1 << 20, np.float32) for _ in range(10)]  # 10 x 4 MiB, as a step's activations
        for a in live:
            a.fill(1.0)
        del live, a
rounds(1)  # the heap reaches its size once in every setting
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
rounds(10)
print(json.dumps({"applied": allocator.APPLIED, "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
"""


def run(env=None):
    base = {k: v for k, v in os.environ.items() if k not in VARS}
    out = subprocess.run([sys.executable, "-c", "import tinycomp_kernels\n" + REPORT], env={**base, **(env or {})},
                         check=True, capture_output=True, text=True, timeout=300).stdout
    return json.loads(out.splitlines()[-1])


def test_importing_the_kernels_keeps_freed_arrays_for_reuse():
    got = run()
    assert got["applied"] == {"MALLOC_MMAP_THRESHOLD_": 32 << 20, "MALLOC_TRIM_THRESHOLD_": 1 << 30}
    assert got["faults"] < 500  # 10 rounds of 40 MiB reuse the first round's pages (10240 of them)


def test_glibc_defaults_fault_again_every_round():
    """The behaviour the module exists for (and the opt-out): the pages come back fresh every round
    (fewer than 10 x 10240 faults where the kernel maps some as 2 MiB pages)."""
    got = run({"TINYCOMP_MALLOC": "default"})
    assert got["applied"] == {}
    assert got["faults"] > 10 * 500


def test_a_setting_in_the_environment_wins():
    got = run({"MALLOC_MMAP_THRESHOLD_": "1048576"})
    assert got["applied"] == {"MALLOC_TRIM_THRESHOLD_": 1 << 30}  # glibc read the user's threshold itself
    assert got["faults"] > 10 * 500  # 4 MiB > the user's 1 MiB: mapped afresh every time, as they asked
