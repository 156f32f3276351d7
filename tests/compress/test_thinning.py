"""Structured pruning with thinning: the thinned model equals the original with the removed channels
cut out (filters and BatchNorm entries zeroed), on every zoo shape of dependency (residual adds with
projection and zero-padding shortcuts, concatenations, depthwise convs, shifts, flatten into a Linear);
ratios, target MACs, ranking, the channel_counts record and thin_to_shapes, refusals."""
import json
import math

import numpy as np
import pytest

from tinycomp import Tensor, checkpoint, compress, manual_seed, models, nn, no_grad
from tinycomp import functional as F
from tinycomp.compress.dependency import trace_channels
from tinycomp.compress.thinning import (channel_scores, filter_prune, filters_to_remove, thin, thin_to_shapes)
from tinycomp.optim import SGD
from tinycomp.summary import summarize

ZOO = [("resnet20", {}), ("resnet20", {"shortcut": "A"}), ("resnet18", {}), ("mobilenetv2", {}),
       ("densenet_cifar", {}), ("vgg_small", {}), ("shiftresnet20", {"expansion": 3})]
IDS = ["resnet20-B", "resnet20-A", "resnet18", "mobilenetv2", "densenet_cifar", "vgg_small", "shiftresnet20"]


def build(name, kw, seed=0):
    """A small zoo model with random BatchNorm statistics and affine parameters, so that a channel
    left half-removed (its BN shift still there) would show in the outputs. Seeded: two builds are equal."""
    manual_seed(seed)
    model = models.get(name, num_classes=10, width=0.25, **kw)
    rng = np.random.default_rng(seed)
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            n = m.num_features
            m.running_mean[...] = rng.normal(0, 0.5, n)
            m.running_var[...] = rng.uniform(0.5, 2.0, n)
            m.weight.data[...] = rng.uniform(0.5, 1.5, n) * rng.choice([-1, 1], n)
            m.bias.data[...] = rng.normal(0, 0.5, n)
    return model.eval()


def images(n=2, seed=1):
    return Tensor(np.random.default_rng(seed).standard_normal((n, 3, 32, 32)).astype(np.float32))


@no_grad()
def run(model, x):
    return model.eval()(x).data


def cut_out(model, record):
    """The reference: ``model`` with every channel the record removed zeroed at its source (the filter
    rows and bias of a Conv2d / Linear, gamma and beta of a BatchNorm, so its running statistics add
    nothing). The layers reading those channels keep their full width, and a Shift its full offsets
    (it moves the zeroed channels as zeros)."""
    for name, e in record["layers"].items():
        m = model.get_submodule(name)
        if isinstance(m, nn.Shift):
            continue
        gone = sorted(set(range(e["original_out"])) - set(e["kept_out"]))
        for p in (m.weight, m.bias):
            if p is not None:
                p.data[gone] = 0
    return model


