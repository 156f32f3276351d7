"""The PyTorch models of the benchmarks' PyTorch sides (torch_resnet20.py, torch_infer.py): CIFAR
ResNets with tinycomp's layer names (conv1, bn1, layer<i>.<j>.{conv1,bn1,conv2,bn2,shortcut}, linear),
so that tinycomp's float state dict loads by name. PyTorch is optional, never a dependency."""
import torch.nn as tnn
import torch.nn.functional as TF

# (channels per stage, blocks per stage) of tinycomp's zoo models
SHAPES = {"resnet20": ((16, 32, 64), 3), "resnet18": ((64, 128, 256, 512), 2)}


class Block(tnn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = tnn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = tnn.BatchNorm2d(cout)
        self.conv2 = tnn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = tnn.BatchNorm2d(cout)
        self.shortcut = tnn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = tnn.Sequential(tnn.Conv2d(cin, cout, 1, stride, bias=False), tnn.BatchNorm2d(cout))

    def forward(self, x):
        out = TF.relu(self.bn1(self.conv1(x)))
        return TF.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class CifarResNet(tnn.Module):
    def __init__(self, widths, blocks, num_classes=10):
        super().__init__()
        self.conv1 = tnn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
        self.bn1 = tnn.BatchNorm2d(widths[0])
        cin = widths[0]
        for i, c in enumerate(widths):
            stage = []
            for j in range(blocks):
                stage.append(Block(cin, c, 2 if i and not j else 1))
                cin = c
            setattr(self, f"layer{i + 1}", tnn.Sequential(*stage))
        self.stages = len(widths)
        self.linear = tnn.Linear(cin, num_classes)

    def forward(self, x):
        out = TF.relu(self.bn1(self.conv1(x)))
        for i in range(self.stages):
            out = getattr(self, f"layer{i + 1}")(out)
        return self.linear(TF.adaptive_avg_pool2d(out, 1).flatten(1))


def resnet(name, num_classes=10):
    widths, blocks = SHAPES[name]
    return CifarResNet(widths, blocks, num_classes)
