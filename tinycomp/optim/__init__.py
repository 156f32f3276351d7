"""tinycomp.optim: SGD, Adam, AdamW and learning-rate schedules."""
from .adam import Adam, AdamW
from .optimizer import Optimizer
from .schedule import CosineAnnealingLR, LinearWarmup, LRScheduler, MultiStepLR, OneCycleLR, StepLR
from .sgd import SGD
