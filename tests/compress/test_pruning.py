"""Magnitude pruning: the AGP schedule, exact sparsities (per layer, global), the layers left alone,
pruned weights exactly 0 through SGD/Adam with momentum and weight decay, masks in checkpoints,
resume determinism, prune+bwn, the summary's counts, refusals."""
import numpy as np
import pytest

from tinycomp import Tensor, checkpoint, compress, functional as F, models, nn, optim
from tinycomp.compress import quantizers as Q
from tinycomp.compress.agp import agp_sparsity, is_update_step
from tinycomp.compress.pruning import (MagnitudePruner, PrunedConv2d, masked_binarize_weight, pruned_count,
                                       prune, smallest_mask)
from tinycomp.compress.recipes import LSQ, BinaryWeight, DorefaWeight, SignWeight, TernaryWeight
from tinycomp.random import manual_seed
from tinycomp.summary import summarize

SPE = 4  # steps per epoch in the short training runs below


def small_net(seed=0):
    manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.Conv2d(4, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
                         nn.Conv2d(6, 8, 3, stride=2, padding=1, bias=False), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3))


def batch(step):
    """The batch of ``step``: a pure function of the step, as a resumed loader's."""
    rng = np.random.default_rng(1000 + step)
    return rng.standard_normal((4, 3, 8, 8)).astype(np.float32), rng.integers(0, 3, 4)


def train(model, opt, steps, total, on_step=None):
    """The training loop's order: before_step, forward, backward, optimizer step, after_step."""
    for step in steps:
        compress.before_step(model, step, SPE, total)
        x, y = batch(step)
        loss = F.cross_entropy(model(Tensor(x)), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if on_step is not None:
            on_step(step)
        compress.after_step(model)


def pruned_layers(model):
    return [m for m in model.modules() if isinstance(m, PrunedConv2d)]


# --- the schedule ----------------------------------------------------------------------------
def test_agp_values_follow_the_cubic():
    f, t0, t1 = 0.8, 10, 20
    for t in range(0, 30):
        if t < t0:
            expected = 0.0
        elif t > t1:
            expected = f
        else:
            expected = f + (0.0 - f) * (1 - (t - t0) / (t1 - t0)) ** 3
        assert agp_sparsity(t, f, t0, t1) == pytest.approx(expected, abs=1e-15)
    assert agp_sparsity(15, 0.8, 10, 20) == pytest.approx(0.8 * (1 - 0.5 ** 3))  # 0.7
    assert agp_sparsity(10, 0.8, 10, 20) == 0.0 and agp_sparsity(20, 0.8, 10, 20) == 0.8
    assert agp_sparsity(12, 0.9, 10, 20, initial=0.5) == pytest.approx(0.9 - 0.4 * 0.8 ** 3)
    assert agp_sparsity(3, 0.9, 10, 20, initial=0.5) == 0.5
    assert [agp_sparsity(t, 0.6, 5, 5) for t in (4, 5, 6)] == [0.0, 0.6, 0.6]  # span 0: a jump at t0
    values = [agp_sparsity(t, 0.95, 0, 100) for t in range(101)]
    assert all(b >= a for a, b in zip(values, values[1:]))
    assert values[10] - values[0] > values[100] - values[90]  # fast early, slow near the target


def test_update_steps_are_every_and_the_end():
    assert [t for t in range(40) if is_update_step(t, 5, 27, 10)] == [5, 15, 25, 27]
    assert [t for t in range(10) if is_update_step(t, 3, 3, 100)] == [3]


# --- which weights, how many ---------------------------------------------------------------------
@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.5, 0.77, 0.9, 0.99])
def test_per_layer_sparsity_is_exact_and_the_smallest_go(sparsity):
    model = models.get("resnet20", num_classes=10, width=0.25)
    before = {n: m.weight.data.copy() for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    prune(model, sparsity)
    for name, layer in model.named_modules():
        if isinstance(layer, PrunedConv2d):
            w, n = before[name], before[name].size
            pruned = layer.weight_mask == 0
            assert np.count_nonzero(pruned) == min(int(np.floor(sparsity * n + 0.5)), n - 1), name
            if pruned.any() and (~pruned).any():
                assert np.abs(w[pruned]).max() <= np.abs(w[~pruned]).min(), name
            np.testing.assert_array_equal(layer.weight.data, w * layer.weight_mask)
            assert layer.sparsity == pytest.approx(np.count_nonzero(pruned) / n)


def test_rounding_halves_up_and_a_layer_keeps_one_weight():
    assert [pruned_count(s, 10) for s in (0.04, 0.05, 0.15, 0.25, 0.94, 0.96)] == [0, 1, 2, 3, 9, 9]
    assert pruned_count(0.999, 9) == 8


def test_global_sparsity_is_exact_over_all_pruned_weights_with_one_threshold():
    model = models.get("resnet20", num_classes=10, width=0.25)
    before = {n: np.abs(m.weight.data).copy() for n, m in model.named_modules() if type(m) is nn.Conv2d}
    prune(model, 0.8, scope="global")
    layers = dict((n, m) for n, m in model.named_modules() if isinstance(m, PrunedConv2d))
    total = sum(m.weight_mask.size for m in layers.values())
    pruned = sum(np.count_nonzero(m.weight_mask == 0) for m in layers.values())
    assert pruned == int(np.floor(0.8 * total + 0.5))
    assert model.pruner.sparsity == pytest.approx(pruned / total)
    kept_min = min(before[n][m.weight_mask == 1].min() for n, m in layers.items())
    pruned_max = max(before[n][m.weight_mask == 0].max() for n, m in layers.items() if (m.weight_mask == 0).any())
    assert pruned_max <= kept_min
    assert np.ptp([m.sparsity for m in layers.values()]) > 0.1  # not a per-layer split in disguise


def test_ties_go_to_the_already_pruned_then_by_position():
    magnitude = np.array([0.0, 0.0, 0.0, 0.5, 0.0, 0.7])
    previous = np.array([1, 1, 1, 1, 0, 1], np.uint8)
    np.testing.assert_array_equal(smallest_mask(magnitude, previous, 2), [0, 1, 1, 1, 0, 1])
    np.testing.assert_array_equal(smallest_mask(magnitude, previous, 0), np.ones(6))


def test_first_conv_and_classifier_untouched_and_parameters_shared():
    model = models.get("resnet20", num_classes=10, width=0.25)
    params = dict(model.named_parameters())
    first = model.conv1.weight.data.copy()
    prune(model, 0.9, scope="global")
    assert type(model.conv1) is nn.Conv2d and type(model.linear) is nn.Linear
    np.testing.assert_array_equal(model.conv1.weight.data, first)
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    assert [n for n, m in model.named_modules() if isinstance(m, PrunedConv2d)] == convs[1:]
    after = dict(model.named_parameters())
    assert after.keys() == params.keys() and all(after[n] is p for n, p in params.items())
    assert "layer2.0.shortcut.0" in model.pruner.names


# --- exactly zero through training ------------------------------------------------------------
@pytest.mark.parametrize("make_opt", [
    lambda p: optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=0.05),
    lambda p: optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=0.05, nesterov=True),
    lambda p: optim.Adam(p, lr=0.01, weight_decay=0.05)], ids=["sgd", "nesterov", "adam"])
