"""The summary's storage bits and MACs by precision, against hand counts."""
import pytest

from tinycomp import compress, models, nn
from tinycomp.summary import format_summary, summarize


def small_net():
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.Conv2d(4, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2))


# On a 3x8x8 input: conv1 108 weights, 6,912 MACs; bn1 8 params; conv2 288 weights, 18,432 MACs;
# bn2 16 params; linear 16 + 2 params, 16 MACs. 438 parameters in all.
FLOAT_BITS = {"conv1": 108 * 32, "bn1": 8 * 32, "bn2": 16 * 32, "linear": 18 * 32}


@pytest.mark.parametrize("method, conv2_bits, kind", [
    ("none", 288 * 32, "float"),
    ("bc", 288, "float"),                 # 1 bit a weight, no scale
    ("bwn", 288 + 8 * 32, "float"),       # 1 bit a weight + one 32-bit alpha per filter
    ("ternary", 2 * 288 + 8 * 32, "float"),
    ("w4a32", 4 * 288 + 32, "float"),     # 4 bits a weight + one scale per layer
    ("w4a4", 4 * 288 + 32, "kbit"),
])
def test_bits_by_hand(method, conv2_bits, kind):
    net = compress.convert(small_net(), method, assume_relu_inputs=True)
    s = summarize(net, input_shape=(3, 8, 8))
    t = s["total"]
    assert t["params"] == 438
    assert t["param_bits"] == sum(FLOAT_BITS.values()) + conv2_bits
    assert t["param_megabits"] == t["param_bits"] / 1e6 and t["param_bytes"] == -(-t["param_bits"] // 8)
    assert t["macs"] == 6912 + 18432 + 16
    assert t[f"{kind}_macs"] == (18432 if kind != "float" else t["macs"])
    assert t["float_macs"] + t["binary_macs"] + t["kbit_macs"] == t["macs"]
    row = {r["name"]: r for r in s["layers"]}["3"]
    assert row["param_bits"] == conv2_bits and row["mac_kind"] == kind


def test_pact_and_lsq_scales_are_counted():
    s = summarize(compress.convert(small_net(), "w4a4", quantizer="pact", assume_relu_inputs=True), input_shape=(3, 8, 8))
    assert s["total"]["param_bits"] == sum(FLOAT_BITS.values()) + 4 * 288 + 32 + 32  # + alpha
    assert s["total"]["params"] == 439
    s = summarize(compress.convert(small_net(), "w4a4", quantizer="lsq", assume_relu_inputs=True), input_shape=(3, 8, 8))
    assert s["total"]["param_bits"] == sum(FLOAT_BITS.values()) + 4 * 288 + 32 + 32  # two steps, no extra scale


def test_resnet20_float_total_is_unchanged():
    s = summarize(models.get("resnet20"))
    assert s["total"]["params"] == 272_474 and s["total"]["param_bits"] == 272_474 * 32
    assert round(s["total"]["param_megabits"], 2) == 8.72 and s["method"] == "none"


def test_xnor_resnet20_binary_macs():
    model = compress.convert(models.get("resnet20"), "xnor")
    s = summarize(model)
    rows = {r["name"]: r for r in s["layers"]}
    assert rows["conv1"]["mac_kind"] == "float" and rows["linear"]["mac_kind"] == "float"
    assert rows["layer1.0.conv1"]["mac_kind"] == "binary"
    binary = sum(r["macs"] for r in s["layers"] if r["type"] == "QuantConv2d")
    assert s["total"]["binary_macs"] == binary and binary > 0.95 * s["total"]["macs"]
    assert s["total"]["param_megabits"] < 8.72 / 20
    text = format_summary(s, "resnet20")
    assert "method: xnor (kept float: conv1, linear)" in text and "1/1" in text


def test_pruned_and_sal_models_count_deployed_parameters():
    from tinycomp.compress.run_config import summary_model

    pruned = summary_model({"model": "resnet20", "width": 1.0, "method": "prune", "sparsity": 0.9}, 10)
    kept = sum(int(m.weight_mask.sum()) for m in pruned.modules() if hasattr(m, "weight_mask"))
    dense_rest = sum(p.data.size for n, p in pruned.named_parameters()
                     if not any(n == f"{name}.weight" for name, m in pruned.named_modules() if hasattr(m, "weight_mask")))
    assert summarize(pruned)["total"]["params"] == kept + dense_rest
    model = compress.sal(models.get("resnet20"))
    layers = [m for m in model.modules() if isinstance(m, compress.SALConv2d)]
    in_sal = {id(p) for m in layers for p in m.parameters()}
    rest = sum(p.data.size for p in model.parameters() if id(p) not in in_sal)
    # one weight per kept pair; the attention (training only) is not counted
    assert summarize(model)["total"]["params"] == sum(m.kept_pairs() for m in layers) + rest


def test_no_weight_decay_on_quantizer_scales_and_attention():
    from tinycomp.train import parameter_groups

    for model in (compress.sal(models.get("resnet20", width=0.25)),
                  compress.convert(models.get("resnet20", width=0.25), "w4a4", quantizer="lsq")):
        groups = parameter_groups(model, 5e-4, False)
        free = {id(p) for p in groups[1]["params"]} if len(groups) > 1 else set()
        expected = compress.sal_parameters(model) + compress.quantizer_parameters(model)
        assert expected and all(id(p) in free for p in expected) and groups[1]["weight_decay"] == 0
        assert len(groups[0]["params"]) + len(free) == len(list(model.parameters()))
