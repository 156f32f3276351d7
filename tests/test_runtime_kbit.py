"""tinycomp.runtime on k-bit and ternary models: logits against the eval-mode training graph, the
bit-serial accumulators against the product of the quantized tensors, single layers over shapes, and
the per-layer path choice."""
import json

import numpy as np
import pytest
from export_helpers import exported, images, logits, path_rules, rows_close
from hypothesis import given, settings, strategies as st
from tinycomp_kernels.bitserial_conv import patch_sums_ref
from tinycomp_kernels.conv import conv2d_ref

from tinycomp import nn, runtime
from tinycomp.autograd import no_grad
from tinycomp.compress import recipes
from tinycomp.compress.layers import QuantConv2d, QuantLinear
from tinycomp.export import _conv, _linear, _Pools
from tinycomp.runtime import paths
from tinycomp.runtime.format import FORMAT
from tinycomp.runtime.kbit import KbitConv, KbitLinear
from tinycomp.tensor import Tensor


@pytest.fixture(autouse=True, scope="module")
def _kernel_path_table():
    """Every layer on its bit-serial / binary-weight kernel where the kernels' table puts it, whatever
    CPU runs the tests (the float table sends them all to the float conv; tested below)."""
    with path_rules("kernels"):
        yield


METHODS = [("w2a2", {}), ("w4a4", {}), ("w1a2", {}), ("w2a2", {"quantizer": "pact"}), ("w3a4", {"quantizer": "pact"}),
           ("w2a2", {"quantizer": "lsq"}), ("w4a3", {"quantizer": "lsq"}), ("ternary", {}), ("w4a32", {}),
           ("w2a32", {"quantizer": "lsq"}), ("w2a2", {"keep_float": ("first",)})]  # the last: a k-bit classifier


def _kbit_layers(rt):
    return [layer for op in rt.ops for layer in op[1:] if isinstance(layer, KbitConv)]


@pytest.mark.parametrize("method, options", METHODS)
def test_logits_agree_with_the_training_graph(tmp_path, method, options):
    m, rt = exported(tmp_path, method, **options)
    x = images(400)
    ref, out = logits(m, x), rt(x)
    assert (out.argmax(axis=1) == ref.argmax(axis=1)).all()
    assert rows_close(out, ref).all()
    kinds = {kind for _, kind, _ in rt.layers()}
    assert kinds == {"float", "kbit_weight" if method.endswith("a32") or method == "ternary" else "kbit"}


@pytest.mark.parametrize("cpu", ["kernels", "float"])  # bit-serial kernels, or the float conv of the codes
@pytest.mark.parametrize("method, options", [("w4a4", {}), ("w2a2", {"quantizer": "pact"}), ("w3a4", {"quantizer": "lsq"}),
                                             ("w2a2", {"keep_float": ("first",)})])
def test_every_kbit_layer_meets_the_training_graphs_input_bit_for_bit(tmp_path, monkeypatch, cpu, method, options):
    """With the BatchNorms unfolded and the products exact, each k-bit layer's input in the runtime
    equals the eval-mode graph's bit for bit, so no code can flip at a rounding boundary (folding
    BatchNorm moved a few values in a hundred images to the neighbouring code)."""
    with path_rules(cpu):
        m, rt = exported(tmp_path, method, **options)
    x = images(200, seed=3)
    names = {id(mod): name for name, mod in m.named_modules()}
    seen_training, seen_runtime = {}, {}
    training_forward = {cls: cls.forward for cls in (QuantConv2d, QuantLinear)}
    runtime_call = {cls: cls.__call__ for cls in (KbitConv, KbitLinear)}

    def watch_training(cls):
        def forward(self, v):
            seen_training[names[id(self)]] = v.data.copy()
            return training_forward[cls](self, v)
        return forward

    def watch_runtime(cls):
        def call(self, v, **fused):
            seen_runtime[self.name] = v.copy()
            return runtime_call[cls](self, v, **fused)
        return call

    for cls in training_forward:
        monkeypatch.setattr(cls, "forward", watch_training(cls))
    for cls in runtime_call:
        monkeypatch.setattr(cls, "__call__", watch_runtime(cls))
    ref, out = logits(m, x), rt(x)
    kbit = [name for name, kind, _ in rt.layers() if kind == "kbit"]
    assert kbit and set(kbit) <= set(seen_runtime)
    for name in kbit:
        assert np.array_equal(seen_runtime[name], seen_training[name]), name
    assert (out.argmax(axis=1) == ref.argmax(axis=1)).all()
    if not options.get("keep_float"):
        np.testing.assert_array_equal(out, ref)  # the float classifier too: the same ops, in the same order