def test_pruned_weights_stay_exactly_zero_with_momentum_and_weight_decay(make_opt):
    model = prune(small_net(), 0.7, start_epoch=1, end_epoch=5, every=3)  # masks grow during steps 4..20
    opt = make_opt(model.parameters())
    layers = pruned_layers(model)
    stale = []  # how far momentum moves pruned weights before after_step resets them

    def check(step):
        stale.append(max(np.abs(m.weight.data[m.weight_mask == 0]).max(initial=0) for m in layers))

    masks = []
    for step in range(40):
        train(model, opt, [step], 40, on_step=check)
        for m in layers:
            assert np.all(m.weight.data[m.weight_mask == 0] == 0), step
        masks.append([m.weight_mask.copy() for m in layers])
    assert max(stale) > 0  # the momentum of a weight pruned mid-run does push it, ...
    assert model.pruner.sparsity == pytest.approx(0.7, abs=0.01)  # ... after_step puts it back to 0
    for earlier, later in zip(masks, masks[1:]):  # a growing target never revives a weight
        assert all(np.all(b <= a) for a, b in zip(earlier, later))
    assert all(m.mask_fixed for m in layers)


def test_masked_gradient_is_zero():
    layer = PrunedConv2d.from_float(nn.Conv2d(3, 5, 3, padding=1))
    keep = np.random.default_rng(0).random(layer.weight.shape) > 0.6
    layer.set_mask(keep)
    x = Tensor(np.random.default_rng(1).standard_normal((2, 3, 6, 6)).astype(np.float32))
    layer(x).sum().backward()
    assert np.all(layer.weight.grad[~keep] == 0) and np.all(layer.weight.grad[keep] != 0)
    expected = F.conv2d(x, Tensor(layer.weight.data * keep), layer.bias, padding=1).data
    np.testing.assert_allclose(layer(x).data, expected, rtol=1e-6, atol=1e-6)


