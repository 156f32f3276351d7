"""The fastmath policy of the kernels, stated once: which LLVM fast-math flags a JIT may use, and why.

The default is no flag (``njit`` without ``fastmath``): a loop computes in the order it is written,
with one rounding per operation, and NaN and Inf propagate as in IEEE arithmetic. Integer, bit, copy
and select kernels stay there (flags would change nothing), and so do the float kernels whose
results must not depend on the vector width (the quantizers' elementwise loops equal NumPy's bit for
bit).

A kernel departs from the default only with one of the named flag sets below, passed as
``njit(..., fastmath=NAME)`` with a one-line reason beside it:

    FMA_ONLY            {"contract"}             a * b + c fused into one FMA (one rounding instead of
                                                 two); every sum keeps the order written. For loops that
                                                 add whole vectors (axpy: shifted planes, rows of b), which
                                                 vectorise without reassociation.
    SUM_REASSOC         {"contract", "reassoc"}  FMA, and sums re-associated: a reduction (a dot product,
                                                 an accumulator over taps) is split over vector lanes, the
                                                 serial chain otherwise runs ~4x slower. The result differs
                                                 from the serial sum by rounding; NaN and Inf still behave.
    SUM_REASSOC_NO_FMA  {"reassoc"}              sums re-associated, no FMA: a float64 sum of values whose
                                                 products are rounded as written (quantizers' gradients,
                                                 BatchNorm's per-channel sums).
    ALL_FLAGS           True                     every flag, incl. no-NaN/no-Inf assumptions and
                                                 reciprocals: only where the inputs are finite by the
                                                 kernel's contract (uint8 pixels; the binary-weight conv,
                                                 whose docstring says an Inf in x gives NaN).

The register tiles (``fma_tile``, ``csr_tile``) are LLVM IR that calls ``llvm.fma`` itself: FMA by
construction, in the order of their IR, whatever the flags of the JIT that inlines them.

A flag set changes the rounding of a kernel's results, so it is part of that kernel's numerical
behaviour: checkpoints resume bit for bit only with the same flags. Change one only with the kernel's
tests (and a retrained reference) in hand, never as a tidy-up. The sets are shared by every JIT that
names them: do not mutate them.
"""

FMA_ONLY = {"contract"}
SUM_REASSOC = {"contract", "reassoc"}
SUM_REASSOC_NO_FMA = {"reassoc"}
ALL_FLAGS = True
