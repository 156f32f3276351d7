"""ShiftResNet-20/32/56 for CIFAR (Wu et al., CVPR 2018; docs/methods.md, "Shift").

The CIFAR ResNet of ``resnet_cifar`` (16-32-64 channels, 3 stages of n blocks, depth 6n + 2) with
every basic block's two 3×3 convolutions replaced by one conv-shift-conv block, as in the authors'
code (github.com/alvinwan/shiftresnet-cifar):

    1×1 conv (C_in → ε·C_out) → BN → ReLU → shift (3×3 ShiftNet offsets)
    → 1×1 conv (→ C_out, stride s) → BN, plus the shortcut, then ReLU

ε is the expansion rate (``expansion``, default 6; the paper reports ε = 3 and ε = 9). The stride of
a stage's first block sits on the second 1×1 conv, after the shift; where the shape changes the
shortcut is a 1×1 convolution with that stride and BatchNorm (ResNet's option B). The stem (3×3
conv, BN, ReLU) and the classifier are ResNet-20's. ``width`` multiplies the 16-32-64 channels; the
middle channels are then round(ε · the scaled ones).

Parameters (width 1, 10 classes): ShiftResNet-20 ε=3: 95,642; ε=6: 186,746; ε=9: 277,850 (the
paper: 0.10 M for ε=3 and 0.28 M for ε=9; ResNet-20: 272,474). MACs per image at ε=3: 16.4 M
(the paper: 16.6 M FLOPs; ResNet-20 40.8 M here, 41.0 M there).
Layer names: conv1, bn1, layer1.0.conv1, layer1.0.shift, ..., layer2.0.shortcut.0, linear.
"""
from .. import functional as F, nn
from ..nn.shift import Shift
from ._width import scaled
from .resnet_cifar import CifarResNet, build_cifar_resnet


class ShiftBlock(nn.Module):
    """1×1 conv → BN → ReLU → shift → 1×1 conv (stride) → BN, plus the shortcut, then ReLU."""

    def __init__(self, in_planes, planes, stride=1, expansion=6):
        super().__init__()
        mid = scaled(planes, expansion)
        self.conv1 = nn.Conv2d(in_planes, mid, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.shift = Shift(mid, kernel_size=3)
        self.conv2 = nn.Conv2d(mid, planes, 1, stride=stride, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        if stride == 1 and in_planes == planes:
            self.shortcut = nn.Sequential()
        else:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(planes))

    def forward(self, x):
        if not nn.fusable(self.bn1, self.bn2):  # a replaced or watched BatchNorm: op by op (see nn.fused)
            out = self.bn1(self.conv1(x)).relu()
            out = self.bn2(self.conv2(self.shift(out)))
            return (out + self.shortcut(x)).relu()
        out = self.bn1(self.conv1(x), relu=True)  # BN + ReLU in one pass, as BasicBlock (equal bits)
        out = self.bn2(self.conv2(self.shift(out)))
        return F.add_relu(out, self.shortcut(x))


class ShiftResNet(nn.Module):
    def __init__(self, depth, num_classes=10, width=1.0, expansion=6):
        super().__init__()
        if (depth - 2) % 6 or depth < 8:
            raise ValueError(f"ShiftResNet: depth must be 6n + 2 (20, 32, 56, ...), got {depth}")
        if not expansion > 0:
            raise ValueError(f"ShiftResNet: expansion must be > 0, got {expansion!r}")
        self.expansion = expansion
        build_cifar_resnet(self, depth, num_classes, width,
                           lambda in_planes, planes, stride: ShiftBlock(in_planes, planes, stride, expansion))

    forward = CifarResNet.forward  # the same stem, stages, global average pool and classifier


def shiftresnet20(num_classes=10, width=1.0, expansion=6):
    return ShiftResNet(20, num_classes, width, expansion)


def shiftresnet32(num_classes=10, width=1.0, expansion=6):
    return ShiftResNet(32, num_classes, width, expansion)


def shiftresnet56(num_classes=10, width=1.0, expansion=6):
    return ShiftResNet(56, num_classes, width, expansion)
