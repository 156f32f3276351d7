"""Idle workers of the Numba (OpenMP) and OpenBLAS thread pools sleep instead of spinning, from
``import tinycomp_kernels`` on.

Why
    Numba's OpenMP workers and OpenBLAS's workers both spin-wait after each call. On a 2-core machine a
    layer that goes Numba -> BLAS -> Numba then runs 10-20x slower while each pool steals the other's
    cores (benchmarks/README.md, "Thread pools"); a kernel timed beside the float ``np.matmul`` it is
    compared to loses its speedup the same way. Sleeping workers avoid that.

What
    Importing tinycomp_kernels (any of its modules, or tinycomp) sets, unless already set,

        OMP_WAIT_POLICY=passive      read by the OpenMP runtime (libgomp, Numba's "omp" threading layer)
                                     when it is loaded: when Numba starts its pool (the first parallel kernel)
        GOMP_SPINCOUNT=3000          read by libgomp then too: a worker spins 3000 pause instructions
                                     (0.1-0.2 ms) before it sleeps, even under the passive policy
        OPENBLAS_THREAD_TIMEOUT=4    read by OpenBLAS when it is loaded: when numpy is first imported

    before the package imports numpy or numba. A value already in the environment wins.

Why a short spin
    Waking a sleeping worker on a virtual machine whose cores are idle costs of the order of 0.1 ms
    (measured on an Intel Xeon VM, 2026-12-02: float ResNet-20 at batch 1 on the runtime took 6.5 ms
    passive against 1.3 ms spinning, over a few dozen parallel kernels), more than a small layer takes.
    3000 spins bridge the gaps between the kernels of one forward pass (1000 did not: 3.7 ms) while
    releasing the core before a following BLAS call needs it: np.matmul alternated with xnor_gemm took 1.2 ms at 3000 spins, 1.3 passive, 1.7 at 10000
    and up to 2.6 at 100000 (benchmarks/README.md, "Thread pools").

Too late
    A library loaded before tinycomp_kernels (importing numpy first loads OpenBLAS; a Numba parallel
    kernel run first starts libgomp) has read its environment already, and nothing changes its wait
    policy afterwards. Then the import warns once (``ThreadPoolWarning``), naming each variable that came
    too late and what to do: import tinycomp_kernels (or tinycomp) before numpy, or set the variable in
    the environment before Python starts. ``LATE`` lists those variables (empty when all came in time).
    The loaded libraries are found with threadpoolctl, looked for only when numpy or numba came first;
    OpenBLAS tells the timeout it read where it exports ``openblas_thread_timeout``.
"""
import os
import sys
import warnings

SETTINGS = {"OMP_WAIT_POLICY": "passive", "GOMP_SPINCOUNT": "3000", "OPENBLAS_THREAD_TIMEOUT": "4"}
LATE = ()  # the variables of SETTINGS that came after the library reading them had started


class ThreadPoolWarning(RuntimeWarning):
    """A thread-pool variable was set after the library that reads it had started."""


def openblas_thread_timeout(path):
    """The OPENBLAS_THREAD_TIMEOUT that the loaded OpenBLAS at ``path`` read when it started (0: none),
    or None where the library does not export it."""
    import ctypes

    try:
        read = ctypes.CDLL(path).openblas_thread_timeout  # the loaded library: dlopen returns its handle
    except (OSError, AttributeError):
        return None
    read.restype = ctypes.c_int
    return read()


def _late(preset):
    """{variable: [paths of the loaded libraries that started without it]}; ``preset``: the variables
    that were in the environment before this module set any."""
    if "numpy" not in sys.modules and "numba" not in sys.modules:
        return {}  # nothing that loads OpenBLAS or OpenMP for us has run
    from threadpoolctl import threadpool_info

    late = {}
    for lib in threadpool_info():
        if lib.get("internal_api") == "openblas":
            timeout = openblas_thread_timeout(lib["filepath"])
            missed = timeout == 0 if timeout is not None else "OPENBLAS_THREAD_TIMEOUT" not in preset
            if missed:
                late.setdefault("OPENBLAS_THREAD_TIMEOUT", []).append(lib["filepath"])
        elif lib.get("user_api") == "openmp":
            for name in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT"):  # both read when the runtime loads
                if name not in preset:
                    late.setdefault(name, []).append(lib["filepath"])
    return late


def configure():
    """Set SETTINGS where the environment has none; warn once about the ones that came too late."""
    global LATE
    preset = {k for k in SETTINGS if k in os.environ}
    for name, value in SETTINGS.items():
        os.environ.setdefault(name, value)  # also for child processes, which start their libraries afresh
    late = _late(preset)
    LATE = tuple(late)
    if late:
        what = "; ".join(f"{name}={SETTINGS[name]} for {', '.join(os.path.basename(p) for p in paths)}"
                         for name, paths in late.items())
        warnings.warn(
            f"tinycomp_kernels was imported after its thread pools' libraries had started (numpy imported "
            f"first loads OpenBLAS; a Numba parallel kernel run first starts OpenMP), so these settings come "
            f"too late: {what}. Their idle workers now spin after each call and slow down the kernels that "
            f"follow (several-fold on 2 cores, e.g. a Numba kernel after np.matmul). Import tinycomp_kernels "
            f"(or tinycomp) before numpy, or set {' and '.join(f'{n}={SETTINGS[n]}' for n in late)} in the "
            f"environment before Python starts.", ThreadPoolWarning, stacklevel=3)
    return LATE
