"""The ShiftResNet zoo models: structure of a block, parameter counts against the paper's, width and
expansion options, a training step."""
import numpy as np
import pytest

from tinycomp import Tensor, functional as F, models, nn, optim
from tinycomp.models import count_parameters
from tinycomp.models.shiftresnet import ShiftBlock
from tinycomp.nn.shift import Shift
from tinycomp.summary import summarize


@pytest.mark.parametrize("name,blocks", [("shiftresnet20", 3), ("shiftresnet32", 5), ("shiftresnet56", 9)])
def test_zoo_builds_with_width_and_classes(name, blocks):
    model = models.get(name, 100, 0.5)
    stage_blocks = [len(getattr(model, f"layer{i}")) for i in (1, 2, 3)]
    assert stage_blocks == [blocks] * 3
    out = model(Tensor(np.zeros((2, 3, 32, 32), np.float32)))
    assert out.shape == (2, 100)
    assert model.linear.in_features == 32  # 64 channels at width 0.5


def test_block_is_conv_shift_conv():
    block = ShiftBlock(16, 32, stride=2, expansion=3)
    assert block.conv1.kernel_size == (1, 1) and block.conv1.out_channels == 96  # 3 x the block's 32
    assert isinstance(block.shift, Shift) and block.shift.channels == 96 and block.shift.kernel_size == 3
    assert block.conv2.kernel_size == (1, 1) and block.conv2.stride == (2, 2)  # the stride after the shift
    assert block.shortcut[0].kernel_size == (1, 1) and block.shortcut[0].stride == (2, 2)
    assert len(ShiftBlock(32, 32).shortcut) == 0  # identity
    # the forward, written out
    x = Tensor(np.random.default_rng(0).standard_normal((2, 16, 8, 8)).astype(np.float32))
    block.eval()
    h = block.bn1(block.conv1(x)).relu()
    h = F.shift2d(h, block.shift.shift_y, block.shift.shift_x)
    expected = (block.bn2(block.conv2(h)) + block.shortcut(x)).relu()
    np.testing.assert_allclose(block(x).data, expected.data, rtol=1e-6, atol=1e-6)


def test_only_the_stem_is_spatial():
    model = models.get("shiftresnet20")
    spatial = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and m.kernel_size != (1, 1)]
    assert spatial == ["conv1"]
    assert sum(isinstance(m, Shift) for m in model.modules()) == 9


def test_parameter_counts_against_the_paper():
    # Wu et al. (CIFAR-10): ShiftResNet-20 0.10 M parameters with expansion 3, 0.28 M with 9;
    # ResNet-20 0.27 M. tinycomp: 95,642 / 277,850 (and 186,746 at the default expansion 6).
    counts = {e: count_parameters(models.get("shiftresnet20", expansion=e)) for e in (3, 6, 9)}
    assert counts == {3: 95_642, 6: 186_746, 9: 277_850}
    assert abs(counts[3] / 0.10e6 - 1) < 0.05 and abs(counts[9] / 0.28e6 - 1) < 0.05
    assert count_parameters(models.get("resnet20")) == 272_474
    # the paper's FLOPs: 16.6 M for ShiftResNet-20-3c against 41.0 M for ResNet-20; shifts cost none
    summary = summarize(models.get("shiftresnet20", expansion=3))
    assert summary["total"]["macs"] == 16_433_792
    assert all(r["macs"] == 0 and r["params"] == 0 for r in summary["layers"] if r["type"] == "Shift")
    assert count_parameters(models.get("shiftresnet56", expansion=3)) > 2.9 * counts[3]


def test_width_scales_parameters():
    full = count_parameters(models.get("shiftresnet20"))
    half = count_parameters(models.get("shiftresnet20", width=0.5))
    assert 0.2 < half / full < 0.3  # about width squared


def test_refusals():
    with pytest.raises(ValueError, match="ShiftResNet: expansion must be > 0"):
        models.get("shiftresnet20", expansion=0)
    from tinycomp.models.shiftresnet import ShiftResNet
    with pytest.raises(ValueError, match="ShiftResNet: depth must be 6n \\+ 2"):
        ShiftResNet(21)


def test_a_training_step_lowers_the_loss_on_its_batch():
    rng = np.random.default_rng(1)
    model = models.get("shiftresnet20", num_classes=10, width=0.25, expansion=3)
    x = Tensor(rng.standard_normal((8, 3, 16, 16)).astype(np.float32))
    y = rng.integers(0, 10, 8)
    opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.train()
    losses = []
    for _ in range(3):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        assert all(p.grad is not None for p in model.parameters())
        opt.step()
        losses.append(float(loss.data))
    assert np.isfinite(losses).all() and losses[-1] < losses[0]
