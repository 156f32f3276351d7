"""SAL (tinycomp.compress.sal): the attention's normalisation and softmax, the temperature schedule,
rounding and pair pruning, the rounded layer against the dense masked conv and against
tinycomp_kernels.sal, gradients, stride 2, checkpoints, the shared variant, SAL + BC / BWN, the
converter and the summary's accounting."""
import math

import numpy as np
import pytest
from tinycomp_kernels.sal import sal_conv2d, sal_pack

from tinycomp import Tensor, checkpoint, compress, functional as F, models, nn, optim, random
from tinycomp.compress.recipes import BinaryWeight, SignWeight
from tinycomp.compress.sal import (FLUSH_BELOW, SALConv2d, kept_fraction, round_attention, sal, sal_attention,
                                   sal_parameters, sal_temperature, sal_weight)
from tinycomp.summary import format_summary, summarize
from tinycomp.testing import gradcheck

rng = np.random.default_rng(0)
TOL = dict(rtol=1e-4, atol=1e-4)  # float32 sums of C·k² products of O(1) terms


@pytest.fixture(autouse=True)
def seeded():
    """Each test sees the same draws however the tests are selected or ordered."""
    global rng
    rng = np.random.default_rng(0)
    random.manual_seed(0)  # the layers' initial weights and attention


# --- independent NumPy references -----------------------------------------------------------------
def softmax_ref(A, T):
    z = T * A / np.std(A, axis=-1, ddof=1, keepdims=True)
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def onehot_ref(a):
    """The rounding rule pair by pair: the argmax tap if max a >= 0.5, else nothing."""
    mask = np.zeros_like(a)
    for idx in np.ndindex(a.shape[:-1]):
        if a[idx].max() >= 0.5:
            mask[idx + (int(np.argmax(a[idx])),)] = 1
    return mask


def conv_ref(x, w, stride=1, padding=1):
    """Cross-correlation by explicit patches, float64:
    y[n, o, i, j] = Σ_{c, a, b} w[o, c, a, b]·xpad[n, c, i·s + a, j·s + b]."""
    n, c, h, wd = x.shape
    o, _, k, _ = w.shape
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    oh, ow = (h + 2 * padding - k) // stride + 1, (wd + 2 * padding - k) // stride + 1
    y = np.zeros((n, o, oh, ow))
    for a in range(k):
        for b in range(k):
            patch = xp[:, :, a:a + stride * oh:stride, b:b + stride * ow:stride]  # (N, C, OH, OW)
            y += np.einsum("oc,nchw->nohw", w[:, :, a, b].astype(np.float64), patch)
    return y


def sign(a):
    return np.where(a >= 0, 1.0, -1.0).astype(a.dtype)


def layer(C=4, O=5, stride=1, bias=False, shared=False, quantizer=None, dtype=np.float32, t=20.0):
    conv = nn.Conv2d(C, O, 3, stride=stride, padding=1, bias=bias, dtype=dtype)
    sal_layer = SALConv2d.from_float(conv, shared=shared, weight_quantizer=quantizer)
    sal_layer.temperature[...] = t
    return sal_layer


def images(n=2, c=4, h=7, w=6, dtype=np.float32):
    return rng.standard_normal((n, c, h, w)).astype(dtype)


