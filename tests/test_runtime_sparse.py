"""tinycomp.runtime on pruned, SAL, thinned and shift networks: logits against the eval-mode training
graph (whole models over widths, sparsities and kept fractions; single layers over kernel sizes,
strides and paddings), the per-layer path rule, and the refusal of bad CSR / tap / shift entries."""
import json

import numpy as np
from export_helpers import NORMALIZE, images, logits, rows_close
from hypothesis import given, settings
from hypothesis import strategies as st
from structured_helpers import exported_structured, structured_model
from tinycomp_kernels.conv import conv2d_ref
from tinycomp_kernels.sparse_direct import direct_fits

from tinycomp import checkpoint, nn, runtime
from tinycomp import export as export_module
from tinycomp.compress.pruning import PrunedConv2d
from tinycomp.compress.recipes import BinaryWeight, SignWeight
from tinycomp.compress.sal import SALConv2d
from tinycomp.evaluate import model_of_checkpoint
from tinycomp.export import ExportError, export_checkpoint
from tinycomp.export_sparse import structured_entry
from tinycomp.runtime.format import FORMAT, Reader
from tinycomp.runtime.sal import SalConv
from tinycomp.runtime.sparse import SMALL_BATCH, SparseConv

METHODS = ["prune", "prune+bc", "prune+bwn", "sal", "sal+bc", "sal+bwn", "filter-prune", "filter-prune+bwn"]


def _exported(tmp_path, method, name="resnet20", width=0.25, **options):
    m, path = exported_structured(tmp_path, method, name, width, **options)
    return m, runtime.load(path)


@settings(max_examples=10)
@given(method=st.sampled_from(METHODS), width=st.sampled_from([0.2, 0.3, 0.45, 0.7]), seed=st.integers(0, 99),
       sparsity=st.floats(0.3, 0.98), temperature=st.sampled_from([0.5, 2.0, 4.0, 20.0]))
def test_runtime_logits_equal_the_training_graph(tmp_path_factory, method, width, seed, sparsity, temperature):
    """Channels 3..45 (none a multiple of 64), stride-1 and stride-2 layers, every SAL index form, and
    at T = 0.5 SAL layers with no pair kept."""
    options = {"sparsity": sparsity} if method.startswith("prune") else {"ratio": min(sparsity, 0.9)} \
        if method.startswith("filter") else {"temperature": temperature}
    m, rt = _exported(tmp_path_factory.mktemp("m"), method, width=width, seed=seed, **options)
    x = images(100, seed=seed)
    ref, out = logits(m, x), rt(x)
    assert out.dtype == np.float32 and out.shape == (100, 10)
    assert rows_close(out, ref).all(), (method, np.abs(out - ref).max())


def test_shiftresnets_agree_dense_binary_and_pruned(tmp_path):
    x = images(200, seed=4)
    for method, width in (("none", 0.25), ("bwn", 0.3), ("prune", 0.25)):
        m, rt = _exported(tmp_path, method, "shiftresnet20", width)
        ref, out = logits(m, x), rt(x)
        assert (out.argmax(axis=1) == ref.argmax(axis=1)).mean() >= 0.999
        assert rows_close(out, ref).all(), method
        assert [n for n in rt.op_names if n.startswith("layer1")] == ["layer1.0", "layer1.1", "layer1.2"]


