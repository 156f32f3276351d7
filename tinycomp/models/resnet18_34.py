"""ResNet-18 and ResNet-34, CIFAR variants (as in the common CIFAR code): a 3×3 stem with 64 channels,
no max-pool, four stages of BasicBlocks (64-128-256-512, strides 1-2-2-2), projection shortcuts
(1×1 conv + BN) where the shape changes, global average pool, linear classifier."""
from .. import functional as F
from .. import nn
from ._width import scaled
from .resnet_cifar import BasicBlock, stem


class ResNet(nn.Module):
    def __init__(self, blocks_per_stage, num_classes=10, width=1.0):
        super().__init__()
        widths = [scaled(c, width) for c in (64, 128, 256, 512)]
        self.conv1 = nn.Conv2d(3, widths[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.stem_act = nn.ReLU()  # a module, so binary-activation conversions can replace it
        in_planes = widths[0]
        for i, (planes, n) in enumerate(zip(widths, blocks_per_stage)):
            blocks = []
            for j in range(n):
                blocks.append(BasicBlock(in_planes, planes, 2 if i > 0 and j == 0 else 1, shortcut="B"))
                in_planes = planes
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.linear = nn.Linear(in_planes, num_classes)

    def forward(self, x):
        out = stem(self, x)
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.linear(F.adaptive_avg_pool2d(out, 1).flatten(1))


def resnet18(num_classes=10, width=1.0):
    return ResNet([2, 2, 2, 2], num_classes, width)


def resnet34(num_classes=10, width=1.0):
    return ResNet([3, 4, 6, 3], num_classes, width)
