"""tinycomp: a deep-learning compression engine in NumPy + Numba."""
from .autograd import Function, no_grad, is_grad_enabled
from .tensor import Tensor, tensor
from .random import manual_seed
from .threads import set_num_threads, get_num_threads

__version__ = "0.1.0"
