"""Pruned, SAL, thinned and shift models to export in tests, built as ``tinycomp train`` builds them
(``compress.run_config``) and calibrated like ``export_helpers.model``."""
import tinycomp
from tinycomp import compress
from tinycomp.compress.sal import sal_layers
from tinycomp.export import export

from export_helpers import calibrated, meta


def structured_model(method, name="resnet20", width=0.25, seed=0, temperature=None, **config):
    """``name`` with ``method`` (prune, sal, filter-prune, their combinations, or a dense method for a
    ShiftResNet) at its final sparsity / thinning, BatchNorm non-trivial, in eval mode. ``temperature``
    sets every SAL layer's T, so that fewer pairs survive rounding (T = 20 keeps about 98 %, 4 about
    78 %, 2 about 39 %, 0.5 none). ``config``: run options (sparsity, ratio, sal_shared, ...)."""
    tinycomp.manual_seed(seed)
    m = compress.run_config.summary_model({"model": name, "width": width, "method": method, **config}, 10)
    for layer in sal_layers(m):
        if temperature is not None:
            layer.temperature[...] = temperature
    return calibrated(m, seed)


def exported_structured(tmp_path, method, name="resnet20", width=0.25, **options):
    """(the training model, the path of its export): ``structured_model(...)`` exported to tmp_path."""
    m = structured_model(method, name, width, **options)
    path = tmp_path / f"{name}-{method}.npz"
    export(m, path, meta(name, width))
    return m, path
