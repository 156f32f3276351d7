"""The machine a timing was taken on, recorded with every figure ``tinycomp bench`` reports: CPU model,
cores, the instruction-set flags the kernels are compiled for, thread counts, library versions."""
import os
import platform
import subprocess

import numba
import numpy as np
from threadpoolctl import threadpool_info

KERNEL_FLAGS = ("avx2", "avx512f", "avx512_vpopcntdq")  # wide FMA tiles, and the popcount of XNOR layers


def _cpu_field(cpuinfo_key, lscpu_key):
    """A field of /proc/cpuinfo (Linux), else of ``lscpu``'s output, else None."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == cpuinfo_key:
                    return value.strip()
    except OSError:
        pass
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for line in out.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == lscpu_key:
            return value.strip()
    return None


def machine_info():
    """{"cpu", "cores", "flags" (those of KERNEL_FLAGS the CPU has), "threads" (Numba's), "blas"
    (library and threads), "numpy", "numba", "python", "platform"}."""
    flags = set((_cpu_field("flags", "Flags") or "").split())
    blas = [f"{p.get('internal_api')} ({p.get('num_threads')} threads)" for p in threadpool_info()
            if p.get("user_api") == "blas"]
    return {"cpu": _cpu_field("model name", "Model name") or platform.processor() or "unknown",
            "cores": os.cpu_count(), "flags": [f for f in KERNEL_FLAGS if f in flags],
            "threads": numba.get_num_threads(), "blas": ", ".join(blas) or "none found",
            "numpy": np.__version__, "numba": numba.__version__, "python": platform.python_version(),
            "platform": platform.platform()}