@pytest.mark.parametrize("name, kw", ZOO, ids=IDS)
def test_thinned_model_equals_cut_out_model_and_trains(name, kw):
    model = build(name, kw)
    x = images()
    original = run(model, x)
    before = summarize(model)["total"]
    filter_prune(model, ratio=0.5)
    record = json.loads(json.dumps(model.channel_counts))  # JSON-serialisable, and used as stored
    reference = cut_out(build(name, kw), record)
    thinned = run(model, x)
    expected = run(reference, x)
    np.testing.assert_allclose(thinned, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    assert not np.allclose(thinned, original, atol=1e-3)  # something was removed

    after = summarize(model)["total"]  # plain layers with their new shapes: the summary just counts them
    assert after["params"] < 0.5 * before["params"] and after["macs"] < 0.5 * before["macs"]
    assert after["macs"] == record["history"][-1]["macs_after"]
    assert before["macs"] == record["history"][-1]["macs_before"]
    assert all(type(m) in (nn.Conv2d, nn.Linear, nn.BatchNorm2d, nn.BatchNorm1d, nn.Shift)
               for n in record["layers"] for m in [model.get_submodule(n)])

    model.train()  # one training step on the thinned model
    opt = SGD(model.parameters(), lr=0.01, momentum=0.9)
    w0 = {n: p.data.copy() for n, p in model.named_parameters()}
    loss = F.cross_entropy(model(images(4, seed=2)), np.array([0, 1, 2, 3]))
    loss.backward()
    assert np.isfinite(loss.item())
    assert [n for n, p in model.named_parameters() if p.grad is None or not np.isfinite(p.grad).all()] == []
    opt.step()
    assert any(not np.array_equal(w0[n], p.data) for n, p in model.named_parameters())


@pytest.mark.parametrize("name, kw", ZOO, ids=IDS)
def test_state_dict_reloads_into_fresh_model_resized_by_the_record(name, kw):
    model = build(name, kw)
    filter_prune(model, ratio=0.3, criterion="l2")
    record = json.loads(json.dumps(model.channel_counts))
    fresh = models.get(name, num_classes=10, width=0.25, **kw)
    with pytest.raises(ValueError, match="problems"):  # the unresized model does not take it
        fresh.load_state_dict(model.state_dict())
    assert thin_to_shapes(fresh, record) is fresh
    fresh.load_state_dict(model.state_dict())  # strict: every key, every shape
    np.testing.assert_array_equal(run(fresh, images()), run(model, images()))
    assert fresh.channel_counts == record


def test_record_survives_a_checkpoint_and_pruning_twice_composes(tmp_path):
    model = build("resnet20", {})
    filter_prune(model, ratio=0.25)
    filter_prune(model, ratio=0.5, criterion="bn")
    record = model.channel_counts
    assert [h["ratio"] for h in record["history"]] == [0.25, 0.5]
    first = record["layers"]["layer1.0.conv1"]
    assert first["original_out"] == 4 and first["out"] == len(first["kept_out"]) < 4
    path = tmp_path / "pruned.npz"
    checkpoint.save(path, model.state_dict(), meta={"channel_counts": record})
    ckpt = checkpoint.load(path)
    fresh = thin_to_shapes(models.get("resnet20", width=0.25), ckpt["meta"]["channel_counts"])
    fresh.load_state_dict(ckpt["model"])
    np.testing.assert_array_equal(run(fresh, images()), run(model, images()))
    # kept_out indexes the original layer: the twice-pruned filters are the original's rows
    original = build("resnet20", {})
    e = record["layers"]["layer2.0.conv1"]
    np.testing.assert_array_equal(fresh.layer2[0].conv1.weight.data,
                                  original.layer2[0].conv1.weight.data[e["kept_out"]][:, e["kept_in"]])


@pytest.mark.parametrize("name, kw, ratio", [("resnet20", {}, 0.3), ("resnet20", {"shortcut": "A"}, 0.6),
                                             ("mobilenetv2", {}, 0.3), ("densenet_cifar", {}, 0.4),
                                             ("shiftresnet20", {"expansion": 3}, 0.4)])
def test_ratio_reached_in_every_group(name, kw, ratio):
    model = build(name, kw)
    groups = [(g.layers, g.n_prunable, len(g.classes)) for g in trace_channels(model).groups]
    filter_prune(model, ratio=ratio)
    after = {tuple(g.layers): (g.n_prunable, len(g.classes)) for g in trace_channels(model).groups}
    assert len(after) == len(groups)
    for layers, n, size in groups:
        removed = math.floor(ratio * n)
        assert after[tuple(layers)] == (n - removed, size - removed), layers
    if kw.get("shortcut") == "A":  # the zero-padded channels are fixed: stage 3 keeps 3/4 of its 16
        assert model.layer3[0].conv2.out_channels == 16 - math.floor(ratio * 4)


@pytest.mark.parametrize("criterion", ["l1", "l2", "bn"])
def test_ranking_keeps_the_strongest_filters(criterion):
    model = build("vgg_small", {})
    conv, bn = model.features[3], model.features[4]  # one group: conv 16 -> 16, its BN
    w = conv.weight.data.reshape(16, -1).astype(np.float64)
    score = {"l1": np.abs(w).sum(1), "l2": np.sqrt((w * w).sum(1)), "bn": np.abs(bn.weight.data)}[criterion]
    filter_prune(model, ratio=0.25, criterion=criterion)
    kept = model.channel_counts["layers"]["features.3"]["kept_out"]
    assert kept == sorted(np.argsort(-score, kind="stable")[:12].tolist())
    assert model.channel_counts["layers"]["features.4"]["kept_out"] == kept


def test_residual_stage_scores_sum_over_its_filters():
    model = build("resnet20", {})
    graph = trace_channels(model)
    stage = graph.groups[0]
    assert stage.layers == ["conv1", "layer1.0.conv2", "layer1.1.conv2", "layer1.2.conv2"]
    expected = sum(np.abs(model.get_submodule(n).weight.data).reshape(4, -1).sum(1) for n in stage.layers)
    np.testing.assert_allclose(channel_scores(graph, "l1")[stage.classes], expected, rtol=1e-6)


@pytest.mark.parametrize("name, target", [("resnet20", 0.5), ("mobilenetv2", 0.3), ("vgg_small", 0.7),
                                          ("shiftresnet20", 0.3)])
def test_target_macs_reached_with_the_least_ratio(name, target):
    model = build(name, {})
    total = summarize(model)["total"]["macs"]
    graph = trace_channels(model)
    scores = channel_scores(graph, "l1")
    filter_prune(model, target_macs=target)
    entry = model.channel_counts["history"][-1]
    assert summarize(model)["total"]["macs"] <= target * total
    assert graph.macs(filters_to_remove(graph, scores, entry["ratio"] - 1e-6)) > target * total


def test_the_channels_a_shift_moves_are_prunable_with_their_expansion():
    model = build("shiftresnet20", {"expansion": 3})
    graph = trace_channels(model)
    conv1, bn1, shift, conv2 = (graph.layers[f"layer2.1.{n}"] for n in ("conv1", "bn1", "shift", "conv2"))
    assert shift.kind == "shift" and shift.calls == []  # channelwise, no MACs of its own
    for classes in (shift.in_classes, bn1.out_classes, conv2.in_classes):
        np.testing.assert_array_equal(classes, conv1.out_classes)  # one class per expansion channel
    assert graph.prunable()[shift.out_classes].all()
    group = next(g for g in graph.groups if "layer2.1.conv1" in g.layers)
    assert group.layers == ["layer2.1.conv1"] and group.n_prunable == len(group.classes) == 24  # 3 x 8
    thin(model, {"layer2.1.shift": [0, 5]})  # named by the shift: its expansion channels go with it
    assert (model.layer2[1].conv1.out_channels, model.layer2[1].conv2.in_channels) == (22, 22)
    np.testing.assert_array_equal(model.layer2[1].shift.kept, np.delete(np.arange(24), [0, 5]))


def test_a_thinned_shift_keeps_the_offsets_of_its_kept_channels():
    model = build("shiftresnet20", {"expansion": 3})
    full = model.layer3[0].shift
    assert full.channels == 48
    filter_prune(model, ratio=0.5)
    shift = model.layer3[0].shift
    kept = model.channel_counts["layers"]["layer3.0.shift"]["kept_out"]
    assert len(kept) == shift.channels == 24 and shift.assignment == 48
    np.testing.assert_array_equal(shift.shift_y, full.shift_y[kept])
    np.testing.assert_array_equal(shift.shift_x, full.shift_x[kept])
    assert not np.array_equal(shift.shift_x, nn.Shift(24).shift_x)  # ShiftNet's assignment for 24 differs
    filter_prune(model, ratio=0.5)  # again: the record and the offsets still index the original
    twice = model.layer3[0].shift
    kept = model.channel_counts["layers"]["layer3.0.shift"]["kept_out"]
    np.testing.assert_array_equal(twice.kept, kept)
    np.testing.assert_array_equal(twice.shift_x, full.shift_x[kept])
    fresh = thin_to_shapes(models.get("shiftresnet20", num_classes=10, width=0.25, expansion=3),
                           json.loads(json.dumps(model.channel_counts)))
    np.testing.assert_array_equal(fresh.layer3[0].shift.shift_y, twice.shift_y)
    np.testing.assert_array_equal(fresh.layer3[0].shift.shift_x, twice.shift_x)


def test_target_macs_one_keeps_everything_and_an_unreachable_target_is_refused():
    model = build("resnet20", {})
    filter_prune(model, target_macs=1.0)
    assert model.channel_counts["layers"] == {} and model.channel_counts["history"][0]["ratio"] == 0.0
    model = build("resnet20", {})
    state = model.state_dict()
    with pytest.raises(ValueError, match="cannot be reached"):
        filter_prune(model, target_macs=1e-4)
    assert not hasattr(model, "channel_counts")
    assert all(np.array_equal(v, state[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("kwargs, match", [
    (dict(ratio=-0.1), "ratio must be in"), (dict(ratio=1.0), "ratio must be in"), (dict(ratio=1.5), "ratio"),
    (dict(ratio=float("nan")), "ratio"), (dict(ratio=True), "ratio"), (dict(ratio="0.5"), "ratio"),
    (dict(criterion="l3"), "criterion must be one of l1, l2, bn"), (dict(target_macs=0), "target_macs must be"),
    (dict(target_macs=-0.5), "target_macs"), (dict(target_macs=1.01), "target_macs"),
    (dict(target_macs=float("nan")), "target_macs"), (dict(ratio=0.5, target_macs=0.5), "not both"),
])
def test_bad_arguments_are_refused(kwargs, match):
    model = build("resnet20", {})
    state = model.state_dict()
    with pytest.raises(ValueError, match=match):
        filter_prune(model, **kwargs)
    assert not hasattr(model, "channel_counts")
    assert all(np.array_equal(v, state[k]) for k, v in model.state_dict().items())


def test_compressed_models_are_refused():
    model = compress.convert(models.get("resnet20", width=0.25), "bwn")
    with pytest.raises(ValueError, match="prune the float model, then convert"):
        filter_prune(model)


def test_fixed_channels_are_refused_by_thin_naming_why():
    model = build("resnet20", {"shortcut": "A"})
    with pytest.raises(ValueError, match="zero padding"):  # stage 2's channel 0 meets a padded zero channel
        thin(model, {"layer2.0.conv2": [0]})
    with pytest.raises(ValueError, match="model output"):
        thin(model, {"linear": [3]})
    with pytest.raises(ValueError, match="not one of them"):
        thin(model, {"layer1.0.conv1": [4]})
    thin(model, {"layer2.0.conv2": [2]})  # channel 2 of stage 2 is stage 1's channel 0 passed through
    assert model.conv1.out_channels == 3 and model.layer3[2].conv2.out_channels == 15


def test_thin_to_shapes_refuses_a_record_that_does_not_fit():
    model = build("resnet20", {})
    filter_prune(model, ratio=0.5)
    record = json.loads(json.dumps(model.channel_counts))
    wider = models.get("resnet20", width=0.5)
    with pytest.raises(ValueError, match=r"problems: .*pruned from"):
        thin_to_shapes(wider, record)
    assert wider.conv1.out_channels == 8  # left unchanged
    with pytest.raises(ValueError, match="already thinned"):
        thin_to_shapes(model, record)
    with pytest.raises(ValueError, match="not a channel_counts record"):
        thin_to_shapes(models.get("resnet20", width=0.25), {"layers": {}})
    bad = json.loads(json.dumps(record))
    bad["layers"]["layer1.0.conv1"]["kept_out"] = [3, 1]
    with pytest.raises(ValueError, match="layer1.0.conv1: kept_out not valid"):
        thin_to_shapes(models.get("resnet20", width=0.25), bad)
    half = json.loads(json.dumps(record))  # a record missing a layer leaves a mismatch: refused, unchanged
    del half["layers"]["layer1.0.bn1"]
    fresh = models.get("resnet20", width=0.25)
    with pytest.raises(ValueError, match="does not run"):
        thin_to_shapes(fresh, half)
    assert fresh.layer1[0].conv1.out_channels == 4 and not getattr(fresh, "channel_counts", None)


class Odd(nn.Module):
    """Ops outside the traced rules and a layer used twice: a shared conv applied to two branches,
    channel slicing, a per-channel parameter outside any layer, a reduction over channels."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.shared = nn.Conv2d(8, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.side = nn.Conv2d(8, 6, 1)
        self.scale = nn.Parameter(np.ones((1, 6, 1, 1), np.float32))
        self.head = nn.Conv2d(8, 6, 1)
        self.fc = nn.Linear(6 + 6 + 4, 5)

    def forward(self, x):
        h = self.stem(x).relu()
        a = self.bn(self.shared(h)).relu()
        b = self.shared(a) + a  # the shared conv's input channels see both h's and a's
        gate = self.side(b) * self.scale  # a per-channel parameter: side's channels fixed
        c = self.head(b)
        c = c * c.mean(axis=1, keepdims=True)  # a reduction over the channels: head's channels fixed
        tail = b[:, :4]  # channel slicing: b's channels fixed
        feats = F.concatenate([gate, c, tail], axis=1)
        return self.fc(F.adaptive_avg_pool2d(feats, 1).flatten(1))


def test_unknown_ops_fix_channels_and_thinning_stays_exact():
    model = Odd()
    graph = trace_channels(model, (3, 8, 8))
    prunable = {tuple(g.layers): g.n_prunable for g in graph.groups}
    # b = shared(a) + a ties shared's outputs to a = bn(shared(h)), and b[:, :4] fixes all of them;
    # shared's inputs join h (stem) and a, so stem is fixed too
    assert prunable == {("stem", "shared"): 0, ("side",): 0, ("head",): 0, ("fc",): 0}
    reasons = set(graph.fixed_reason)
    assert {"op GetItem", "Mul with a per-channel constant or parameter", "op Mean"} <= reasons
    filter_prune(model, ratio=0.5, input_shape=(3, 8, 8))
    assert model.channel_counts["layers"] == {}


class TwoBranch(nn.Module):
    """A conv used twice on two branches whose sum feeds a Linear: the shared conv's input slots
    join both branches, so they are pruned as one."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(3, 8, 3, padding=1)
        self.shared = nn.Conv2d(8, 6, 3, padding=1)
        self.fc = nn.Linear(6 * 4 * 4, 3)

    def forward(self, x):
        y = self.shared(self.a(x).relu()) + self.shared(self.b(x).relu())
        return self.fc(F.max_pool2d(y, 2).flatten(1))


def test_a_layer_called_twice_joins_its_inputs_and_flatten_follows_channels():
    model = TwoBranch()
    graph = trace_channels(model, (3, 8, 8))
    assert [(g.layers, g.n_prunable) for g in graph.groups] == [(["a", "b"], 8), (["shared"], 6), (["fc"], 0)]
    x = Tensor(np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32))
    reference = TwoBranch()
    reference.load_state_dict(model.state_dict())
    filter_prune(model, ratio=0.5, input_shape=(3, 8, 8))
    assert (model.a.out_channels, model.shared.in_channels, model.fc.in_features) == (4, 4, 3 * 16)
    cut_out(reference, model.channel_counts)
    np.testing.assert_allclose(run(model, x), run(reference, x), rtol=1e-5, atol=1e-5)


def test_trace_works_under_no_grad_and_leaves_the_model_as_it_was():
    model = build("mobilenetv2", {}).train()
    state = model.state_dict()
    with no_grad():
        graph = trace_channels(model)
    assert model.training and all(m.training for m in model.modules())
    assert all(np.array_equal(v, state[k]) for k, v in model.state_dict().items())  # BN stats untouched
    assert all("forward" not in m.__dict__ for m in model.modules())
    block = graph.layers["layers.1.conv2"]  # a depthwise conv: its channels are its input's
    assert block.kind == "depthwise"
    np.testing.assert_array_equal(block.in_classes, block.out_classes)
    np.testing.assert_array_equal(block.in_classes, graph.layers["layers.1.conv1"].out_classes)


class HardCoded(nn.Module):
    """A forward that states a channel count itself: what the trace cannot see."""

    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(3, 8, 3, padding=1), nn.Linear(8, 2)

    def forward(self, x):
        h = self.conv(x).relu().reshape(x.shape[0], 8, -1)  # (N, 8, H·W) only while conv has 8 channels
        return self.fc(h.mean(axis=2))


def test_a_thinned_model_that_does_not_run_is_refused_and_left_unchanged():
    model = HardCoded()
    state = model.state_dict()
    with pytest.raises(ValueError, match="does not run"):
        filter_prune(model, ratio=0.5, input_shape=(3, 8, 8))
    assert model.conv.out_channels == 8 and not hasattr(model, "channel_counts")
    assert all(np.array_equal(v, state[k]) for k, v in model.state_dict().items())


def test_a_thinned_model_converts_like_any_other():
    model = filter_prune(build("resnet20", {}), ratio=0.5)
    record = model.channel_counts
    compress.convert(model, "bwn")
    assert model.compression["float_layers"] == ["conv1", "linear"] and model.channel_counts is record
    out = model.train()(images())
    assert out.shape == (2, 10) and np.isfinite(out.data).all()