# --- checkpoints and resume ------------------------------------------------------------------
def test_masks_are_uint8_buffers_and_a_float_checkpoint_loads_with_only_masks_missing(tmp_path):
    float_model = small_net(seed=3)
    checkpoint.save(tmp_path / "float.npz", float_model.state_dict())
    model = prune(small_net(seed=4), 0.5, start_epoch=1, end_epoch=2)
    keys = list(model.state_dict())
    masks = ["3.weight_mask", "6.weight_mask"]
    assert len(keys) == len(set(keys))  # the pruner registers no layer a second time
    assert [k for k in keys if k not in masks] == list(float_model.state_dict())
    assert [k for k in keys if k.endswith("weight_mask")] == masks
    missing, unexpected = model.load_state_dict(checkpoint.load(tmp_path / "float.npz")["model"], strict=False)
    assert missing == masks and unexpected == []
    np.testing.assert_array_equal(model[3].weight.data, float_model[3].weight.data)
    assert model[3].weight_mask.dtype == np.uint8 and np.all(model[3].weight_mask == 1)

    compress.before_step(model, 8, SPE, 100)  # the end step: pruned to 0.5
    checkpoint.save(tmp_path / "pruned.npz", model.state_dict())
    state = checkpoint.load(tmp_path / "pruned.npz")["model"]
    assert state["3.weight_mask"].dtype == np.uint8
    again = prune(small_net(seed=5), 0.5, start_epoch=1, end_epoch=2)
    again.load_state_dict(state)
    for a, b in zip(pruned_layers(model), pruned_layers(again)):
        np.testing.assert_array_equal(a.weight_mask, b.weight_mask)
        assert b.sparsity == pytest.approx(0.5, abs=0.01)


def run(scope, steps, resume_at=None, tmp_path=None):
    """Weights and masks after ``steps`` steps, optionally saved at ``resume_at`` and continued in a
    fresh model and optimizer from the checkpoint file."""
    def fresh():
        model = prune(small_net(), 0.8, scope=scope, start_epoch=0.5, end_epoch=2.5, every=3)
        return model, optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-3)

    model, opt = fresh()
    train(model, opt, range(resume_at if resume_at is not None else steps), steps)
    if resume_at is not None:
        checkpoint.save(tmp_path / "last.npz", model.state_dict(), opt.state_dict())
        model, opt = fresh()
        checkpoint.load_into(tmp_path / "last.npz", model, opt)
        train(model, opt, range(resume_at, steps), steps)
    return model.state_dict()


@pytest.mark.parametrize("scope", ["layer", "global"])
@pytest.mark.parametrize("resume_at", [5, 8, 11])  # schedule: updates at steps 2, 5, 8 and 10 (the end)
def test_resume_gives_identical_weights_and_masks(scope, resume_at, tmp_path):
    straight = run(scope, 14)
    resumed = run(scope, 14, resume_at, tmp_path)
    assert straight.keys() == resumed.keys()
    for k in straight:
        np.testing.assert_array_equal(straight[k], resumed[k], err_msg=k)
    assert straight["6.weight_mask"].mean() < 0.5  # the schedule did prune


def test_at_once_masks_are_recomputed_identically_and_mask_fixed():
    model = prune(small_net(), 0.6)  # start = end = 0: pruned here
    masks = [m.weight_mask.copy() for m in pruned_layers(model)]
    assert model.pruner.mask_fixed
    compress.before_step(model, 0, SPE, 10)
    for m, before in zip(pruned_layers(model), masks):
        np.testing.assert_array_equal(m.weight_mask, before)
    gradual = prune(small_net(), 0.6, start_epoch=1, end_epoch=2)
    assert np.all(gradual[3].weight_mask == 1) and not gradual.pruner.mask_fixed
    compress.before_step(gradual, 7, SPE, 100)
    assert not gradual.pruner.mask_fixed
    compress.before_step(gradual, 8, SPE, 100)
    assert gradual.pruner.mask_fixed and gradual[3].sparsity == pytest.approx(0.6, abs=0.01)
    assert PrunedConv2d.from_float(nn.Conv2d(2, 2, 1)).mask_fixed  # no schedule: nothing moves the mask


