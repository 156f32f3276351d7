"""DenseNet-BC (Huang et al. 2017), CIFAR variant: a 3×3 stem with 2k channels; dense blocks of
bottleneck layers (BN → ReLU → 1×1 conv to 4k → BN → ReLU → 3×3 conv to k, output concatenated to
the input); transitions (BN → ReLU → 1×1 conv compressing by 0.5 → 2×2 average pool).
``densenet121``: blocks (6, 12, 24, 16), growth k = 32 (the seed talk's table);
``densenet_cifar``: the same blocks with k = 12, a lighter CPU-friendly variant."""
import math

from .. import functional as F
from .. import nn
from ._width import scaled


class Bottleneck(nn.Module):
    def __init__(self, in_planes, growth):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, 4 * growth, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(4 * growth)
        self.conv2 = nn.Conv2d(4 * growth, growth, 3, padding=1, bias=False)

    def forward(self, x):
        out = self.conv1(self.bn1(x).relu())
        out = self.conv2(self.bn2(out).relu())
        return F.concatenate([out, x], axis=1)  # (N, growth + C, H, W)


class Transition(nn.Module):
    def __init__(self, in_planes, out_planes):
        super().__init__()
        self.bn = nn.BatchNorm2d(in_planes)
        self.conv = nn.Conv2d(in_planes, out_planes, 1, bias=False)

    def forward(self, x):
        return F.avg_pool2d(self.conv(self.bn(x).relu()), 2)


class DenseNet(nn.Module):
    def __init__(self, blocks, growth=32, reduction=0.5, num_classes=10, width=1.0):
        super().__init__()
        growth = scaled(growth, width)
        c = 2 * growth
        self.conv1 = nn.Conv2d(3, c, 3, padding=1, bias=False)
        for i, n in enumerate(blocks):
            layers = []
            for _ in range(n):
                layers.append(Bottleneck(c, growth))
                c += growth
            setattr(self, f"dense{i + 1}", nn.Sequential(*layers))
            if i < len(blocks) - 1:
                out = int(math.floor(c * reduction))
                setattr(self, f"trans{i + 1}", Transition(c, out))
                c = out
        self.n_blocks = len(blocks)
        self.bn = nn.BatchNorm2d(c)
        self.linear = nn.Linear(c, num_classes)

    def forward(self, x):
        out = self.conv1(x)
        for i in range(1, self.n_blocks + 1):
            out = getattr(self, f"dense{i}")(out)
            if i < self.n_blocks:
                out = getattr(self, f"trans{i}")(out)
        out = F.adaptive_avg_pool2d(self.bn(out).relu(), 1).flatten(1)
        return self.linear(out)


def densenet121(num_classes=10, width=1.0):
    return DenseNet([6, 12, 24, 16], growth=32, num_classes=num_classes, width=width)


def densenet_cifar(num_classes=10, width=1.0):
    return DenseNet([6, 12, 24, 16], growth=12, num_classes=num_classes, width=width)
