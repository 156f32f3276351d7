"""glibc's malloc keeps freed arrays of up to 32 MiB for reuse, from ``import tinycomp_kernels`` on.

Why
    glibc serves a large allocation (above its mmap threshold, at most 32 MiB however it adapts) with a
    fresh ``mmap`` and gives it back with ``munmap`` on free. A training step allocates and frees
    the same arrays every step (activations, gradients, kernel outputs: 2-8 MiB each for ResNet-20 at
    batch 128), so each of them came back as new zeroed pages and paid a page fault per 4 KiB on its
    first write, inside the kernels that write it. Measured on a 2-core AMD EPYC (Zen 3), 2 threads,
    ``benchmarks/bench_resnet20_step.py --no-torch``: 0.91 s/step with glibc's defaults, 0.80 with
    these settings (0.77 with mmap off altogether); conv forward alone 0.23 -> 0.17 s. Peak RSS is
    unchanged (461 MiB): the memory is reused, not added.

What
    On glibc (Linux), importing tinycomp_kernels calls ``mallopt`` with

        M_MMAP_THRESHOLD = 32 MiB    allocations up to 32 MiB come from the heap (glibc's maximum)
        M_TRIM_THRESHOLD = 1 GiB     freed heap memory stays with the process up to 1 GiB, for reuse

    A setting the user made in the environment (``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``,
    read by glibc at start-up) wins; ``TINYCOMP_MALLOC=default`` (or 0) leaves glibc's defaults
    alone. Elsewhere (macOS, musl, Windows) nothing happens. ``APPLIED`` lists what was set.

Cost
    Memory freed after a peak stays resident (up to 1 GiB) instead of returning to the system; the
    peak itself does not move.
"""
import ctypes
import os

M_TRIM_THRESHOLD = -1  # glibc's <malloc.h> parameter numbers
M_MMAP_THRESHOLD = -3
SETTINGS = {"MALLOC_MMAP_THRESHOLD_": (M_MMAP_THRESHOLD, 32 << 20),
            "MALLOC_TRIM_THRESHOLD_": (M_TRIM_THRESHOLD, 1 << 30)}
OPT_OUT = ("default", "0", "off", "no")
APPLIED = {}  # environment name of the setting -> the value mallopt took


def configure():
    """Apply ``SETTINGS`` through glibc's mallopt (once; a no-op off glibc or when opted out)."""
    if APPLIED or os.environ.get("TINYCOMP_MALLOC", "").lower() in OPT_OUT or not _glibc():
        return APPLIED
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the process's own libc
    except (OSError, AttributeError):
        return APPLIED
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    for name, (param, value) in SETTINGS.items():
        if name not in os.environ and mallopt(param, value) == 1:  # 1: accepted
            APPLIED[name] = value
    return APPLIED


def _glibc():
    try:
        return os.confstr("CS_GNU_LIBC_VERSION") is not None  # "glibc 2.36"; None or an error elsewhere
    except (ValueError, OSError, AttributeError):
        return False
