"""tinycomp_kernels: the Numba kernels of tinycomp. Array in, array out; imports numpy and numba only.

Every kernel comes as reference (NumPy oracle) -> loops (plain Python) -> JIT (numba) -> wrapper
(validates, allocates, calls the JIT). Set NUMBA_DISABLE_JIT=1 to step through the loops in a debugger.

Fast-math flags: one policy for every JIT, stated in ``tinycomp_kernels.fastmath`` (default none; a
kernel that uses some names its set, e.g. ``fastmath=SUM_REASSOC``, with the reason beside it).
"""
