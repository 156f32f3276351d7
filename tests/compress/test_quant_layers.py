"""QuantConv2d / QuantLinear: forward against a float conv on the quantized operands, the XNOR layer's
integer part against the packed-bit kernel, BC's clipping, LSQ's first-batch step."""
import numpy as np
import pytest
from tinycomp_kernels.xnor_conv import binary_conv2d, pack_activations, pack_weights_per_tap

import tinycomp
from tinycomp import Tensor, compress, functional as F, nn, optim
from tinycomp.compress import QuantConv2d, QuantLinear
from tinycomp.compress.recipes import (LSQ, PACT, BinaryWeight, DorefaActivation, DorefaWeight, SignActivation,
                                       SignWeight)

rng = np.random.default_rng(0)


def sign(a):
    return np.where(a >= 0, 1.0, -1.0).astype(a.dtype)


def conv_layer(wq, xq, stride=1, padding=1, C=5, O=6, k=3, bias=False):
    conv = nn.Conv2d(C, O, k, stride=stride, padding=padding, bias=bias)
    return QuantConv2d.from_float(conv, wq, xq)


def test_bwn_forward_equals_float_conv_on_binarized_weights():
    layer = conv_layer(BinaryWeight(), None, bias=True)
    x = rng.standard_normal((2, 5, 7, 7)).astype(np.float32)
    w = layer.weight.data
    alpha = np.abs(w).mean(axis=(1, 2, 3), keepdims=True)
    expected = F.conv2d(Tensor(x), Tensor(alpha * sign(w)), layer.bias, padding=1).data
    np.testing.assert_allclose(layer(Tensor(x)).data, expected, rtol=1e-5, atol=1e-5)


def test_dorefa_w4a4_forward_equals_float_conv_on_quantized_operands():
    layer = conv_layer(DorefaWeight(4), DorefaActivation(4))
    x = rng.uniform(-0.5, 1.5, (2, 5, 6, 6)).astype(np.float32)
    w = layer.weight.data
    t = np.tanh(w)
    wq = 2 * np.round(15 * (t / (2 * np.abs(t).max()) + 0.5)) / 15 - 1
    xq = np.round(15 * np.clip(x, 0, 1)) / 15
    expected = F.conv2d(Tensor(xq.astype(np.float32)), Tensor(wq.astype(np.float32)), padding=1).data
    np.testing.assert_allclose(layer(Tensor(x)).data, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("C, stride, padding", [(5, 1, 1), (16, 1, 1), (64, 2, 1), (70, 1, 0), (32, 2, 1)])
def test_xnor_integer_part_equals_binary_conv2d_on_packed_bits(C, stride, padding):
    """What export relies on: conv2d(sign(x), sign(W)) with zero padding == the XNOR/popcount kernel."""
    layer = conv_layer(BinaryWeight(scale=None), SignActivation(), stride, padding, C=C, O=8)
    x = rng.standard_normal((2, C, 9, 9)).astype(np.float32)
    x[0, 0, 0, :3] = 0.0  # sign(0) = +1 on both sides
    y = layer(Tensor(x)).data
    ints = binary_conv2d(pack_activations(x), pack_weights_per_tap(layer.weight.data), C, stride=stride,
                         padding=padding, pad_mode="zero")
    np.testing.assert_array_equal(y, ints)
    assert np.array_equal(y, np.round(y))
    scaled = conv_layer(BinaryWeight(), SignActivation(), stride, padding, C=C, O=8)
    scaled.weight.data[...] = layer.weight.data
    alpha = np.abs(layer.weight.data).mean(axis=(1, 2, 3)).reshape(1, -1, 1, 1)
    np.testing.assert_allclose(scaled(Tensor(x)).data, ints * alpha, rtol=1e-6, atol=1e-5)


def test_xnor_activation_scale():
    layer = QuantConv2d.from_float(nn.Conv2d(4, 3, 3, padding=1, bias=False), BinaryWeight(), SignActivation(),
                                   act_scale=True)
    x = rng.standard_normal((1, 4, 5, 5)).astype(np.float32)
    plain = QuantConv2d.from_float(nn.Conv2d(4, 3, 3, padding=1, bias=False), BinaryWeight(), SignActivation())
    plain.weight.data[...] = layer.weight.data
    k = F.avg_pool2d(Tensor(np.pad(np.abs(x).mean(axis=1, keepdims=True), ((0, 0), (0, 0), (1, 1), (1, 1)))),
                     3, 1).data
    np.testing.assert_allclose(layer(Tensor(x)).data, plain(Tensor(x)).data * k, rtol=1e-5, atol=1e-6)


def test_bc_latent_weights_clipped_after_every_step():
    tinycomp.manual_seed(0)  # the layers' init: independent of the tests run before this one
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1), nn.Flatten(),
                          nn.Linear(4 * 6 * 6, 2))
    for m in model:  # small weights: the float classifier's logits stay unsaturated
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            m.weight.data *= 0.1
    compress.convert(model, "bc", keep_float=("last",))
    opt = optim.SGD(model.parameters(), lr=50.0)  # steps large enough to leave [-1, 1] without the clip
    x = Tensor(rng.standard_normal((4, 3, 6, 6)).astype(np.float32))
    escaped = False
    for _ in range(3):
        opt.zero_grad()
        F.cross_entropy(model(x), np.array([0, 1, 0, 1])).backward()
        opt.step()
        escaped |= any(np.abs(m.weight.data).max() > 1 for m in model if isinstance(m, QuantConv2d))
        compress.after_step(model)
        for m in model:
            if isinstance(m, (QuantConv2d, QuantLinear)):
                assert np.abs(m.weight.data).max() <= 1.0
    assert escaped  # the test would pass trivially otherwise
    assert all(isinstance(m.weight_quantizer, SignWeight) for m in model if isinstance(m, (QuantConv2d, QuantLinear)))