# --- prune + bwn --------------------------------------------------------------------------
def test_masked_bwn_alpha_is_the_mean_over_each_filters_kept_weights():
    rng = np.random.default_rng(2)
    layer = PrunedConv2d.from_float(nn.Conv2d(4, 3, 3, padding=1, bias=False), BinaryWeight())
    layer.weight.data[...] = rng.uniform(-1.5, 1.5, layer.weight.shape)
    keep = rng.random(layer.weight.shape) > 0.5
    keep[2] = False  # a filter with nothing kept: alpha 0
    layer.set_mask(keep)
    w = layer.weight.data
    alpha = np.array([np.abs(w[o][keep[o]]).mean() if keep[o].any() else 0.0 for o in range(3)])
    expected_w = keep * alpha.reshape(3, 1, 1, 1) * np.where(w >= 0, 1.0, -1.0)
    np.testing.assert_allclose(layer.masked_weight().data, expected_w, rtol=1e-6)
    x = Tensor(rng.standard_normal((2, 4, 5, 5)).astype(np.float32))
    np.testing.assert_allclose(layer(x).data, F.conv2d(x, Tensor(expected_w.astype(np.float32)), padding=1).data,
                               rtol=1e-5, atol=1e-5)

    g = rng.standard_normal(w.shape).astype(np.float32)  # the gradient against the stated formula
    layer.weight.grad = None
    (layer.masked_weight() * g).sum().backward()
    s, m = np.where(w >= 0, 1.0, -1.0), keep.astype(np.float64)
    n = np.maximum(m.sum(axis=(1, 2, 3), keepdims=True), 1)
    a = alpha.reshape(3, 1, 1, 1)
    expected = m * a * g * (np.abs(w) <= 1) + m * s / n * (m * g * s).sum(axis=(1, 2, 3), keepdims=True)
    np.testing.assert_allclose(layer.weight.grad, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("scale", ["filter", "layer"])
def test_masked_bwn_with_nothing_pruned_is_bwn(scale):
    rng = np.random.default_rng(3)
    w0 = rng.uniform(-1.5, 1.5, (3, 2, 3, 3)).astype(np.float32)
    g = rng.standard_normal(w0.shape).astype(np.float32)
    grads = []
    for op in (lambda w: Q.binarize_weight(w, scale=scale),
               lambda w: masked_binarize_weight(w * np.ones_like(w0), np.ones_like(w0), scale=scale)):
        w = Tensor(w0.copy(), requires_grad=True)
        q = op(w)
        (q * g).sum().backward()
        grads.append((q.data, w.grad))
    np.testing.assert_allclose(grads[0][0], grads[1][0], rtol=1e-6)
    np.testing.assert_allclose(grads[0][1], grads[1][1], rtol=1e-5, atol=1e-6)


def test_prune_bwn_trains_with_pruned_entries_zero_in_the_binary_weight():
    model = prune(small_net(), 0.75, start_epoch=0, end_epoch=1, every=2, weight_quantizer=BinaryWeight)
    opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-2)
    train(model, opt, range(10), 10)
    for m in pruned_layers(model):
        assert isinstance(m.weight_quantizer, BinaryWeight)
        wb = m.masked_weight().data
        assert np.all(wb[m.weight_mask == 0] == 0) and np.all(m.weight.data[m.weight_mask == 0] == 0)
        assert np.all(wb[m.weight_mask == 1] != 0)
        assert m.sparsity == pytest.approx(0.75, abs=0.02)


def test_bc_and_dorefa_on_the_masked_weight():
    for recipe in (SignWeight(), DorefaWeight(2)):
        layer = PrunedConv2d.from_float(nn.Conv2d(3, 4, 3), recipe)
        keep = np.random.default_rng(4).random(layer.weight.shape) > 0.5
        layer.set_mask(keep)
        masked = Tensor(layer.weight.data * keep)
        np.testing.assert_allclose(layer.masked_weight().data, recipe(masked).data * keep)
        assert np.all(layer.masked_weight().data[~keep] == 0)


# --- summary ---------------------------------------------------------------------------------
def test_summary_counts_by_hand():
    model = prune(small_net(), 0.5)
    rows = {r["name"]: r for r in summarize(model, (3, 8, 8))["layers"]}
    # layer 3: Conv2d(4, 6, 3, padding=1) on 8x8, bias: n = 216, 108 kept
    nnz = 108
    assert rows["3"]["param_bits"] == nnz * 32 + 32 * (6 + 1) + 32 * nnz + 32 * 6
    assert rows["3"]["macs"] == nnz * 8 * 8 and rows["3"]["type"] == "PrunedConv2d"
    # layer 6: Conv2d(6, 8, 3, stride 2, padding=1), no bias, on 8x8 -> 4x4: n = 432, 216 kept
    assert rows["6"]["param_bits"] == 216 * 32 + 32 * 9 + 32 * 216
    assert rows["6"]["macs"] == 216 * 4 * 4
    assert rows["0"]["macs"] == 8 * 8 * 4 * 3 * 9 and rows["0"]["param_bits"] == 32 * 108  # untouched
    assert (rows["3"]["weight_bits"], rows["3"]["input_bits"], rows["3"]["mac_kind"]) == (32, 32, "float")

    bwn = prune(small_net(), 0.5, weight_quantizer=BinaryWeight)
    rows = {r["name"]: r for r in summarize(bwn, (3, 8, 8))["layers"]}
    assert rows["3"]["param_bits"] == nnz * 1 + 32 * 6 + 32 * (6 + 1) + 32 * nnz + 32 * 6  # α per filter
    assert (rows["3"]["weight_bits"], rows["3"]["mac_kind"]) == (1, "float")
    assert "pruner" not in rows


