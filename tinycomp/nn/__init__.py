"""tinycomp.nn: Module, Parameter and layers, with PyTorch's names, layouts and state-dict keys."""
from . import init
from .containers import ModuleList, Sequential
from .fused import fusable, fusion, fusion_enabled
from .layers import BatchNorm1d, BatchNorm2d, Conv2d, Linear
from .loss import CrossEntropyLoss
from .module import Module
from .parameter import Parameter
from .shift import Shift
from .simple import (AdaptiveAvgPool2d, AvgPool2d, Dropout, Flatten, Hardtanh, Identity, LeakyReLU, MaxPool2d,
                     ReLU, Sigmoid, Tanh)
