"""Layers with learnable parameters: Linear, Conv2d, BatchNorm2d (and BatchNorm1d)."""
import numpy as np
from tinycomp_kernels.checks import is_int
from tinycomp_kernels.im2col import as_pair

from .. import functional as F
from ..functional.normalization import check_eps, check_momentum
from .init import default_init_
from .module import Module
from .parameter import Parameter


class Linear(Module):
    """y = x Wᵀ + b; weight (out_features, in_features)."""

    def __init__(self, in_features, out_features, bias=True, dtype=np.float32):
        super().__init__()
        for name, n in (("in_features", in_features), ("out_features", out_features)):
            if not is_int(n) or n < 0:  # 0 is allowed, as in PyTorch: an empty weight
                raise ValueError(f"Linear: {name} must be an int >= 0, got {n!r}")
        self.in_features, self.out_features = in_features, out_features
        self.weight = Parameter(np.empty((out_features, in_features), dtype))
        self.bias = Parameter(np.empty(out_features, dtype)) if bias else None
        default_init_(self.weight, self.bias)

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class Conv2d(Module):
    """2-D convolution, NCHW input, weight (out_channels, in_channels / groups, KH, KW)."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=True, dtype=np.float32):
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"Conv2d: in_channels {in_channels} and out_channels {out_channels} must be "
                             f"divisible by groups {groups}")
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size = as_pair(kernel_size, "kernel_size", "Conv2d", 1)
        self.stride = as_pair(stride, "stride", "Conv2d", 1)
        self.padding = as_pair(padding, "padding", "Conv2d", 0)
        self.dilation = as_pair(dilation, "dilation", "Conv2d", 1)
        self.weight = Parameter(np.empty((out_channels, in_channels // groups) + self.kernel_size, dtype))
        self.bias = Parameter(np.empty(out_channels, dtype)) if bias else None
        default_init_(self.weight, self.bias)

    def forward(self, x):
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)

    def extra_repr(self):
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
             f"stride={self.stride}, padding={self.padding}")
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        return s + ("" if self.bias is not None else ", bias=False")


class _BatchNorm(Module):
    """Batch normalisation with PyTorch's semantics: normalise by the batch's biased variance in
    training and update running_mean / running_var (unbiased batch variance) with ``momentum``;
    use the running statistics in eval mode."""

    expected_ndim = ()

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, dtype=np.float32):
        super().__init__()
        if not is_int(num_features) or num_features < 1:
            raise ValueError(f"{type(self).__name__}: num_features must be a positive int, got {num_features!r}")
        check_eps(type(self).__name__, eps)
        check_momentum(type(self).__name__, momentum)
        self.num_features, self.eps, self.momentum, self.affine = num_features, eps, momentum, affine
        self.weight = Parameter(np.ones(num_features, dtype)) if affine else None
        self.bias = Parameter(np.zeros(num_features, dtype)) if affine else None
        self.register_buffer("running_mean", np.zeros(num_features, dtype))
        self.register_buffer("running_var", np.ones(num_features, dtype))
        self.register_buffer("num_batches_tracked", np.zeros((), np.int64))

    def forward(self, x, relu=False):
        """BN(x); with ``relu``, relu(BN(x)) as one op (F.batch_norm_relu): a model's fused path (see nn.fused)."""
        if x.ndim not in self.expected_ndim or x.shape[1] != self.num_features:
            raise ValueError(f"{type(self).__name__}({self.num_features}): input of shape {x.shape} needs "
                             f"{' or '.join(map(str, self.expected_ndim))} dimensions with {self.num_features} channels")
        if self.training:
            self.num_batches_tracked += 1
        op = F.batch_norm_relu if relu else F.batch_norm
        return op(x, self.running_mean, self.running_var, self.weight, self.bias,
                  training=self.training, momentum=self.momentum, eps=self.eps)

    def extra_repr(self):
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}"


class BatchNorm2d(_BatchNorm):
    expected_ndim = (4,)


class BatchNorm1d(_BatchNorm):
    expected_ndim = (2, 3)
