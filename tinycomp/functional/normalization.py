"""Batch normalisation with PyTorch's semantics, for (N, C) and (N, C, H, W) inputs.

training:  statistics over every axis but the channel axis (M = N*H*W values per channel)
           mean_c, var_c = mean and *biased* variance of the batch, inv_std_c = 1/sqrt(var_c + eps)
           y = (x - mean_c) * inv_std_c * weight_c + bias_c
           running_mean <- (1 - momentum) * running_mean + momentum * mean_c          (in place)
           running_var  <- (1 - momentum) * running_var  + momentum * var_c * M/(M-1)  (unbiased, in place)
           dx = weight_c * inv_std_c / M * (M*dout - sum dout - x_hat * sum(dout * x_hat)),
           dweight_c = sum dout * x_hat,  dbias_c = sum dout
batch_norm_relu: z = max(y, 0) fused (dy = dz * [y > 0] in the backward, y's sign recomputed from x)
eval:      y = (x - running_mean_c) / sqrt(running_var_c + eps) * weight_c + bias_c  (a per-channel affine map)
           dx = dout * weight_c / sqrt(running_var_c + eps),  dweight_c = sum dout * x_hat,  dbias_c = sum dout
"""
import numpy as np
from tinycomp_kernels.batchnorm import batch_norm_backward, batch_norm_eval_forward, batch_norm_train_forward
from tinycomp_kernels.checks import is_real

from ..autograd import Function
from ._util import check_float


class BatchNormTrain(Function):
    @staticmethod
    def forward(ctx, x, weight, bias, running_mean=None, running_var=None, momentum=0.1, eps=1e-5, relu=False):
        y, mean, var, inv_std = batch_norm_train_forward(x, weight, bias, eps, relu)
        ctx.save_for_backward(x, weight, bias, mean, inv_std)
        ctx.relu = relu
        M = x.size // x.shape[1]
        if running_mean is not None:
            running_mean *= 1.0 - momentum
            running_mean += momentum * mean
        if running_var is not None:
            running_var *= 1.0 - momentum
            running_var += momentum * var * (M / max(M - 1, 1))
        return y

    @staticmethod
    def backward(ctx, dout):
        x, weight, bias, mean, inv_std = ctx.saved
        dx, dw, db = batch_norm_backward(dout, x, weight, mean, inv_std, bias, ctx.relu)
        need_x, need_w, need_b = ctx.needs_input_grad
        return (dx if need_x else None, dw.astype(x.dtype) if need_w else None,
                db.astype(x.dtype) if need_b else None)


class BatchNormReLUTrain(BatchNormTrain):
    """relu(BatchNormTrain): the same forward and backward with ``relu=True``; its own name in graphs and profiles."""


class BatchNormEval(Function):
    @staticmethod
    def forward(ctx, x, weight, bias, running_mean=None, running_var=None, eps=1e-5, relu=False):
        y = batch_norm_eval_forward(x, running_mean, running_var, weight, bias, eps, relu)
        ctx.save_for_backward(x, weight, y if relu else None)
        ctx.stats = (running_mean.astype(np.float64), 1.0 / np.sqrt(running_var.astype(np.float64) + eps))
        return y

    @staticmethod
    def backward(ctx, dout):
        x, weight, z = ctx.saved
        mean, inv_std = ctx.stats
        if z is not None:  # fused ReLU: no gradient where the output was clamped
            dout = np.where(z > 0, dout, 0).astype(dout.dtype, copy=False)
        shape = (1, -1) + (1,) * (x.ndim - 2)  # broadcast a (C,) vector over (N, C, ...)
        axes = (0,) + tuple(range(2, x.ndim))
        scale = inv_std if weight is None else inv_std * weight
        need_x, need_w, need_b = ctx.needs_input_grad
        dx = (dout * scale.reshape(shape)).astype(x.dtype) if need_x else None
        dw = (dout * ((x - mean.reshape(shape)) * inv_std.reshape(shape))).sum(axis=axes).astype(x.dtype) \
            if need_w else None
        db = dout.sum(axis=axes) if need_b else None
        return dx, dw, db


class BatchNormReLUEval(BatchNormEval):
    """relu(BatchNormEval): the same forward and backward with ``relu=True``; its own name in graphs and profiles."""


def batch_norm(x, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-5):
    """PyTorch's ``F.batch_norm``. ``running_mean`` / ``running_var``: float NumPy arrays (C,), updated
    in place when ``training`` (either may be None in training: then that statistic is not tracked)."""
    return _batch_norm("batch_norm", x, running_mean, running_var, weight, bias, training, momentum, eps, False)


def batch_norm_relu(x, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-5):
    """``relu(batch_norm(...))`` in one op: the same result and gradients, one pass over memory fewer
    each way and no intermediate tensor (the backward recomputes the ReLU mask from x)."""
    return _batch_norm("batch_norm_relu", x, running_mean, running_var, weight, bias, training, momentum, eps, True)


def check_eps(op, eps):
    if not (is_real(eps) and 0 <= eps < np.inf):  # NaN fails too
        raise ValueError(f"{op}: eps must be >= 0 and finite, got {eps!r}")


def check_momentum(op, momentum):
    if not (is_real(momentum) and 0 <= momentum <= 1):
        raise ValueError(f"{op}: momentum must be in [0, 1], got {momentum!r}")


def _batch_norm(op, x, running_mean, running_var, weight, bias, training, momentum, eps, relu):
    check_eps(op, eps)
    if training and running_mean is not None:
        check_momentum(op, momentum)
    check_float(op, x)
    if x.ndim not in (2, 3, 4):
        raise ValueError(f"{op}: input must be (N, C), (N, C, L) or (N, C, H, W), got shape {x.shape}")
    C = x.shape[1]
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None:
            check_float(op, t, name)
            if t.shape != (C,):
                raise ValueError(f"{op}: {name} has shape {t.shape}, expected ({C},) for input {x.shape}")
            if t.dtype != x.dtype:
                raise TypeError(f"{op}: {name} is {t.dtype} but input is {x.dtype}")
    for name, buf in (("running_mean", running_mean), ("running_var", running_var)):
        if buf is None:
            if not training:
                raise ValueError(f"{op}: eval mode needs {name} (got None)")
            continue
        if not isinstance(buf, np.ndarray) or not np.issubdtype(buf.dtype, np.floating):
            raise TypeError(f"{op}: {name} must be a float NumPy array (updated in place), got "
                            f"{type(buf).__name__}")
        if buf.shape != (C,):
            raise ValueError(f"{op}: {name} has shape {buf.shape}, expected ({C},) for input {x.shape}")
    if training:
        if x.numel() // C < 2:
            raise ValueError(f"{op}: training needs more than one value per channel, got input {x.shape}")
        fn = BatchNormReLUTrain if relu else BatchNormTrain
        return fn.apply(x, weight, bias, running_mean=running_mean, running_var=running_var,
                        momentum=float(momentum), eps=float(eps), relu=relu)
    fn = BatchNormReLUEval if relu else BatchNormEval
    return fn.apply(x, weight, bias, running_mean=running_mean, running_var=running_var, eps=float(eps), relu=relu)