# --- the attention -------------------------------------------------------------------------------
@pytest.mark.parametrize("T", [0.5, 20.0, 70.0])
def test_attention_is_softmax_of_temperature_times_std_normalised(T):
    A = rng.random((5, 4, 9))
    a = sal_attention(Tensor(A), T).data
    np.testing.assert_allclose(a, softmax_ref(A, T), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(a.sum(axis=-1), 1.0, rtol=1e-12)
    # the std normalisation: scaling a row changes nothing; a shift of the row changes nothing either
    np.testing.assert_allclose(sal_attention(Tensor(3.7 * A), T).data, a, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(sal_attention(Tensor(A + 2.0), T).data, a, rtol=1e-10, atol=1e-14)


def test_attention_below_two_to_the_minus_64_is_flushed_to_exactly_zero():
    # taps 16 std apart at T = 70: softmax values far below 2^-64, most of them float32-subnormal
    A = np.zeros((40, 9), np.float32)
    A[:, 0] = 1.0
    A[:, 1:] = rng.random((40, 8)).astype(np.float32) * 0.9
    ref = softmax_ref(A.astype(np.float64), 70.0)
    assert np.any((ref > 0) & (ref < np.finfo(np.float32).tiny)) and np.any(ref >= FLUSH_BELOW)
    A_t = Tensor(A, requires_grad=True)
    a = sal_attention(A_t, 70.0)
    np.testing.assert_array_equal(a.data == 0, ref < FLUSH_BELOW * (1 + 1e-6))  # flushed exactly those taps
    # rtol: float32 logits of size T·Â ≈ 200 carry an absolute error ≈ 200·2^-24 into exp
    np.testing.assert_allclose(a.data, np.where(ref < FLUSH_BELOW, 0, ref), rtol=1e-4, atol=0)
    assert not np.any((a.data != 0) & (np.abs(a.data) < FLUSH_BELOW))
    # a flushed tap is a constant: its logit gets no gradient through its own value
    g = np.zeros(a.shape, np.float32)
    g[a.data == 0] = 1.0
    a.backward(g)
    np.testing.assert_array_equal(A_t.grad, 0)
    # W_eff of a float32 layer at the end of the schedule holds no subnormal value
    w = rng.standard_normal((40, 1, 3, 3)).astype(np.float32)
    w_eff = sal_weight(Tensor(w), sal_attention(Tensor(A[:, None, :]), 70.0)).data
    assert not np.any((w_eff != 0) & (np.abs(w_eff) < np.finfo(np.float32).tiny))


def test_temperature_sharpens_without_moving_the_argmax():
    A = rng.random((6, 3, 9))
    peaks = [sal_attention(Tensor(A), T).data for T in (1.0, 5.0, 20.0, 70.0)]
    for lo, hi in zip(peaks, peaks[1:]):
        np.testing.assert_array_equal(lo.argmax(-1), hi.argmax(-1))
        assert np.all(hi.max(-1) > lo.max(-1))
    # two taps' log-ratio is T times the gap of their normalised attentions
    z = A / A.std(axis=-1, ddof=1, keepdims=True)
    for T, a in ((1.0, peaks[0]), (5.0, peaks[1])):
        np.testing.assert_allclose(np.log(a[..., 0] / a[..., 1]), T * (z[..., 0] - z[..., 1]), rtol=1e-9,
                                   atol=1e-9)


def test_layer_initialises_attention_uniformly_and_shares_the_conv_parameters():
    conv = nn.Conv2d(16, 32, 3, padding=1)
    sal_layer = SALConv2d.from_float(conv)
    assert sal_layer.weight is conv.weight and sal_layer.bias is conv.bias
    A = sal_layer.attention.data
    assert A.shape == (32, 16, 9) and A.dtype == np.float32
    assert A.min() >= 0 and A.max() < 1 and abs(A.mean() - 0.5) < 0.03 and abs(A.var() - 1 / 12) < 0.01
    assert float(sal_layer.temperature) == 20.0


# --- the temperature schedule --------------------------------------------------------------------
def test_temperature_schedule_is_geometric_from_t0_to_tf():
    total = 101
    T = np.array([sal_temperature(s, total, 20, 70) for s in range(total)])
    assert T[0] == 20.0 and math.isclose(T[-1], 70.0, rel_tol=1e-12)
    ratios = T[1:] / T[:-1]
    np.testing.assert_allclose(ratios, (70 / 20) ** (1 / 100), rtol=1e-12)  # the same factor every batch
    assert math.isclose(T[50], math.sqrt(20 * 70), rel_tol=1e-12)  # geometric midpoint
    assert sal_temperature(500, total, 20, 70) == T[-1]  # beyond the run: stays at Tf
    assert sal_temperature(0, 1, 20, 70) == 70.0


def test_before_step_sets_the_temperature_of_every_layer():
    model = sal(models.get("resnet20", width=0.25), t0=10, tf=40)
    compress.before_step(model, 25, 10, 51)  # step 25 of 51: halfway
    temps = {float(m.temperature) for m in model.modules() if isinstance(m, SALConv2d)}
    assert len(temps) == 1 and math.isclose(temps.pop(), 20.0, rel_tol=1e-12)
    assert any(k.endswith(".temperature") for k in model.state_dict())


# --- rounding ------------------------------------------------------------------------------------
def test_rounding_keeps_the_argmax_tap_or_prunes_the_pair():
    sal_layer = layer(C=6, O=7, t=1.5)  # a low temperature: many pairs below 0.5
    a = softmax_ref(sal_layer.attention.data.astype(np.float64), 1.5)
    expected = onehot_ref(a)
    assert 0 < expected.sum() < 42  # some pairs kept, some pruned
    np.testing.assert_array_equal(sal_layer.kept_mask(), expected)
    tap = sal_layer.tap_index()
    assert tap.shape == (7, 6) and tap.dtype == np.int64
    np.testing.assert_array_equal(tap, np.where(expected.any(-1), expected.argmax(-1), -1))
    assert sal_layer.kept_pairs() == int(expected.sum())
    # hand-made rows: one clear peak is kept, three equal peaks (a = 1/3 each) are pruned
    rows = np.zeros((2, 9))
    rows[0, 4] = 1.0
    rows[1, [0, 1, 2]] = 1.0
    a = sal_attention(Tensor(rows), 20.0).data
    np.testing.assert_array_equal(round_attention(a), [4, -1])
    np.testing.assert_allclose(a[1, :3], 1 / 3, rtol=1e-6)


def test_eval_uses_the_rounded_layer_dense_and_kernel():
    sal_layer = layer(C=6, O=5, bias=False, t=2.0)
    sal_layer.eval()
    x = images(c=6, h=8, w=9)
    mask = onehot_ref(softmax_ref(sal_layer.attention.data.astype(np.float64), 2.0)).reshape(5, 6, 3, 3)
    w_round = sal_layer.weight.data * mask
    y = sal_layer(Tensor(x)).data
    np.testing.assert_allclose(y, conv_ref(x, w_round), **TOL)
    np.testing.assert_array_equal(sal_layer.rounded_weight(), w_round)
    packed = sal_pack(sal_layer.rounded_weight(), sal_layer.tap_index())
    assert len(packed.values) == sal_layer.kept_pairs()
    np.testing.assert_allclose(sal_conv2d(x, packed), y, **TOL)
    # a pruned pair's weights do not matter
    o, c = np.argwhere(sal_layer.tap_index() < 0)[0]
    sal_layer.weight.data[o, c] += 100.0
    np.testing.assert_array_equal(sal_layer(Tensor(x)).data, y)


def test_training_forward_uses_the_soft_attention():
    sal_layer = layer(C=3, O=4, bias=True, t=3.0)
    sal_layer.bias.data[:] = rng.standard_normal(4)
    x = images(c=3)
    a = softmax_ref(sal_layer.attention.data.astype(np.float64), 3.0).reshape(4, 3, 3, 3)
    expected = conv_ref(x, sal_layer.weight.data * a) + sal_layer.bias.data[None, :, None, None]
    np.testing.assert_allclose(sal_layer(Tensor(x)).data, expected, **TOL)


# --- gradients -----------------------------------------------------------------------------------
@pytest.mark.parametrize("T", [2.0, 20.0])
def test_gradcheck_through_attention_and_weight(T):
    x, w, A = rng.standard_normal((2, 2, 5, 4)), rng.standard_normal((3, 2, 3, 3)), rng.random((3, 2, 9))
    gradcheck(lambda x, w, A: F.conv2d(x, sal_weight(w, sal_attention(A, T)), padding=1), [x, w, A])
    shared = rng.random((2, 9))
    gradcheck(lambda w, A: sal_weight(w, sal_attention(A, T)), [w, shared])


def test_layer_attention_gradient_matches_central_differences():
    sal_layer = layer(C=2, O=2, dtype=np.float64, t=3.0)
    x = Tensor(images(c=2, h=4, w=5, dtype=np.float64))
    g = rng.standard_normal((2, 2, 4, 5))
    sal_layer(x).backward(g)
    A = sal_layer.attention.data
    numeric = np.zeros_like(A)
    for idx in np.ndindex(A.shape):
        saved = A[idx]
        values = []
        for delta in (1e-6, -1e-6):
            A[idx] = saved + delta
            values.append(np.sum(sal_layer(x).data * g))
        A[idx] = saved
        numeric[idx] = (values[0] - values[1]) / 2e-6
    np.testing.assert_allclose(sal_layer.attention.grad, numeric, rtol=1e-4, atol=1e-6)
    assert np.abs(numeric).max() > 1e-3  # a gradient that could be wrong


# --- stride 2 ------------------------------------------------------------------------------------
def test_stride_two():
    sal_layer = layer(C=4, O=6, stride=2, t=2.0)
    x = images(c=4, h=9, w=8)
    a = softmax_ref(sal_layer.attention.data.astype(np.float64), 2.0).reshape(6, 4, 3, 3)
    y = sal_layer(Tensor(x)).data
    assert y.shape == (2, 6, 5, 4)
    np.testing.assert_allclose(y, conv_ref(x, sal_layer.weight.data * a, stride=2), **TOL)
    sal_layer.eval()
    y = sal_layer(Tensor(x)).data
    np.testing.assert_allclose(y, conv_ref(x, sal_layer.rounded_weight(), stride=2), **TOL)
    # the stride-1 kernel, subsampled, is the same layer
    full = sal_conv2d(x, sal_pack(sal_layer.rounded_weight(), sal_layer.tap_index()))
    np.testing.assert_allclose(full[:, :, ::2, ::2], y, **TOL)


# --- checkpoints ---------------------------------------------------------------------------------
def test_checkpoint_round_trip(tmp_path):
    model = sal(models.get("resnet20", width=0.25))
    compress.before_step(model, 7, 10, 20)
    state = model.state_dict()
    assert {"layer1.0.conv1.weight", "layer1.0.conv1.attention", "layer1.0.conv1.temperature"} <= set(state)
    checkpoint.save(tmp_path / "sal.npz", state, None, {"config": {"model": "resnet20"}})
    fresh = sal(models.get("resnet20", width=0.25))
    checkpoint.load_into(tmp_path / "sal.npz", fresh)
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(fresh.state_dict()[key], value, err_msg=key)
    assert float(fresh.layer1[0].conv1.temperature) == sal_temperature(7, 20)
    x = Tensor(images(c=3, h=16, w=16))
    model.eval(), fresh.eval()
    np.testing.assert_array_equal(fresh(x).data, model(x).data)


# --- the shared variant --------------------------------------------------------------------------
def test_shared_attention_one_shift_per_input_channel():
    sal_layer = layer(C=5, O=4, shared=True, t=2.0)
    assert sal_layer.attention.shape == (5, 9)
    tap = sal_layer.tap_index()
    assert tap.shape == (4, 5) and (tap == tap[0]).all()  # every filter uses the channel's shift
    a = softmax_ref(sal_layer.attention.data.astype(np.float64), 2.0)
    np.testing.assert_array_equal(tap[0], np.where(a.max(-1) >= 0.5, a.argmax(-1), -1))
    x = images(c=5)
    y = sal_layer(Tensor(x))
    np.testing.assert_allclose(y.data, conv_ref(x, sal_layer.weight.data * a.reshape(1, 5, 3, 3)), **TOL)
    y.sum().backward()
    assert sal_layer.attention.grad.shape == (5, 9) and np.abs(sal_layer.attention.grad).sum() > 0
    sal_layer.eval()
    packed = sal_pack(sal_layer.rounded_weight(), tap)
    np.testing.assert_allclose(sal_conv2d(x, packed), sal_layer(Tensor(x)).data, **TOL)
    kept_channels = int((tap[0] >= 0).sum())
    assert sal_layer.kept_pairs() == 4 * kept_channels
    assert sal_layer.summary_param_bits() == 32 * 4 * kept_channels + 4 * kept_channels


# --- SAL + BC / BWN ------------------------------------------------------------------------------
def test_sal_bwn_alpha_over_the_kept_weights():
    sal_layer = layer(C=6, O=5, quantizer=BinaryWeight(), t=2.0)
    w = sal_layer.weight.data
    mask = sal_layer.kept_mask().reshape(5, 6, 3, 3)
    assert mask.sum() > 0
    # per filter, over its kept weights only (0 for a filter with none)
    alpha = np.array([np.abs(w[o][mask[o] > 0]).mean() if mask[o].any() else 0.0 for o in range(5)])
    expected = alpha[:, None, None, None] * sign(w) * mask
    np.testing.assert_allclose(sal_layer.rounded_weight(), expected, rtol=1e-6)
    sal_layer.eval()
    x = images(c=6)
    y = sal_layer(Tensor(x)).data
    np.testing.assert_allclose(y, conv_ref(x, expected), **TOL)
    packed = sal_pack(sal_layer.rounded_weight(), sal_layer.tap_index())
    np.testing.assert_allclose(sal_conv2d(x, packed), y, **TOL)
    # training: α = Σ a·|W| / Σ a per filter, with the soft attention
    sal_layer.train()
    a = softmax_ref(sal_layer.attention.data.astype(np.float64), 2.0).reshape(5, 6, 3, 3)
    soft_alpha = (a * np.abs(w)).sum(axis=(1, 2, 3)) / a.sum(axis=(1, 2, 3))
    np.testing.assert_allclose(sal_layer(Tensor(x)).data,
                               conv_ref(x, soft_alpha[:, None, None, None] * sign(w) * a), **TOL)


def test_sal_bwn_filter_with_no_kept_pair_is_zero():
    sal_layer = layer(C=2, O=3, quantizer=BinaryWeight(), t=20.0)
    sal_layer.attention.data[0] = 0.0
    sal_layer.attention.data[0, :, :3] = 1.0  # three equal peaks: both pairs of filter 0 pruned
    w_round = sal_layer.rounded_weight()
    assert np.isfinite(w_round).all() and not w_round[0].any() and w_round[1:].any()


def test_sal_bwn_gradients():
    x = rng.standard_normal((2, 2, 4, 4))
    w = rng.uniform(0.1, 0.9, (3, 2, 3, 3)) * np.where(rng.random((3, 2, 3, 3)) < 0.5, -1, 1)  # off the kinks
    A = rng.random((3, 2, 9))
    recipe = BinaryWeight()
    # the attention: smooth (sign(W) does not move), so plain central differences
    gradcheck(lambda x, w, A: F.conv2d(x, sal_weight(w, sal_attention(A, 2.0), recipe), padding=1), [x, w, A],
              check=[2])

    # the weight: the STE of sign (1{|W| <= 1}) and the exact derivative of α, i.e. the derivative at
    # W0 = w of the surrogate α(W)·(sign(W0) + hardtanh(W) - hardtanh(W0))·a, |W| = W·sign(W0)
    def surrogate(v, A):
        a = sal_attention(A, 2.0).reshape(3, 2, 3, 3)
        magnitude = v * Tensor(sign(w))
        alpha = (magnitude * a).sum(axis=(1, 2, 3), keepdims=True) / a.sum(axis=(1, 2, 3), keepdims=True)
        return alpha * (F.hardtanh(v) + Tensor(sign(w) - np.clip(w, -1, 1))) * a

    wt, At = Tensor(w, requires_grad=True), Tensor(A, requires_grad=True)
    g = rng.standard_normal(w.shape)
    sal_weight(wt, sal_attention(At, 2.0), recipe).backward(g)
    ws, As = Tensor(w, requires_grad=True), Tensor(A, requires_grad=True)
    surrogate(ws, As).backward(g)
    np.testing.assert_allclose(wt.grad, ws.grad, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(At.grad, As.grad, rtol=1e-10, atol=1e-12)
    gradcheck(surrogate, [w, A])  # and the surrogate's autograd is its own derivative


def test_sal_bc_signs_and_clipping():
    sal_layer = layer(C=3, O=4, quantizer=SignWeight(), t=2.0)
    w = sal_layer.weight.data
    np.testing.assert_array_equal(sal_layer.rounded_weight(),
                                  sign(w) * sal_layer.kept_mask().reshape(4, 3, 3, 3))
    x = images(c=3)
    a = softmax_ref(sal_layer.attention.data.astype(np.float64), 2.0).reshape(4, 3, 3, 3)
    np.testing.assert_allclose(sal_layer(Tensor(x)).data, conv_ref(x, sign(w) * a), **TOL)
    sal_layer.weight.data[0, 0, 0, 0] = 3.0
    compress.after_step(nn.Sequential(sal_layer))
    assert sal_layer.weight.data.max() <= 1.0 and sal_layer.weight.data[0, 0, 0, 0] == 1.0


# --- the converter -------------------------------------------------------------------------------
def test_converter_turns_every_3x3_but_the_first_into_sal():
    model = models.get("resnet20", width=0.25)
    before = dict(model.named_parameters())
    convs = {n: m for n, m in model.named_modules() if type(m) is nn.Conv2d}
    assert sal(model, shared=True) is model
    sal_names = [n for n, m in model.named_modules() if isinstance(m, SALConv2d)]
    assert sal_names == [n for n, m in convs.items() if m.kernel_size == (3, 3) and n != "conv1"]
    assert len(sal_names) == 18
    assert type(model.conv1) is nn.Conv2d and type(model.layer2[0].shortcut[0]) is nn.Conv2d  # 1x1 untouched
    after = dict(model.named_parameters())
    assert all(after[n] is p for n, p in before.items())  # the same Parameters
    assert sorted(set(after) - set(before)) == sorted(f"{n}.attention" for n in sal_names)
    assert sal_parameters(model) == [model.get_submodule(n).attention for n in sal_names]
    assert all(model.get_submodule(n).shared for n in sal_names)
    assert model.compression["method"] == "sal" and model.compression["float_layers"] == ["conv1"]
    kept = sum(model.get_submodule(n).kept_pairs() for n in sal_names)
    pairs = sum(model.get_submodule(n).in_channels * model.get_submodule(n).out_channels for n in sal_names)
    assert kept_fraction(model) == kept / pairs and 0 < kept_fraction(model) <= 1
    everything = sal(models.get("resnet20", width=0.25), keep_float=(), binarize="bc")
    assert isinstance(everything.conv1, SALConv2d) and isinstance(everything.conv1.weight_quantizer, SignWeight)
    assert everything.compression["method"] == "sal+bc" and everything.compression["float_layers"] == []


def test_converter_refusals():
    with pytest.raises(ValueError, match="sal: binarize must be None, 'bc' or 'bwn'"):
        sal(models.get("resnet20", width=0.25), binarize="xnor")
    with pytest.raises(ValueError, match="sal: keep_float: unknown 'classifier'"):
        sal(models.get("resnet20", width=0.25), keep_float=("classifier",))
    with pytest.raises(ValueError, match="sal: t0 must be a finite number > 0"):
        sal(models.get("resnet20", width=0.25), t0=0)
    model = sal(models.get("resnet20", width=0.25))
    with pytest.raises(ValueError, match="sal: CifarResNet is already converted"):
        sal(model)
    with pytest.raises(ValueError, match="sal: CifarResNet is already converted"):
        sal(compress.convert(models.get("resnet20", width=0.25), "bwn"))
    with pytest.raises(ValueError, match="kept_fraction: CifarResNet has no SAL layers"):
        kept_fraction(models.get("resnet20", width=0.25))
    with pytest.raises(ValueError, match="SALConv2d: kernel_size must be square and odd"):
        SALConv2d(3, 4, 2)
    with pytest.raises(ValueError, match="SALConv2d.from_float: needs groups 1 and dilation 1"):
        SALConv2d.from_float(nn.Conv2d(4, 4, 3, groups=2))
    with pytest.raises(TypeError, match="SALConv2d: weight_quantizer must be None, SignWeight or BinaryWeight"):
        SALConv2d(3, 4, 3, weight_quantizer=nn.ReLU())


@pytest.mark.parametrize("binarize", [None, "bwn"])
def test_a_training_step_with_the_hooks(binarize):
    model = sal(models.get("resnet20", width=0.25), binarize=binarize)
    attention = {id(p) for p in sal_parameters(model)}
    groups = [{"params": [p for p in model.parameters() if id(p) not in attention], "weight_decay": 5e-4},
              {"params": sal_parameters(model), "weight_decay": 0.0}]
    opt = optim.SGD(groups, lr=0.05, momentum=0.9)
    x = Tensor(images(n=4, c=3, h=16, w=16))
    y = rng.integers(0, 10, 4)
    start = [p.data.copy() for p in sal_parameters(model)]
    model.train()
    for step in range(2):
        compress.before_step(model, step, 2, 2)
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        compress.after_step(model)
        assert np.isfinite(float(loss.data))
    assert float(model.layer1[0].conv1.temperature) == 70.0  # the last step of the run
    assert all(not np.array_equal(p.data, s) for p, s in zip(sal_parameters(model), start))
    model.eval()
    assert np.isfinite(model(x).data).all()


# --- the summary ---------------------------------------------------------------------------------
@pytest.mark.parametrize("binarize,weight_bits", [(None, 32), ("bc", 1), ("bwn", 1)])
def test_summary_counts_kept_pairs(binarize, weight_bits):
    model = sal(models.get("resnet20", width=0.25), binarize=binarize)
    rows = {r["name"]: r for r in summarize(model)["layers"]}
    for name, m in model.named_modules():
        if not isinstance(m, SALConv2d):
            continue
        kept = m.kept_pairs()
        alphas = 32 * m.out_channels if binarize == "bwn" else 0
        row = rows[name]
        assert row["param_bits"] == kept * (weight_bits + 4) + alphas, name
        _, o, oh, ow = (1, m.out_channels) + tuple(row["output"][1:])
        assert row["macs"] == kept * oh * ow and row["mac_kind"] == "float"
        assert row["weight_bits"] == weight_bits and row["input_bits"] == 32
    assert rows["conv1"]["param_bits"] == 32 * model.conv1.weight.data.size  # kept float
    total = summarize(model)["total"]
    layers = [m for m in model.modules() if isinstance(m, SALConv2d)]
    assert total["kept_pairs"] == sum(m.kept_pairs() for m in layers)
    assert total["pairs"] == sum(m.out_channels * m.in_channels for m in layers)
    assert total["kept_pairs"] / total["pairs"] == pytest.approx(kept_fraction(model))
    assert "SAL pairs kept after rounding" in format_summary(summarize(model))
