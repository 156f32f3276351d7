"""benchmarks/tiles_asm.py: counting FMAs and vector spills in an assembly listing, and its refusals."""
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

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
\tvfmadd231ps\t32(%rsp){1to16}, %zmm7, %zmm8
\tvmulps\t%zmm1, %zmm2, %zmm3
\tvmovups\t%zmm5, (%rdi)
\tvmovups\t(%rsi), %zmm5
\tvmovups\t%zmm5, 64(%rsp,%rax)
\t# vfmadd231ps in a comment
_ZN5tiles7wrapperE:
\tmovq\t%rdi, 8(%rsp)
\tmovq\t8(%rsp), %rdi
\tretq
"""


def test_counts_fmas_and_vector_stack_traffic_per_function():
    # a local label (.LBB0_2) does not start a function; vmulps, moves to or from other memory, an
    # indexed stack address, a comment and general-register stack moves count for nothing; a function
    # with none of the three is left out
    assert tiles_asm.counts(LISTING) == {"_ZN5tiles4loopE": (4, 1, 2)}


def test_readable_names_drop_the_package_types_and_ids():
    mangled = "_ZN16tinycomp_kernels10conv_tiles9_tile_rowB2v7B38c8tJTIcFKzyF2ILShI4CrgQElQb0JMs0gE5ArrayIfLi1E"
    assert tiles_asm.readable(mangled) == "conv_tiles._tile_row"
    assert tiles_asm.readable("_ZN8__main__12_3clocals_3e6lambdaE") == "__main__.<locals>.lambda"
    parfor = "_ZN13_3cdynamic_3e36__numba_parfor_gufunc_0x7f93dc54c710B4v127B106c8tJTC_2fWQE5ArrayIyLi1E"
    assert tiles_asm.readable(parfor) == "<dynamic>.__numba_parfor_gufunc"
    assert tiles_asm.readable("memset") == "memset"


def test_a_tile_compiled_alone_has_its_fmas():
    import numpy as np
    from numba import njit, typeof

    got = tiles_asm.tile_counts(np, njit, typeof, names=["fma_tile_4_8x2"])
    assert got["fma_tile_4_8x2"][0] >= 4 * 2     # 4 rows x 2 vectors of accumulators, at least one k step


def test_an_unknown_cpu_without_features_is_refused():
    out = subprocess.run([sys.executable, str(SCRIPT), "--cpu", "pentium4"], capture_output=True, text=True)
    assert out.returncode == 2
    assert "--cpu pentium4" in out.stderr and "--features" in out.stderr


def test_features_without_a_cpu_are_refused():
    out = subprocess.run([sys.executable, str(SCRIPT), "--features", "+avx2"], capture_output=True, text=True)
    assert out.returncode == 2
    assert "--features" in out.stderr and "--cpu" in out.stderr


def test_it_refuses_once_numba_is_imported():
    import numba  # noqa: F401  (this process's Numba has its target CPU already)

    with pytest.raises(SystemExit, match="already imported"):
        tiles_asm.main(["--cpu", "znver4"])
