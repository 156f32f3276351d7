"""tinycomp: a deep-learning compression engine in NumPy + Numba."""
# first, before numpy: importing the kernels lets idle OpenMP and OpenBLAS workers sleep after a short
# spin (tinycomp_kernels.thread_pools), and warns if numpy came first and it is too late
import tinycomp_kernels  # noqa: F401

from .autograd import Function, no_grad, is_grad_enabled
from .tensor import Tensor, tensor
from .random import manual_seed
from .threads import set_num_threads, get_num_threads

__version__ = "0.1.0"
