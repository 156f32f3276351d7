"""The memory floor of a kernel that must read a whole array once: a parallel streaming sum.

``read_all(a)`` sums a C-contiguous float32 array with every Numba thread, each over its own
contiguous part; fastmath reassociation lets LLVM vectorise the loop into several independent vector
accumulators, so its time is that of reading the array from wherever it sits, not of adding.
bench_sparse.py times it on b beside the sparse product: at 95 % sparsity every column of W keeps
weights, so the product reads all of b, and dense / read_all is the most any such kernel can gain
over the dense matmul.
"""
import numpy as np
from numba import get_num_threads, njit, prange


@njit(parallel=True, fastmath={"reassoc", "contract"}, cache=True)
def _read_all_loops(flat, n_workers):
    totals = np.zeros(n_workers)
    n = flat.size
    for w in prange(n_workers):
        lo = w * n // n_workers
        hi = (w + 1) * n // n_workers
        part = flat[lo:hi]  # a slice: 0-based indices, which LLVM vectorises (no wraparound test)
        acc = np.float32(0)
        for j in range(part.size):
            acc += part[j]
        totals[w] = acc
    return totals.sum()


def read_all(a):
    """Sum of a C-contiguous float32 array (float32 partial sums), read once by every Numba thread."""
    if not isinstance(a, np.ndarray) or a.dtype != np.float32 or not a.flags.c_contiguous:
        raise TypeError("read_all: a must be a C-contiguous float32 numpy array")
    return float(_read_all_loops(a.reshape(-1), get_num_threads()))
