"""Blocks for binary activations: why a float ResNet block cannot just get a sign before each conv.

A float BasicBlock computes relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)). Every conv input
there is a ReLU output, and sign(v) = +1 for every v >= 0 (sign(0) = +1), so a sign in front of
those convs would see all +1 and carry no information. The binary-activation block (Bi-Real Net,
Liu et al., ECCV 2018) drops the ReLUs and puts a float identity shortcut around each binary conv:

    h   = bn1(conv1(sign(x))) + shortcut(x)       conv1: binary input, binary weights (stride s)
    out = bn2(conv2(sign(h))) + h                 conv2: binary input, binary weights

The order inside each branch is sign -> binary conv -> BatchNorm, and the sum stays float, so the
real-valued information flows through the shortcuts while every 3x3 conv is binary. The shortcut
is the block's own (identity, or the 1x1 projection + BatchNorm, which follows the method unless
kept float). The stem's ReLU goes too (its output feeds the first sign). The children keep their
names (conv1, bn1, conv2, bn2, shortcut), so the state-dict keys are the float model's.

Supported for XNOR: the zoo's ResNets (resnet20/32/56, resnet18/34) through this block, and the
VGGs, whose ReLUs become identities so that each BatchNorm output feeds the next layer's sign.
"""
from .. import nn
from ..models.resnet_cifar import BasicBlock, CifarResNet
from ..models.resnet18_34 import ResNet
from ..models.vgg import VGG


class BiRealBlock(nn.Module):
    """The binary-activation BasicBlock above, built from a float block's own children."""

    def __init__(self, block):
        super().__init__()
        self.conv1, self.bn1, self.conv2, self.bn2 = block.conv1, block.bn1, block.conv2, block.bn2
        self.shortcut = block.shortcut

    def forward(self, x):
        h = self.bn1(self.conv1(x)) + self.shortcut(x)  # conv1 signs its own input (its input_quantizer)
        return self.bn2(self.conv2(h)) + h


def binary_activation_models():
    return (CifarResNet, ResNet, VGG)


def to_binary_activation_blocks(model):
    """Rewire ``model`` in place for binary activations (see the module docstring)."""
    if isinstance(model, (CifarResNet, ResNet)):
        model.stem_act = nn.Identity()
        for name, module in list(model.named_modules()):
            if type(module) is BasicBlock:
                model.set_submodule(name, BiRealBlock(module))
    elif isinstance(model, VGG):
        for name, module in list(model.named_modules()):
            if type(module) is nn.ReLU:
                model.set_submodule(name, nn.Identity())
    else:
        raise ValueError(f"--method xnor: binary activations need a block order in which no ReLU "
                         f"feeds a sign; supported: the zoo's ResNets and VGGs, not {type(model).__name__}")
    return model
