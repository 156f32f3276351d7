"""A small VGG / AlexNet-like CIFAR network (the BinaryConnect paper's "VGG-like" shape):
2×(128C3) - MP2 - 2×(256C3) - MP2 - 2×(512C3) - MP2 - 1024FC - 1024FC - classes, each conv and
hidden FC followed by BatchNorm and ReLU (``vgg_bc``). ``vgg_small`` halves every convolution width
(64-128-256) and keeps a single 512-unit hidden FC, for quick CPU runs."""
from .. import nn
from ._width import scaled


def _features(plan, width):
    layers, c = [], 3
    for v in plan:
        if v == "M":
            layers.append(nn.MaxPool2d(2))
        else:
            v = scaled(v, width)
            layers += [nn.Conv2d(c, v, 3, padding=1, bias=False), nn.BatchNorm2d(v), nn.ReLU()]
            c = v
    return nn.Sequential(*layers), c


class VGG(nn.Module):
    def __init__(self, plan, hidden, num_classes=10, width=1.0):
        super().__init__()
        self.features, c = _features(plan, width)
        layers, f = [nn.Flatten()], c * 4 * 4  # three 2×2 pools: 32 -> 4
        for h in hidden:
            h = scaled(h, width)
            layers += [nn.Linear(f, h, bias=False), nn.BatchNorm1d(h), nn.ReLU()]
            f = h
        layers.append(nn.Linear(f, num_classes))
        self.classifier = nn.Sequential(*layers)

    def forward(self, x):
        return self.classifier(self.features(x))


def vgg_bc(num_classes=10, width=1.0):
    return VGG([128, 128, "M", 256, 256, "M", 512, 512, "M"], [1024, 1024], num_classes, width)


def vgg_small(num_classes=10, width=1.0):
    return VGG([64, 64, "M", 128, 128, "M", 256, 256, "M"], [512], num_classes, width)
