"""tinycomp.functional: every differentiable op, as a Function (forward + backward) and a snake_case
wrapper that checks its arguments. This package is the only place that calls tinycomp_kernels."""
from .activation import add_relu, hardtanh, leaky_relu, relu, sigmoid, tanh
from .conv import conv2d
from .dropout import dropout
from .elementwise import add, cast, div, exp, log, mul, neg, pow, sub
from .linalg import linear, matmul
from .loss import cross_entropy, log_softmax
from .normalization import batch_norm, batch_norm_relu
from .pooling import adaptive_avg_pool2d, avg_pool2d, max_pool2d
from .reduction import max, mean, sum
from .shape import cat, concatenate, getitem, pad, permute, reshape, transpose
from .sparse_conv import sparse_conv2d, sparse_training_pays
from .shift import shift2d