@pytest.mark.parametrize("method, quantizer", [("w2a2", "dorefa"), ("w1a3", "dorefa"), ("w3a2", "pact"),
                                               ("w4a4", "lsq")])
def test_accumulators_equal_the_product_of_the_quantized_tensors(tmp_path, method, quantizer):
    """Each k-bit layer's int32 accumulators are exactly conv2d(input codes, weight codes), with the
    input codes those of the training layer's own quantized input; the training layer's float
    product is s_x·s_w[o]·(a·I - z·S) for the file's affine map."""
    m, rt = exported(tmp_path, method, quantizer=quantizer)
    training = dict(m.named_modules())
    rng = np.random.default_rng(4)
    layers = _kbit_layers(rt)
    assert len(layers) == 20
    for layer in layers:
        O, C, KH, KW = layer.shape
        t = training[layer.name]
        x = np.maximum(rng.standard_normal((2, C, 9, 9)) * 2, 0).astype(np.float32)  # ReLU outputs, zeros included
        with no_grad():
            xq = t.input_quantizer(Tensor(x)).data.astype(np.float64)
            wq = t.quantized_weight().data.astype(np.float64)
        q = layer.quantizer
        s_x = np.float64(1 / q.levels) if q.step is None else np.float64(q.step)
        cx = np.rint(xq / s_x)
        np.testing.assert_allclose(xq / s_x, cx, atol=1e-3)  # the training input is on the code grid
        I = layer.integer_part(x)
        assert I.dtype == np.int32
        np.testing.assert_array_equal(I, conv2d_ref(cx, layer.codes.astype(np.float64), layer.stride, layer.padding),
                                      err_msg=layer.name)
        a, z = layer.affine
        grid = a * layer.codes.astype(np.float64) - z  # (O, C, KH, KW)
        top = np.abs(grid).reshape(O, -1).max(axis=1)
        s_w = np.abs(wq).reshape(O, -1).max(axis=1) / np.maximum(top, 1)  # a filter of zero codes has s_w 0
        np.testing.assert_allclose(wq, s_w[:, None, None, None] * grid, rtol=1e-6, atol=1e-7)
        S = patch_sums_ref(cx.astype(np.int64), KH, KW, layer.stride, layer.padding)[:, None]
        product = conv2d_ref(xq, wq, layer.stride, layer.padding)
        np.testing.assert_allclose(product, s_x * s_w[None, :, None, None] * (a * I - z * S), rtol=1e-6,
                                   atol=1e-6 * np.abs(product).max(), err_msg=layer.name)


