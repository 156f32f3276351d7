"""The integer form of k-bit layers (compress/integer_form.py): when it is used, that it equals the
float product of the quantized operands, that its sums are exact (float32 below 2^24, float64 above),
and the BatchNorm affine the exporter stores (tinycomp_kernels.batchnorm)."""
import numpy as np
import pytest
from tinycomp_kernels.batchnorm import batch_norm_eval_affine, batch_norm_eval_forward, channel_affine
from tinycomp_kernels.bitserial import exact_float_dtype

import tinycomp
from tinycomp import Tensor, functional as F, nn
from tinycomp.autograd import no_grad
from tinycomp.compress import QuantConv2d, QuantLinear, integer_form
from tinycomp.compress.recipes import LSQ, PACT, DorefaActivation, DorefaWeight, SignActivation, TernaryWeight

rng = np.random.default_rng(0)
RECIPES = [(lambda: DorefaWeight(4), lambda: DorefaActivation(4)), (lambda: DorefaWeight(1), lambda: DorefaActivation(2)),
           (lambda: DorefaWeight(3), lambda: PACT(3, alpha=1.7)), (lambda: LSQ(4), lambda: LSQ(3, signed=False)),
           (lambda: TernaryWeight(), lambda: DorefaActivation(2))]


def _conv(wq, iq, C=6, O=5, stride=1, padding=1, bias=False):
    tinycomp.manual_seed(1)
    layer = QuantConv2d.from_float(nn.Conv2d(C, O, 3, stride=stride, padding=padding, bias=bias), wq, iq)
    if isinstance(wq, LSQ):
        wq.step.data[...] = 0.05
    if isinstance(iq, LSQ):
        iq.step.data[...] = 0.1
    return layer


def _float_form(layer, x):
    with no_grad():
        return F.conv2d(layer.quantized_input(Tensor(x)), layer.quantized_weight(), layer.bias, layer.stride,
                        layer.padding).data


@pytest.mark.parametrize("recipes", RECIPES)
@pytest.mark.parametrize("stride, bias", [(1, False), (2, True)])
def test_the_integer_form_equals_the_float_product_of_the_quantized_operands(recipes, stride, bias):
    layer = _conv(recipes[0](), recipes[1](), stride=stride, bias=bias).eval()
    x = rng.uniform(-0.3, 1.6, (3, 6, 9, 9)).astype(np.float32)
    with no_grad():
        y = layer(Tensor(x)).data
    assert y.dtype == np.float32
    ref = _float_form(layer, x)  # rounded at every product: off the exact value by float32 rounding
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-6 * np.abs(ref).max())
    np.testing.assert_array_equal(y, integer_form.conv2d(layer, x))


@pytest.mark.parametrize("recipes", RECIPES[:3])
def test_its_accumulator_is_the_integer_product(recipes):
    layer = _conv(recipes[0](), recipes[1]())
    x = rng.uniform(0, 1.2, (2, 6, 7, 7)).astype(np.float32)
    q, n, scale, dtype = integer_form._operands(layer, x)
    assert dtype == np.float32 and np.array_equal(q, np.round(q)) and np.array_equal(n, np.round(n))
    acc = F.conv2d(Tensor(q), Tensor(n), padding=1).data
    np.testing.assert_array_equal(acc, _int_conv(q.astype(np.int64), n.astype(np.int64)))


def _int_conv(q, n):
    """conv2d with zero padding 1, stride 1, in int64."""
    N, C, H, W = q.shape
    O, _, KH, KW = n.shape
    qp = np.pad(q, ((0, 0), (0, 0), (1, 1), (1, 1)))
    out = np.zeros((N, O, H, W), np.int64)
    for i in range(KH):
        for j in range(KW):
            out += np.einsum("nchw,oc->nohw", qp[:, :, i:i + H, j:j + W], n[:, :, i, j])
    return out


