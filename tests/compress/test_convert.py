"""convert(): every zoo model, the layers kept float, the float weights kept, refusals."""
import numpy as np
import pytest

from tinycomp import Tensor, compress, models, nn
from tinycomp.compress import QuantConv2d, QuantLinear
from tinycomp.compress.binary_blocks import BiRealBlock, binary_activation_models
from tinycomp.compress.convert import NONNEGATIVE_INPUT_MODELS
from tinycomp.compress.recipes import LSQ, PACT, BinaryWeight, DorefaActivation, SignActivation, SignWeight

WEIGHT_ONLY = ["bc", "bwn", "ternary", "w4a32", "w2a32"]
ALL_FOR_RESNET = WEIGHT_ONLY + ["xnor", "w4a4", "w2a2", "w1a2"]


def small(name):
    return models.get(name, num_classes=10, width=0.25)


def quantized_names(model):
    return [n for n, m in model.named_modules() if isinstance(m, (QuantConv2d, QuantLinear))]


@pytest.mark.parametrize("name", models.names())
@pytest.mark.parametrize("method", ["bwn", "w4a4", "xnor"])
def test_every_zoo_model_converts_and_runs(name, method):
    model = small(name)
    params_before = {n: p for n, p in model.named_parameters()}
    supported = {"bwn": True, "w4a4": isinstance(model, NONNEGATIVE_INPUT_MODELS),
                 "xnor": isinstance(model, binary_activation_models())}[method]
    if name in ("resnet20", "resnet18", "vgg_small", "densenet_cifar"):
        assert supported or method == "xnor" and name == "densenet_cifar"  # the zoo's main models are covered
    if not supported:
        with pytest.raises(ValueError, match=f"--method {method}|binary activations"):
            compress.convert(model, method)
        return
    compress.convert(model, method)
    after = dict(model.named_parameters())
    for n, p in params_before.items():  # the float (latent) weights are all still there, the same objects
        assert after[n] is p, n
    added = sorted(set(after) - set(params_before))
    assert all(".weight_quantizer." in n or ".input_quantizer." in n for n in added), added
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    assert type(model.get_submodule(convs[0])) is nn.Conv2d  # first conv kept float
    assert type(model.get_submodule(linears[-1])) is nn.Linear  # classifier kept float
    assert model.compression["float_layers"] == [convs[0], linears[-1]]
    assert len(quantized_names(model)) == len(convs) + len(linears) - 2
    x = Tensor(np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32))
    model.train()
    out = model(x)
    assert out.shape == (2, 10) and np.isfinite(out.data).all()
    out.sum().backward()
    assert [n for n, p in params_before.items() if p.grad is None] == []


@pytest.mark.parametrize("method", ALL_FOR_RESNET)
def test_float_checkpoint_loads_into_converted_resnet(method):
    float_model = small("resnet20")
    state = float_model.state_dict()
    model = compress.convert(small("resnet20"), method)
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert unexpected == []
    assert all("_quantizer." in k for k in missing), missing
    for k, v in state.items():
        np.testing.assert_array_equal(model.state_dict()[k], v)


def test_recipes_by_method():
    m = compress.convert(small("resnet20"), "bc")
    layer = m.layer1[0].conv1
    assert isinstance(layer.weight_quantizer, SignWeight) and layer.input_quantizer is None
    m = compress.convert(small("resnet20"), "xnor")
    layer = m.layer2[0].conv1
    assert isinstance(layer.weight_quantizer, BinaryWeight) and isinstance(layer.input_quantizer, SignActivation)
    assert isinstance(m.layer1[0], BiRealBlock) and isinstance(m.stem_act, nn.Identity)
    m = compress.convert(small("resnet20"), "w4a4", quantizer="pact")
    assert isinstance(m.layer1[0].conv1.input_quantizer, PACT)
    assert "layer1.0.conv1.input_quantizer.alpha" in m.state_dict()
    m = compress.convert(small("resnet20"), "w4a4", quantizer="lsq")
    q = m.layer1[0].conv1
    assert isinstance(q.weight_quantizer, LSQ) and q.weight_quantizer.signed
    assert isinstance(q.input_quantizer, LSQ) and not q.input_quantizer.signed
    m = compress.convert(small("resnet20"), "w2a2")
    assert isinstance(m.layer1[0].conv1.input_quantizer, DorefaActivation)


def test_keep_float_options():
    m = compress.convert(small("resnet20"), "bwn", keep_float=("first", "last", "shortcuts"))
    assert type(m.layer2[0].shortcut[0]) is nn.Conv2d
    m = compress.convert(small("resnet20"), "bwn", keep_float=())
    assert isinstance(m.conv1, QuantConv2d) and isinstance(m.linear, QuantLinear)
    assert isinstance(compress.convert(small("resnet20"), "bwn").layer2[0].shortcut[0], QuantConv2d)


def test_user_model_weight_only():
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.Flatten(),
                        nn.Linear(4 * 8 * 8, 8), nn.Linear(8, 2))
    compress.convert(net, "ternary")
    assert [type(m).__name__ for m in net] == ["Conv2d", "ReLU", "QuantConv2d", "Flatten", "QuantLinear", "Linear"]
    with pytest.raises(ValueError, match="ReLU outputs"):
        compress.convert(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 3), nn.Linear(2, 2)), "w4a4")


@pytest.mark.parametrize("method, kwargs, message", [
    ("w9a4", {}, "bits out of range"),
    ("w4a0", {}, "bits out of range"),
    ("bnn", {}, "unknown method 'bnn'"),
    ("w4a4", {"quantizer": "apot"}, "--quantizer"),
    ("bwn", {"quantizer": "lsq"}, "applies to w<k>a<m>"),
    ("w1a4", {"quantizer": "lsq"}, "at least 2 bits"),
    ("bwn", {"keep_float": ("first", "middle")}, "--keep-float"),
    ("bwn", {"stochastic": True}, "--method bc"),
    ("bc", {"act_scale": True}, "--method xnor"),
    ("w4a32", {"quantizer": "pact"}, "--quantizer pact quantizes activations"),
    ("w4a4", {"keep_float": ("last",)}, "keep 'first' float"),
])
def test_refusals(method, kwargs, message):
    with pytest.raises(ValueError, match=message):
        compress.convert(small("resnet20"), method, **kwargs)


def test_twice_is_refused():
    m = compress.convert(small("resnet20"), "bwn")
    with pytest.raises(ValueError, match="already converted"):
        compress.convert(m, "bc")


def test_recipes_follow_the_model_mode():
    model = small("resnet20").eval()
    compress.convert(model, "w2a2", quantizer="lsq")
    assert all(not m.training for m in model.modules())
    model(Tensor(np.ones((1, 3, 32, 32), np.float32)))
    assert not model.layer1[0].conv1.input_quantizer.initialized  # no step chosen on an evaluation batch


def test_float64_model_gets_float64_scales():
    net = nn.Sequential(nn.Conv2d(3, 4, 3, dtype=np.float64), nn.ReLU(), nn.Conv2d(4, 4, 3, dtype=np.float64))
    compress.convert(net, "w4a4", quantizer="pact", keep_float=("first",), assume_relu_inputs=True)
    assert net[2].input_quantizer.alpha.dtype == np.float64
    out = net(Tensor(np.ones((1, 3, 7, 7))))
    assert out.dtype == np.float64
