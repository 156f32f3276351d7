"""Models to export in tests: zoo ResNets converted to a method, with BatchNorms that are not the
identity (random affine parameters, running statistics calibrated on a batch, as training leaves them);
exported and loaded, compared, read back, and loaded in a child process."""
import contextlib
import json
import os
import subprocess
import sys

import numpy as np

import tinycomp
from tinycomp import compress, models, nn, runtime
from tinycomp.autograd import no_grad
from tinycomp.tensor import Tensor

@contextlib.contextmanager
def path_rules(cpu):
    """The runtime's path table ``cpu`` ("kernels" or "float", ``runtime.paths.RULES``) in force
    instead of the host's, so that a test covers the same kernels on every CPU."""
    from tinycomp.runtime import paths

    saved = dict(paths.ACTIVE)
    paths.ACTIVE.update(paths.RULES[cpu])
    try:
        yield
    finally:
        paths.ACTIVE.clear()
        paths.ACTIVE.update(saved)


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
    m = models.get(name, width=width)
    if method != "none":
        compress.convert(m, method, **options)
    return calibrated(m, seed)


@no_grad()
def calibrated(m, seed=0):
    """``m`` with non-trivial BatchNorms (see ``model``), in eval mode."""
    rng = np.random.default_rng(seed)
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


def exported(tmp_path, method, name="resnet20", width=0.25, **options):
    """(the training model, its exported file loaded by the runtime): ``model(...)`` exported to tmp_path."""
    from tinycomp.export import export

    m = model(method, name, width, **options)
    path = tmp_path / f"{name}-{method}.npz"
    export(m, path, meta(name, width))
    return m, runtime.load(path)


def rows_close(out, ref, rtol=1e-4):
    """Per image: every logit within rtol of that image's largest |logit| (BC's ±1 weights make logits large)."""
    scale = np.abs(ref).max(axis=1, keepdims=True)
    return np.all(np.abs(out - ref) <= rtol * scale + 1e-5, axis=1)


def read_export(path):
    """(header dict, {entry: array}) of an exported file, read plainly."""
    with np.load(path, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    return json.loads(arrays["header"].tobytes().decode("utf-8")), arrays


def file_and_summary_bytes(tmp_path, method, **options):
    """(file bytes, the summary's parameter bytes, path) of ResNet-20 at width 1 (the sizes that
    deploy) converted to ``method`` and exported."""
    from tinycomp.export import export
    from tinycomp.summary import summarize

    m = models.get("resnet20")
    compress.convert(m, method, **options)
    m.eval()
    path = tmp_path / "m.npz"
    export(m, path, meta(width=1.0))
    return os.path.getsize(path), summarize(m)["total"]["param_bytes"], path


def assert_refused(bad):
    """Every file of ``bad`` ({name: (path, words)}) is refused by runtime.load with an error naming
    the file and containing the words."""
    import pytest

    for name, (path, words) in bad.items():
        with pytest.raises(runtime.FormatError) as info:
            runtime.load(path)
        assert str(path) in str(info.value) and words in str(info.value), (name, str(info.value))


def assert_refused_in_fresh_process(paths):
    """Each file is loaded in one child process, which must print a FormatError for every one: no
    crash (segfault, kernel assertion) hides behind the refusals."""
    script = ("import sys\nfrom tinycomp import runtime\nfor p in sys.argv[1:]:\n"
              "    try:\n        runtime.load(p)\n        print('LOADED', p)\n"
              "    except runtime.FormatError as e:\n        print('REFUSED', p)\n")
    r = subprocess.run([sys.executable, "-c", script, *map(str, paths)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("REFUSED") == len(paths) and "LOADED" not in r.stdout, r.stdout
