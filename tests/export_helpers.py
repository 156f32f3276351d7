"""Models to export in tests: zoo ResNets converted to a method, with BatchNorms that are not the
identity (random affine parameters, running statistics calibrated on a batch, as training leaves them)."""
import numpy as np

import tinycomp
from tinycomp import compress, models, nn
from tinycomp.autograd import no_grad
from tinycomp.tensor import Tensor

NORMALIZE = {"mean": [0.49, 0.48, 0.45], "std": [0.25, 0.24, 0.26]}


def meta(name="resnet20", width=0.25, num_classes=10):
    return {"model": name, "width": width, "num_classes": num_classes, "normalize": NORMALIZE, "dataset": "cifar10"}


def images(n, seed=1):
    return np.random.default_rng(seed).standard_normal((n, 3, 32, 32)).astype(np.float32)


@no_grad()
def model(method, name="resnet20", width=0.25, seed=0, **options):
    """``name`` converted to ``method`` ("none" for float; ``options`` for ``compress.convert``) in
    eval mode, BatchNorm made non-trivial:
    gamma (a few negative) and beta random, running statistics those of one batch of random images."""
    tinycomp.manual_seed(seed)
    rng = np.random.default_rng(seed)
    m = models.get(name, width=width)
    if method != "none":
        compress.convert(m, method, **options)
    bns = [b for b in m.modules() if type(b) is nn.BatchNorm2d]
    for b in bns:
        n = b.num_features
        b.weight.data[...] = rng.uniform(0.5, 1.5, n) * rng.choice([-1.0, 1.0], n, p=[0.1, 0.9])
        b.bias.data[...] = rng.normal(0.0, 0.3, n)
        b.momentum = 1.0  # the next training-mode pass sets the running statistics to its batch's
    m.train()
    m(Tensor(images(64, seed + 100)))
    for b in bns:
        b.momentum = 0.1
    m.eval()
    return m


@no_grad()
def logits(m, x):
    return m(Tensor(x)).data