# --- refusals --------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, match", [
    (dict(sparsity=1.0), r"sparsity must be a number in \[0, 1\)"),
    (dict(sparsity=-0.1), r"sparsity must be a number in \[0, 1\)"),
    (dict(sparsity="0.5"), r"sparsity must be a number"),
    (dict(sparsity=True), r"sparsity must be a number"),
    (dict(sparsity=0.5, start_epoch=3, end_epoch=2), "end_epoch 2 is before start_epoch 3"),
    (dict(sparsity=0.5, start_epoch=-1), "start_epoch must be a number >= 0"),
    (dict(sparsity=0.5, scope="net"), "scope must be one of 'layer', 'global'"),
    (dict(sparsity=0.5, every=0), "every must be an int >= 1"),
    (dict(sparsity=0.5, initial=0.6), "initial 0.6 is above sparsity 0.5"),
])
def test_bad_arguments_are_refused_and_the_model_left_alone(kwargs, match):
    model = small_net()
    with pytest.raises(ValueError, match=match):
        prune(model, **kwargs)
    assert not any(isinstance(m, PrunedConv2d) for m in model.modules())


def test_refusals_of_models_and_quantizers():
    with pytest.raises(ValueError, match="has 1 Conv2d; the first is never pruned"):
        prune(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4, 2)), 0.5)
    model = prune(small_net(), 0.5)
    with pytest.raises(ValueError, match="already pruned"):
        prune(model, 0.5)
    with pytest.raises(ValueError, match="quantized layers"):
        prune(compress.convert(small_net(), "bwn"), 0.5)
    for recipe in (TernaryWeight, lambda: LSQ(4), lambda: DorefaWeight(1)):
        net = small_net()
        with pytest.raises(ValueError, match="statistics over all weights"):
            prune(net, 0.5, weight_quantizer=recipe)
        assert not any(isinstance(m, PrunedConv2d) for m in net.modules())
    with pytest.raises(TypeError, match="callable returning a recipe"):
        prune(small_net(), 0.5, weight_quantizer="bwn")
    late = prune(small_net(), 0.5, start_epoch=1, end_epoch=3)
    with pytest.raises(ValueError, match="end_epoch 3 is step 12, but the run's last step is 11"):
        compress.before_step(late, 0, SPE, 12)
    with pytest.raises(ValueError, match="agp_sparsity: end_step 1 is before start_step 2"):
        agp_sparsity(0, 0.5, 2, 1)
    assert isinstance(model.pruner, MagnitudePruner)


def test_fixed_sparse_mask_trains_on_the_sparse_kernels_with_the_dense_results():
    """Once the mask is fixed and sparse enough, forward and both gradients come from the sparse
    kernels; they equal the dense masked conv's within float32 tolerance."""
    manual_seed(3)
    rng = np.random.default_rng(3)
    conv = nn.Conv2d(8, 16, 3, padding=1, bias=True)
    layer = PrunedConv2d.from_float(conv)
    layer.set_mask(rng.random(layer.weight.shape) > 0.9)  # 90 % pruned
    x = rng.standard_normal((4, 8, 10, 10)).astype(np.float32)
    assert layer.mask_fixed and layer.uses_sparse_kernels(x.shape)
    g = rng.standard_normal((4, 16, 10, 10)).astype(np.float32)
    xs = Tensor(x, requires_grad=True)
    ys = layer(xs)
    ys.backward(g)
    sparse = (ys.data, xs.grad, layer.weight.grad.copy(), layer.bias.grad.copy())
    layer.zero_grad()
    xd = Tensor(x, requires_grad=True)
    yd = F.conv2d(xd, layer.masked_weight(), layer.bias, 1, 1)
    yd.backward(g)
    for a, b in zip(sparse, (yd.data, xd.grad, layer.weight.grad, layer.bias.grad)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    assert np.all(sparse[2][layer.weight_mask == 0] == 0)
    layer.set_mask(np.ones(layer.weight.shape, bool))  # dense again: the dense path
    assert not layer.uses_sparse_kernels(x.shape)
