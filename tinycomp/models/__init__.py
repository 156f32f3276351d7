"""tinycomp.models: CIFAR networks, each with a width multiplier.

    model = tinycomp.models.get("resnet20", num_classes=10, width=1.0)
"""
from .densenet import densenet121, densenet_cifar
from .mobilenetv2 import mobilenetv2
from .resnet_cifar import count_parameters, resnet20, resnet32, resnet56
from .resnet18_34 import resnet18, resnet34
from .shiftresnet import shiftresnet20, shiftresnet32, shiftresnet56
from .vgg import vgg_bc, vgg_small

_REGISTRY = {f.__name__: f for f in (resnet20, resnet32, resnet56, resnet18, resnet34, vgg_small, vgg_bc,
                                     mobilenetv2, densenet121, densenet_cifar, shiftresnet20, shiftresnet32,
                                     shiftresnet56)}


def names():
    return sorted(_REGISTRY)


def get(name, num_classes=10, width=1.0, **kwargs):
    """Build model ``name`` (see ``names()``) with ``num_classes`` outputs and channel ``width``."""
    if name not in _REGISTRY:
        raise ValueError(f"models.get: unknown model '{name}'; choose one of {', '.join(names())}")
    if not width > 0:
        raise ValueError(f"models.get: width must be > 0, got {width}")
    if num_classes < 1:
        raise ValueError(f"models.get: num_classes must be >= 1, got {num_classes}")
    return _REGISTRY[name](num_classes=num_classes, width=width, **kwargs)