def test_a_thinned_shiftresnet_survives_its_checkpoint_and_runs_exported(tmp_path):
    """Thinned expansion channels (and so thinned shifts) rebuilt from the checkpoint's record, as
    eval, summary and export rebuild them, then exported and run."""
    m = structured_model("filter-prune", "shiftresnet20", ratio=0.5)
    shifts = {n: s for n, s in m.named_modules() if isinstance(s, nn.Shift)}
    assert len(shifts) == 9 and all(s.channels < s.assignment for s in shifts.values())
    cfg = {"model": "shiftresnet20", "width": 0.25, "dataset": "cifar10", "method": "filter-prune", "ratio": 0.5}
    ckpt = tmp_path / "last.npz"
    checkpoint.save(ckpt, m.state_dict(), None, {"config": cfg, "num_classes": 10, "normalize": NORMALIZE,
                                                 "channel_counts": m.channel_counts})
    rebuilt, _ = model_of_checkpoint(ckpt)
    for name, shift in shifts.items():
        again = rebuilt.get_submodule(name)
        assert (again.channels, again.assignment) == (shift.channels, shift.assignment), name
        np.testing.assert_array_equal(again.shift_y, shift.shift_y)
        np.testing.assert_array_equal(again.shift_x, shift.shift_x)
    x = images(200, seed=5)
    ref = logits(m, x)
    np.testing.assert_array_equal(logits(rebuilt.eval(), x), ref)
    export_checkpoint(ckpt, tmp_path / "thinned.npz")
    out = runtime.load(tmp_path / "thinned.npz")(x)
    assert rows_close(out, ref).all(), np.abs(out - ref).max()
    assert (out.argmax(axis=1) == ref.argmax(axis=1)).mean() >= 0.999


# --- single layers: any kernel size, stride, padding ------------------------------------------------
def _layer(tmp_path, conv, bn=None):
    """The runtime layer of training layer ``conv`` (+ ``bn`` folded), through a one-layer file."""
    O = conv.out_channels
    s, t = (np.ones(O), np.zeros(O)) if bn is None else export_module._bn_fold(bn, O, "layer")
    pools = export_module._Pools()
    entry = structured_entry(pools, "layer", conv, s, t, ExportError)
    arrays = pools.entries()
    header = {"format": FORMAT, "entries": {name: a.size for name, a in arrays.items()}}
    path = tmp_path / "layer.npz"
    np.savez(path, header=np.frombuffer(json.dumps(header).encode(), np.uint8), **arrays)
    return (SparseConv if type(conv) is PrunedConv2d else SalConv)(Reader(path), entry, "layer"), s, t


RECIPES = [None, SignWeight, lambda: BinaryWeight(scale="filter")]


@settings(max_examples=30)
@given(data=st.data(), sal=st.booleans(), recipe=st.sampled_from(RECIPES), c=st.integers(1, 70), o=st.integers(1, 70),
       k=st.sampled_from([1, 3, 5]), stride=st.integers(1, 3), hw=st.integers(5, 17), seed=st.integers(0, 99))
