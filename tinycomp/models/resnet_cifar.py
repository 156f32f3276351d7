"""CIFAR ResNets of He et al. (2016), section 4.2: ResNet-20/32/56 (6n + 2 layers, 16-32-64 channels).

Shortcuts where the shape changes (stride 2, more channels):
- ``shortcut="B"`` (default): a 1×1 convolution with stride 2 and BatchNorm (a projection).
  ResNet-20 then has 272,474 parameters (this is the recipe of the training results in the README).
- ``shortcut="A"``: parameter-free: subsample by 2 and pad the new channels with zeros
  (the paper's CIFAR choice; ResNet-20 has 269,722 parameters).
Identity shortcuts everywhere else. Layer names follow the usual PyTorch CIFAR code
(conv1, bn1, layer1.0.conv1, ..., layer1.0.shortcut.0, linear).
"""
import numpy as np

from .. import functional as F
from .. import nn
from ._width import scaled


class PadShortcut(nn.Module):
    """Option A: x[:, :, ::2, ::2] with zero channels added equally before and after."""

    def __init__(self, extra_channels):
        super().__init__()
        self.extra = extra_channels

    def forward(self, x):
        x = x[:, :, ::2, ::2]  # (N, C, H/2, W/2)
        lo = self.extra // 2
        return F.pad(x, ((0, 0), (lo, self.extra - lo), (0, 0), (0, 0)))


class BasicBlock(nn.Module):
    """conv3×3 → BN → ReLU → conv3×3 → BN, plus the shortcut, then ReLU."""

    def __init__(self, in_planes, planes, stride=1, shortcut="B"):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        if stride == 1 and in_planes == planes:
            self.shortcut = nn.Sequential()
        elif shortcut == "A":
            self.shortcut = PadShortcut(planes - in_planes)
        else:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(planes))

    def forward(self, x):
        if not nn.fusable(self.bn1, self.bn2):  # a replaced or watched BatchNorm: op by op (see nn.fused)
            out = self.bn1(self.conv1(x)).relu()
            out = self.bn2(self.conv2(out))
            return (out + self.shortcut(x)).relu()
        out = self.bn1(self.conv1(x), relu=True)
        out = self.bn2(self.conv2(out))
        return F.add_relu(out, self.shortcut(x))


class CifarResNet(nn.Module):
    def __init__(self, depth, num_classes=10, width=1.0, shortcut="B"):
        super().__init__()
        if (depth - 2) % 6 or depth < 8:
            raise ValueError(f"CifarResNet: depth must be 6n + 2 (20, 32, 56, ...), got {depth}")
        if shortcut not in ("A", "B"):
            raise ValueError(f"CifarResNet: shortcut must be 'A' or 'B', got {shortcut!r}")
        build_cifar_resnet(self, depth, num_classes, width,
                           lambda in_planes, planes, stride: BasicBlock(in_planes, planes, stride, shortcut))

    def forward(self, x):
        out = stem(self, x)
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)  # (N, C)
        return self.linear(out)


def stem(model, x):
    """stem_act(bn1(conv1(x))), BN and ReLU as one op where ``nn.fusable`` (stem_act may be replaced)."""
    if nn.fusable(model.bn1, model.stem_act):
        return model.bn1(model.conv1(x), relu=True)
    return model.stem_act(model.bn1(model.conv1(x)))


def build_cifar_resnet(model, depth, num_classes, width, make_block):
    """The layers of a CIFAR ResNet on ``model``: the 3x3 stem (conv1, bn1, stem_act), three stages of
    (depth - 2) / 6 blocks ``make_block(in_planes, planes, stride)`` at 16-32-64 channels times
    ``width`` (stride 2 entering stages 2 and 3), the classifier, and He et al.'s init of every conv.
    ``CifarResNet.forward`` runs them."""
    n = (depth - 2) // 6
    widths = [scaled(c, width) for c in (16, 32, 64)]
    model.conv1 = nn.Conv2d(3, widths[0], 3, padding=1, bias=False)
    model.bn1 = nn.BatchNorm2d(widths[0])
    model.stem_act = nn.ReLU()  # a module, so binary-activation conversions can replace it
    in_planes = widths[0]
    for i, planes in enumerate(widths):
        blocks = []
        for j in range(n):
            blocks.append(make_block(in_planes, planes, 2 if i > 0 and j == 0 else 1))
            in_planes = planes
        setattr(model, f"layer{i + 1}", nn.Sequential(*blocks))
    model.linear = nn.Linear(in_planes, num_classes)
    for m in model.modules():  # He et al.'s init for convolutions, as the usual CIFAR code does
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")


def resnet20(num_classes=10, width=1.0, shortcut="B"):
    return CifarResNet(20, num_classes, width, shortcut)


def resnet32(num_classes=10, width=1.0, shortcut="B"):
    return CifarResNet(32, num_classes, width, shortcut)


def resnet56(num_classes=10, width=1.0, shortcut="B"):
    return CifarResNet(56, num_classes, width, shortcut)


def count_parameters(model):
    return int(sum(np.prod(p.shape) for p in model.parameters()))
