"""Thread counts of the two pools that run tinycomp's work: Numba's and the BLAS library's."""
import numba
from threadpoolctl import threadpool_limits

_blas_limit = None


def set_num_threads(n):
    """Use ``n`` threads in Numba kernels and in BLAS (numpy matmul). ``n`` is capped by
    NUMBA_NUM_THREADS (the number of cores by default)."""
    global _blas_limit
    n = int(n)
    if n < 1:
        raise ValueError(f"set_num_threads: n must be >= 1, got {n}")
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    _blas_limit = threadpool_limits(limits=n, user_api="blas")


def get_num_threads():
    return numba.get_num_threads()