def test_sums_past_2_to_the_24_run_in_float64_and_stay_exact():
    n = np.full((2, 300, 3, 3), 255, np.int64)  # w8a8-sized: 2700 taps x 255 x 255 > 2^24
    assert exact_float_dtype(n, 255) == np.float64
    assert exact_float_dtype(n[:, :20], 255) == np.float32  # 180 taps: below
    assert exact_float_dtype(np.full((1, 65), -255), 1023) == np.float64  # |n| counts, not n
    layer = _conv(DorefaWeight(8), DorefaActivation(8), C=300, O=2).eval()
    x = rng.uniform(0.5, 1.0, (1, 300, 4, 4)).astype(np.float32)
    q, n, scale, dtype = integer_form._operands(layer, x)
    assert dtype == np.float64
    acc = F.conv2d(Tensor(q), Tensor(n), padding=1).data
    np.testing.assert_array_equal(acc, _int_conv(q.astype(np.int64), n.astype(np.int64)))


@pytest.mark.parametrize("recipes", RECIPES[:2])
def test_the_linear_layer_has_the_same_form(recipes):
    tinycomp.manual_seed(2)
    layer = QuantLinear.from_float(nn.Linear(20, 7), recipes[0](), recipes[1]()).eval()
    x = rng.uniform(0, 1.2, (4, 20)).astype(np.float32)
    with no_grad():
        y = layer(Tensor(x)).data
        expected = F.linear(layer.quantized_input(Tensor(x)), layer.quantized_weight(), layer.bias).data
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)


def test_used_in_eval_without_autograd_only():
    """Training and any forward that records a graph keep the recipes' gradients (the float form)."""
    layer = _conv(DorefaWeight(2), DorefaActivation(2))
    with no_grad():
        assert not integer_form.use_integer_form(layer)  # training mode
        layer.eval()
        assert integer_form.use_integer_form(layer)
    assert not integer_form.use_integer_form(layer)  # autograd on
    x = Tensor(rng.uniform(0, 1, (1, 6, 5, 5)).astype(np.float32), requires_grad=True)
    layer(x).sum().backward()
    assert x.grad is not None and np.abs(x.grad).sum() > 0


@pytest.mark.parametrize("wq, iq", [(DorefaWeight(2), SignActivation()), (DorefaWeight(2), None),
                                    (DorefaWeight(2), LSQ(2, signed=True)), (None, DorefaActivation(2))])
def test_layers_without_an_integer_form(wq, iq):
    """Binary inputs (XNOR has its own kernel), float inputs, signed inputs, float weights."""
    assert not integer_form.has_integer_form(_conv(wq, iq))


def test_per_channel_scales_have_no_integer_form():
    iq = PACT(2)
    iq.alpha.data = np.ones((1, 6, 1, 1), np.float32)
    assert not integer_form.has_integer_form(_conv(DorefaWeight(2), iq))


@pytest.mark.parametrize("shape", [(4, 3), (2, 3, 5), (2, 3, 4, 4)])
def test_channel_affine_is_the_eval_batchnorm_bit_for_bit(shape):
    x = rng.standard_normal(shape).astype(np.float32)
    C = shape[1]
    mean, var = rng.standard_normal(C), rng.uniform(0.1, 2, C)
    gamma, beta = rng.standard_normal(C).astype(np.float32), rng.standard_normal(C).astype(np.float32)
    scale, shift = batch_norm_eval_affine(C, mean, var, gamma, beta, 1e-5, np.float32)
    assert scale.dtype == shift.dtype == np.float32
    np.testing.assert_allclose(scale, gamma / np.sqrt(var + 1e-5), rtol=1e-6)
    for relu in (False, True):
        np.testing.assert_array_equal(channel_affine(x, scale, shift, relu),
                                      batch_norm_eval_forward(x, mean, var, gamma, beta, 1e-5, relu))


def test_channel_affine_refuses_a_scale_of_another_shape_or_dtype():
    x = np.zeros((2, 3, 4, 4), np.float32)
    with pytest.raises(ValueError, match="scale must be a \\(3,\\) float32"):
        channel_affine(x, np.ones(4, np.float32), np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="shift must be"):
        channel_affine(x, np.ones(3, np.float32), np.zeros(3))