def test_bc_stochastic_draws_in_training_only():
    layer = QuantLinear.from_float(nn.Linear(64, 32), SignWeight(stochastic=True))
    x = Tensor(np.eye(64, dtype=np.float32))
    layer.weight.data[...] = rng.uniform(-0.5, 0.5, (32, 64)).astype(np.float32)
    a, b = layer(x).data, layer(x).data
    assert not np.array_equal(a, b)  # two draws
    layer.eval()
    det = layer(x).data
    np.testing.assert_allclose(det - layer.bias.data, sign(layer.weight.data).T, atol=1e-6)


def test_lsq_step_set_once_from_the_first_training_batch():
    q = LSQ(4, signed=False)
    layer = QuantConv2d.from_float(nn.Conv2d(3, 2, 1, bias=False), None, q)
    x = rng.uniform(0, 2, (2, 3, 4, 4)).astype(np.float32)
    layer.eval()
    layer(Tensor(x))
    assert not q.initialized and q.step.data == 1.0  # evaluation never initialises
    layer.train()
    layer(Tensor(x))
    assert q.initialized
    np.testing.assert_allclose(q.step.data, 2 * np.abs(x).mean() / np.sqrt(15), rtol=1e-6)
    first = q.step.data.copy()
    layer(Tensor(x * 3))
    np.testing.assert_array_equal(q.step.data, first)
    assert layer.state_dict()["input_quantizer.initialized"] == 1


def test_pact_alpha_is_kept_positive():
    q = PACT(2)
    layer = QuantConv2d.from_float(nn.Conv2d(3, 2, 1, bias=False), DorefaWeight(2), q)
    q.alpha.data[...] = -3.0
    layer.after_step()
    assert q.alpha.data > 0


def test_quantizer_parameters_have_no_weight_decay_group():
    model = compress.convert(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.Flatten(),
                                           nn.Linear(4, 2)), "w2a32", quantizer="lsq", keep_float=("first",))
    names = {id(p): n for n, p in model.named_parameters()}
    assert sorted(names[id(p)] for p in compress.quantizer_parameters(model)) == [
        "2.weight_quantizer.step", "4.weight_quantizer.step"]


def test_lsq_step_is_kept_positive():
    q = LSQ(4, signed=True)
    layer = QuantConv2d.from_float(nn.Conv2d(3, 2, 1, bias=False), q, None)
    q.step.data[...] = -1e-3
    layer.after_step()
    assert q.step.data > 0
