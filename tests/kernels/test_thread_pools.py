"""kernels/thread_pools.py: ``import tinycomp_kernels`` alone lets idle OpenMP / OpenBLAS workers sleep;
imported after numpy it says, once, what comes too late. Each case in a fresh interpreter."""
import json
import os
import subprocess
import sys

import pytest

VARS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OPENBLAS_THREAD_TIMEOUT")

REPORT = """
import json, os, warnings
from threadpoolctl import threadpool_info
import numba, numpy
from tinycomp_kernels import thread_pools
try:
    layer = numba.threading_layer()
except ValueError:  # no parallel kernel has run
    layer = None
timeouts = [thread_pools.openblas_thread_timeout(lib["filepath"]) for lib in threadpool_info()
            if lib.get("internal_api") == "openblas"]
print(json.dumps({"env": [os.environ.get(v) for v in %r], "late": list(thread_pools.LATE), "timeouts": timeouts,
                  "layer": layer,
                  "warnings": [str(w.message) for w in caught if issubclass(w.category, thread_pools.ThreadPoolWarning)]}))
""" % (VARS,)


def run(first, env=None):
    """Run ``first`` (the imports under test) with warnings recorded, then report; env without VARS plus ``env``."""
    code = "import warnings\nwith warnings.catch_warnings(record=True) as caught:\n    warnings.simplefilter('always')\n"
    code += "".join(f"    {line}\n" for line in first.splitlines()) + REPORT
    base = {k: v for k, v in os.environ.items() if k not in VARS}
    out = subprocess.run([sys.executable, "-c", code], env={**base, **(env or {})}, check=True, capture_output=True,
                         text=True, timeout=300).stdout
    return json.loads(out.splitlines()[-1])


def test_importing_the_kernels_alone_sets_both_before_numpy_loads_openblas():
    got = run("import tinycomp_kernels.xnor_gemm")
    assert got["env"] == ["passive", "3000", "4"] and got["late"] == [] and got["warnings"] == []
    if not got["timeouts"] or None in got["timeouts"]:
        pytest.skip("this OpenBLAS does not export openblas_thread_timeout")
    assert set(got["timeouts"]) == {4}  # OpenBLAS itself read the setting


def test_a_value_in_the_environment_wins():
    got = run("import tinycomp_kernels", {"OMP_WAIT_POLICY": "active", "GOMP_SPINCOUNT": "0",
                                          "OPENBLAS_THREAD_TIMEOUT": "6"})
    assert got["env"] == ["active", "0", "6"] and got["warnings"] == []


def test_numpy_first_warns_once_naming_what_to_set():
    """Also through tinycomp, which relies on the kernels' import; importing both warns once."""
    for first in ("import numpy\nimport tinycomp_kernels", "import numpy\nimport tinycomp_kernels\nimport tinycomp",
                  "import numpy\nimport tinycomp"):
        got = run(first)
        assert got["late"] == ["OPENBLAS_THREAD_TIMEOUT"], first
        assert len(got["warnings"]) == 1, first
        message = got["warnings"][0]
        assert "OPENBLAS_THREAD_TIMEOUT=4" in message and "before numpy" in message
        assert "OMP_WAIT_POLICY" not in message  # Numba's pool had not started: still in time
        assert got["env"] == ["passive", "3000", "4"]  # still set, for child processes
        if got["timeouts"] and None not in got["timeouts"]:
            assert 0 in got["timeouts"]  # what the warning is about: OpenBLAS started without it


def test_numpy_first_with_the_timeout_in_the_environment_is_quiet():
    got = run("import numpy\nimport tinycomp_kernels", {"OPENBLAS_THREAD_TIMEOUT": "4"})
    assert got["late"] == [] and got["warnings"] == []


def test_a_numba_pool_started_first_is_named_too():
    first = """import numpy, numba
@numba.njit(parallel=True)
def f(a):
    for i in numba.prange(len(a)):
        a[i] += 1
f(numpy.zeros(8))
import tinycomp_kernels"""
    got = run(first)
    if got["layer"] != "omp":
        pytest.skip(f"Numba's threading layer is {got['layer']}, not OpenMP")
    assert sorted(got["late"]) == ["GOMP_SPINCOUNT", "OMP_WAIT_POLICY", "OPENBLAS_THREAD_TIMEOUT"]
    assert len(got["warnings"]) == 1 and "OMP_WAIT_POLICY=passive" in got["warnings"][0]
    assert "GOMP_SPINCOUNT=3000" in got["warnings"][0]