def test_a_layer_equals_the_dense_conv_of_its_effective_weight(tmp_path_factory, data, sal, recipe, c, o, k, stride,
                                                                 hw, seed):
    k = max(k, 3) if sal else k
    padding = data.draw(st.integers(0, k // 2 + 1), label="padding")
    q = None if recipe is None else recipe()
    rng = np.random.default_rng(seed)
    if sal:
        conv = SALConv2d(c, o, k, stride, padding, bias=False, weight_quantizer=q)
        conv.temperature[...] = data.draw(st.sampled_from([1.0, 3.0, 20.0]), label="T")
    else:
        conv = PrunedConv2d(c, o, k, stride, padding, bias=True, weight_quantizer=q)
        conv.set_mask(rng.random(conv.weight.shape) < data.draw(st.floats(0.0, 1.0), label="density"))
    conv.weight.data[...] = rng.standard_normal(conv.weight.shape)
    bn = nn.BatchNorm2d(o)
    bn.running_mean[...], bn.running_var[...] = rng.normal(0, 1, o), rng.uniform(0.5, 2, o)
    bn.weight.data[...], bn.bias.data[...] = rng.uniform(-1.5, 1.5, o), rng.normal(0, 0.3, o)
    conv.eval(), bn.eval()
    layer, s, t = _layer(tmp_path_factory.mktemp("l"), conv, bn)
    w = conv.rounded_weight() if sal else conv.masked_weight().data
    x = rng.standard_normal((SMALL_BATCH + 2, c, hw, hw)).astype(np.float32)  # the direct path where it pays
    ref = conv2d_ref(x.astype(np.float64), w * s[:, None, None, None], stride, padding)
    ref += (t if conv.bias is None else s * conv.bias.data + t)[:, None, None]
    layer.input_hw = (hw, hw)
    np.testing.assert_allclose(layer(x), ref, rtol=1e-4, atol=1e-4 * max(1.0, np.abs(ref).max()))
    small = layer(np.ascontiguousarray(x[:SMALL_BATCH]))  # never the direct path: the tiles (or dense at 1x1)
    np.testing.assert_allclose(small, ref[:SMALL_BATCH], rtol=1e-4, atol=1e-4 * max(1.0, np.abs(ref).max()))
    assert layer.route((hw, hw), SMALL_BATCH) == ("dense" if k == 1 else "tiles")
    route = layer.route((hw, hw), SMALL_BATCH + 2)
    assert route in ("dense", "direct", "tiles") and (route == "direct") <= direct_fits(conv.weight.shape, stride,
                                                                                        padding, 1)
    assert layer.path == {"dense": "conv2d_forward[dense]", "tiles": "sparse_tiles"}.get(route, layer.path)


def test_the_path_rule_of_sal_and_pruned_layers(tmp_path, monkeypatch):
    """1x1 kernels: the dense conv of the kept weights; stride 1 and 'same' padding with more than
    SMALL_BATCH images where sparse_direct.direct_beats_tiles holds (ResNet-20's 16-channel layers at
    99 %): sparse_conv2d's direct path; everything else, strided layers, SAL's one tap per pair and
    95 % too: the kept-weight tiles."""
    from tinycomp.runtime import sparse as runtime_sparse

    calls = []
    real = runtime_sparse.sparse_conv2d
    monkeypatch.setattr(runtime_sparse, "sparse_conv2d", lambda x, *a, **k: calls.append(x.shape[0]) or real(x, *a, **k))
    direct = f"sparse_conv2d[direct] (sparse_tiles up to {SMALL_BATCH} images)"
    for method, options, takes_direct in (("sal", {}, False), ("prune", {"sparsity": 0.95}, False),
                                          ("prune", {"sparsity": 0.99}, True)):
        _, rt = _exported(tmp_path, method, width=1.0, **options)
        paths = {name: path for name, _, path in rt.layers()}
        assert paths["layer1.0.conv1"] == (direct if takes_direct else "sparse_tiles"), method  # 16 ch at 32x32
        assert paths["layer2.1.conv1"] == paths["layer3.2.conv2"] == "sparse_tiles", method  # 32 @ 16x16, 64 @ 8x8
        assert paths["layer2.0.conv1"] == paths["layer3.0.conv1"] == "sparse_tiles", method  # stride 2
        assert paths["conv1"] == "conv2d_forward", method
        assert paths["layer2.0.shortcut.0"] == ("conv2d_forward" if method == "sal" else "conv2d_forward[dense]")
        calls.clear()
        rt(images(SMALL_BATCH))
        assert calls == [], method  # small batches: never the direct path
        rt(images(SMALL_BATCH + 1))
        assert calls == ([SMALL_BATCH + 1] * 6 if takes_direct else []), method  # the six 16-channel layers
        assert "sparse_tiles" in rt.describe() and (direct in rt.describe()) == takes_direct


def test_small_and_large_batches_agree(tmp_path):
    """The direct path (large batches) and the tiles (small ones) give the same predictions."""
    for method, options in (("prune", {"sparsity": 0.9}), ("sal", {})):
        _, rt = _exported(tmp_path, method, width=0.25, **options)
        small, large = images(SMALL_BATCH), images(SMALL_BATCH + 1)
        np.testing.assert_allclose(rt(small), rt(large)[:SMALL_BATCH], rtol=1e-4, atol=1e-4)
