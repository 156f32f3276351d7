"""tinycomp_kernels: the Numba kernels of tinycomp. Array in, array out; imports numpy and numba only.

Every kernel comes as reference (NumPy oracle) -> loops (plain Python) -> JIT (numba) -> wrapper
(validates, allocates, calls the JIT). Set NUMBA_DISABLE_JIT=1 to step through the loops in a debugger.
"""
