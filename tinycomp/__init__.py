"""tinycomp: a deep-learning compression engine in NumPy + Numba."""
import os

# Numba's OpenMP workers and OpenBLAS's workers both spin-wait after each call; on a 2-core machine
# a conv that goes Numba -> BLAS -> Numba then runs 10-20x slower while each pool steals the other's
# cores. Sleeping workers avoid that. Set before numpy and numba start their pools (too late for
# OpenBLAS if numpy was imported first: then set OPENBLAS_THREAD_TIMEOUT yourself).
os.environ.setdefault("OMP_WAIT_POLICY", "passive")
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

from .autograd import Function, no_grad, is_grad_enabled
from .tensor import Tensor, tensor
from .random import manual_seed
from .threads import set_num_threads, get_num_threads

__version__ = "0.1.0"
