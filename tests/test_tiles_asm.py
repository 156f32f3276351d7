"""benchmarks/tiles_asm.py: counting FMAs and vector spills in an assembly listing, and its refusals."""
import importlib.util
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "tiles_asm.py"
spec = importlib.util.spec_from_file_location("tiles_asm", SCRIPT)
tiles_asm = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tiles_asm)

LISTING = """\
_ZN5tiles4loopE:
\tvfmadd231ps\t%zmm1, %zmm2, %zmm3
.LBB0_2:
\tvfmadd231ps\t(%rax,%rcx,4){1to16}, %zmm4, %zmm5
\tvmovups\t%zmm5, -64(%rsp)
\tvmovaps\t128(%rsp), %ymm6
\tvfnmadd213ps\t%ymm1, %ymm2, %ymm3
_ZN5tiles7wrapperE:
\tmovq\t%rdi, 8(%rsp)
\tretq
"""


def test_counts_fmas_spills_and_reloads_per_function():
    # .LBB labels stay inside their function; a function with none of the three is left out
    assert tiles_asm.counts(LISTING) == {"_ZN5tiles4loopE": (3, 1, 1)}


def test_a_tile_compiled_alone_has_its_fmas():
    import numpy as np
    from numba import njit, typeof

    got = tiles_asm.tile_counts(np, njit, typeof, names=["fma_tile_4_8x2"])
    assert got["fma_tile_4_8x2"][0] >= 4 * 2     # 4 rows x 2 vectors of accumulators, at least one k step


def test_an_unknown_cpu_without_features_is_refused():
    out = subprocess.run([sys.executable, str(SCRIPT), "--cpu", "pentium4"], capture_output=True, text=True)
    assert out.returncode == 2
    assert "--cpu pentium4" in out.stderr and "--features" in out.stderr