@st.composite
def _layer_configs(draw):
    kh = draw(st.sampled_from([1, 3]))
    return dict(N=draw(st.integers(1, 3)), C=draw(st.integers(1, 70)), O=draw(st.integers(1, 20)), K=kh,
                stride=draw(st.sampled_from([1, 2])), padding=draw(st.integers(0, kh // 2)),
                H=draw(st.integers(kh, 11)), W=draw(st.integers(kh, 11)),
                wbits=draw(st.integers(1, 4)), abits=draw(st.sampled_from([1, 2, 3, 8, 32])),
                quantizer=draw(st.sampled_from(["dorefa", "pact", "lsq", "ternary"])), seed=draw(st.integers(0, 99)))


@no_grad()
def _single_layer_file(path, cfg):
    """A file of one quantized conv (+ BatchNorm), the pooling and a float linear, as export writes them."""
    rng = np.random.default_rng(cfg["seed"])
    conv = nn.Conv2d(cfg["C"], cfg["O"], cfg["K"], cfg["stride"], cfg["padding"], bias=False)
    quantizer, wbits, abits = cfg["quantizer"], cfg["wbits"], cfg["abits"]
    wq = {"lsq": recipes.LSQ(max(2, wbits)), "ternary": recipes.TernaryWeight()}.get(quantizer) or \
        recipes.DorefaWeight(wbits)
    if quantizer == "lsq":
        wq.step.data[...] = np.abs(conv.weight.data).mean() * rng.uniform(0.5, 2)
    iq = None if abits == 32 else {"pact": recipes.PACT(abits, alpha=rng.uniform(0.5, 3)),
                                   "lsq": recipes.LSQ(abits, signed=False)}.get(quantizer, recipes.DorefaActivation(abits))
    if isinstance(iq, recipes.LSQ):
        iq.step.data[...] = rng.uniform(0.05, 0.5)
    layer = QuantConv2d.from_float(conv, wq, iq)
    bn = nn.BatchNorm2d(cfg["O"])
    bn.weight.data[...], bn.bias.data[...] = rng.uniform(-1.5, 1.5, cfg["O"]), rng.normal(0, 0.3, cfg["O"])
    bn.running_mean[...], bn.running_var[...] = rng.normal(0, 0.3, cfg["O"]), rng.uniform(0.5, 2, cfg["O"])
    layer.eval()
    bn.eval()
    pools = _Pools()
    ops = [{"op": "conv", "layer": _conv(pools, "conv1", layer, bn), "relu": False}, {"op": "global_avg_pool"},
           {"op": "linear", "layer": _linear(pools, "linear", nn.Linear(cfg["O"], 3))}]
    floats, words = pools.arrays()
    header = {"format": FORMAT, "method": "test", "model": "test", "width": 1.0, "num_classes": 3, "dataset": None,
              "normalize": {"mean": [0, 0, 0], "std": [1, 1, 1]}, "input_shape": [cfg["C"], cfg["H"], cfg["W"]],
              "entries": {"float32": int(floats.size), "bits": int(words.size)}, "ops": ops}
    np.savez(path, header=np.frombuffer(json.dumps(header).encode(), np.uint8), float32=floats, bits=words)
    return lambda x: bn(layer(Tensor(x))).data


@settings(max_examples=30)
@given(cfg=_layer_configs())
def test_single_layers_over_shapes_strides_and_bits(tmp_path_factory, cfg):
    path = tmp_path_factory.mktemp("layer") / "layer.npz"
    reference = _single_layer_file(path, cfg)
    layer = runtime.load(path).ops[0][1]
    assert layer.kind == ("kbit_weight" if cfg["abits"] == 32 else "kbit")
    x = np.maximum(np.random.default_rng(cfg["seed"]).standard_normal((cfg["N"], cfg["C"], cfg["H"], cfg["W"])), 0)
    x = x.astype(np.float32)
    ref, out = reference(x), layer(x)
    assert out.shape == ref.shape and out.dtype == np.float32
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4 * max(1.0, np.abs(ref).max()))


# --- path choice ---------------------------------------------------------------------------------
def test_the_binary_weight_rule_follows_the_measured_shapes():
    for C in (16, 32, 64):  # ResNet-20's stages: the float conv measured faster
        assert paths.binary_weight_path((C, C, 3, 3)) == "conv2d_forward"
        assert paths.binary_weight_path((2 * C, C, 1, 1)) == "conv2d_forward"
    for C in (128, 256, 512):  # ResNet-18's conv3..conv5: the binary-weight kernel
        assert paths.binary_weight_path((C, C, 3, 3)) == "binary_weight_conv2d"
    assert paths.binary_weight_path((8, 127, 3, 3)) == "conv2d_forward"


def test_the_float_table_sends_binary_weight_and_kbit_layers_to_the_float_conv():
    with path_rules("float"):  # measured slower on every ResNet shape but on Zen 4 (runtime/paths.py)
        for shape in ((512, 512, 3, 3), (16, 16, 3, 3), (256, 128, 1, 1)):
            assert paths.binary_weight_path(shape) == "conv2d_forward"
            assert paths.kbit_path(shape, 2, False, 2) == "conv2d_forward"
    assert paths.binary_weight_path((512, 512, 3, 3)) == "binary_weight_conv2d"  # the pinned kernels' table again


def test_the_host_table_follows_the_cpus_measured():
    kernels, floating = paths.RULES["kernels"], paths.RULES["float"]
    zen4 = paths.host_table("znver4", {"+avx512f", "+avx512vpopcntdq"})
    assert zen4["binary_weight_min_reduction"] == kernels["binary_weight_min_reduction"]
    assert zen4["bitserial_min_reduction"] is None  # bit-serial has won on no CPU yet
    for cpu, features in (("znver4", {"-avx512f"}), ("znver3", {"+avx2"}), ("rocketlake", {"+avx512f", "+avx512vpopcntdq"}),
                          ("icelake-server", {"+avx512f"}), ("generic", set())):
        assert paths.host_table(cpu, features) == floating, cpu


def test_binary_weight_layers_take_both_paths_and_agree(tmp_path):
    """ResNet-18 at width 0.25 (16..128 channels): its last stage's 3x3 convs (C·9 >= 1152) run the
    binary-weight kernel, the others and the 1x1 projections the float conv; logits as in training."""
    m, rt = exported(tmp_path, "bwn", "resnet18", 0.25)
    taken = {name: path for name, kind, path in rt.layers() if kind == "binary_weight"}
    assert taken["layer4.1.conv1"] == taken["layer4.0.conv2"] == "binary_weight_conv2d"
    assert taken["layer3.1.conv1"] == taken["layer4.0.conv1"] == taken["layer4.0.shortcut.0"] == "conv2d_forward"
    assert "binary_weight_conv2d" in rt.describe() and "layer1.0.conv1" in rt.describe()
    x = images(32, seed=6)
    assert rows_close(rt(x), logits(m, x)).all()


def test_the_kbit_rule_is_bitserial_where_exact_and_retunable(monkeypatch):
    assert paths.kbit_path((64, 64, 3, 3), 2, False, 2) == "bitserial_conv2d"
    assert paths.kbit_path((64, 64, 3, 3), 8, True, 8) == "bitserial_conv2d"
    too_long = (4, 40000, 1, 1)  # 40000 · 255 · 255 >= 2^31: int32 accumulators would not be exact
    assert not paths.bitserial_exact(too_long, 8, False, 8) and paths.kbit_path(too_long, 8, False, 8) == "conv2d_forward"
    monkeypatch.setitem(paths.ACTIVE, "max_plane_pairs", 4)
    assert paths.kbit_path((16, 16, 3, 3), 2, False, 2) == "bitserial_conv2d"
    assert paths.kbit_path((16, 16, 3, 3), 4, False, 4) == "conv2d_forward"


@pytest.mark.parametrize("quantizer", ["dorefa", "lsq"])
def test_the_kbit_float_path_agrees_with_the_bitserial_path(tmp_path, monkeypatch, quantizer):
    m, bitserial = exported(tmp_path, "w3a2", quantizer=quantizer)
    monkeypatch.setitem(paths.ACTIVE, "bitserial_min_reduction", None)  # no layer qualifies: the float conv everywhere
    floating = runtime.load(tmp_path / "resnet20-w3a2.npz")
    assert {p for _, k, p in bitserial.layers() if k == "kbit"} == {"bitserial_conv2d"}
    assert {p for _, k, p in floating.layers() if k == "kbit"} == {"conv2d_forward"}
    assert "conv2d_forward" in floating.describe() and "bitserial_conv2d" not in floating.describe()
    x = images(100, seed=8)
    assert rows_close(floating(x), bitserial(x)).mean() >= 0.97
    assert (floating(x).argmax(axis=1) == logits(m, x).argmax(axis=1)).mean() >= 0.99
    layer = _kbit_layers(floating)[0]
    v = np.abs(x[:2, :layer.shape[1]])
    np.testing.assert_array_equal(layer.integer_part(v), _kbit_layers(bitserial)[0].integer_part(v))
