"""MobileNetV2 (Sandler et al. 2018), CIFAR variant: the first convolution and the second stage use
stride 1 instead of 2 (32×32 inputs), as in the common CIFAR code. Inverted residual block:
1×1 expand (t×) → BN → ReLU6 → 3×3 depthwise → BN → ReLU6 → 1×1 project → BN (+ input when the
shape is unchanged; a 1×1 conv + BN shortcut when stride is 1 but the channels change)."""
from .. import functional as F
from .. import nn
from ._width import scaled

# (expansion t, output channels c, repeats n, first stride s)
CFG = [(1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]


def relu6(x):
    return F.hardtanh(x, 0.0, 6.0)


class InvertedResidual(nn.Module):
    def __init__(self, in_planes, out_planes, expansion, stride):
        super().__init__()
        self.stride = stride
        planes = expansion * in_planes
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, groups=planes, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.shortcut = nn.Sequential()
        if stride == 1 and in_planes != out_planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, out_planes, 1, bias=False), nn.BatchNorm2d(out_planes))

    def forward(self, x):
        out = relu6(self.bn1(self.conv1(x)))
        out = relu6(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return out + self.shortcut(x) if self.stride == 1 else out


class MobileNetV2(nn.Module):
    def __init__(self, num_classes=10, width=1.0):
        super().__init__()
        c = scaled(32, width)
        self.conv1 = nn.Conv2d(3, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        blocks = []
        for t, out, n, s in CFG:
            out = scaled(out, width)
            for i in range(n):
                blocks.append(InvertedResidual(c, out, t, s if i == 0 else 1))
                c = out
        self.layers = nn.Sequential(*blocks)
        last = scaled(1280, width)
        self.conv2 = nn.Conv2d(c, last, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(last)
        self.linear = nn.Linear(last, num_classes)

    def forward(self, x):
        out = relu6(self.bn1(self.conv1(x)))
        out = relu6(self.bn2(self.conv2(self.layers(out))))
        return self.linear(F.adaptive_avg_pool2d(out, 1).flatten(1))


def mobilenetv2(num_classes=10, width=1.0):
    return MobileNetV2(num_classes, width)
