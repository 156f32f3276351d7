"""tinycomp_kernels: the Numba kernels of tinycomp. Array in, array out; imports numpy and numba (and
threadpoolctl for the thread pools) only.

Every kernel comes as reference (NumPy oracle) -> loops (plain Python) -> JIT (numba) -> wrapper
(validates, allocates, calls the JIT). Set NUMBA_DISABLE_JIT=1 to step through the loops in a debugger.

Fast-math flags: one policy for every JIT, stated in ``tinycomp_kernels.fastmath`` (default none; a
kernel that uses some names its set, e.g. ``fastmath=SUM_REASSOC``, with the reason beside it).

Thread pools: importing this package lets idle OpenMP and OpenBLAS workers sleep after a short spin
(``tinycomp_kernels.thread_pools``), and warns once where numpy came first and that is too late.

Memory: on glibc, importing it lets malloc keep freed arrays of up to 32 MiB for reuse instead of
unmapping them (``tinycomp_kernels.allocator``: a fresh array otherwise pays a page fault per 4 KiB on
first write, ~12 % of a training step); ``TINYCOMP_MALLOC=default`` opts out.

Numba's cache: importing it also drops the cached machine code when any kernel source changed
(``tinycomp_kernels.jit_cache``: Numba itself only notices a change in a function's own file).
"""
from . import allocator, jit_cache, thread_pools

thread_pools.configure()  # before any kernel module imports numpy or numba
jit_cache.refresh()  # before any kernel loads from the cache
allocator.configure()
