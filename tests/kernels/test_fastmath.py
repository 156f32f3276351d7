"""The fastmath policy (kernels/fastmath.py): every JIT uses no flag or one of the named sets, and the
kernels that use flags keep the ones they have (their rounding is part of bit-for-bit resumes)."""
import importlib
import pkgutil

import pytest
from numba import config
from numba.core.registry import CPUDispatcher

import tinycomp_kernels
from tinycomp_kernels import fastmath as F

# the JITs that use flags, by their loops function: any change of flags here changes their results
EXPECTED = {
    "_augment_loops": F.ALL_FLAGS, "_bwconv_loops": F.ALL_FLAGS,
    "_clip_backward_loops": F.SUM_REASSOC_NO_FMA, "_lsq_backward_loops": F.SUM_REASSOC_NO_FMA,
    "_batch_norm_train_loops": F.SUM_REASSOC_NO_FMA, "_batch_norm_backward_loops": F.SUM_REASSOC_NO_FMA,
    "_conv2d_direct_loops": F.SUM_REASSOC, "_conv2d_direct_backward_input_loops": F.SUM_REASSOC,
    "_conv2d_direct_backward_weight_loops": F.SUM_REASSOC, "_csr_sddmm_loops": F.SUM_REASSOC,
    "_sparse_conv2d_dw_direct_loops": F.SUM_REASSOC,
    "_csr_rows_loops": F.FMA_ONLY, "_sparse_conv2d_direct_loops": F.FMA_ONLY,
}


def _jits():
    for info in pkgutil.iter_modules(tinycomp_kernels.__path__):
        module = importlib.import_module(f"tinycomp_kernels.{info.name}")
        for obj in vars(module).values():
            if isinstance(obj, CPUDispatcher) and obj.py_func.__module__ == module.__name__:
                yield obj.py_func.__name__, obj.targetoptions.get("fastmath", False)


@pytest.mark.skipif(config.DISABLE_JIT, reason="NUMBA_DISABLE_JIT=1: no JIT holds flags")
def test_every_jit_follows_the_policy():
    named = (False, F.FMA_ONLY, F.SUM_REASSOC, F.SUM_REASSOC_NO_FMA, F.ALL_FLAGS)
    seen = dict(_jits())
    assert len(seen) >= 50  # the modules were found
    for name, flags in seen.items():
        assert any(flags == n and type(flags) is type(n) for n in named), f"{name}: fastmath={flags!r} is not named"
        want = EXPECTED.get(name, False)
        assert flags == want, f"{name}: fastmath={flags!r}, expected {want!r}"
    assert set(EXPECTED) <= set(seen)


def test_the_named_sets_are_what_the_policy_says():
    assert F.FMA_ONLY == {"contract"} and F.SUM_REASSOC == {"contract", "reassoc"}
    assert F.SUM_REASSOC_NO_FMA == {"reassoc"} and F.ALL_FLAGS is True
