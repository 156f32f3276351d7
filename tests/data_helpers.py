"""Finding the real CIFAR data for tests: skip when it is absent, fail when CI requires it.

    from data_helpers import require_data
    root = require_data("cifar10")   # the data root (contains cifar-10-batches-bin/)

The data root is resolved as the library does (``TINYCOMP_DATA``, else ``~/.cache/tinycomp``).
A user's fresh machine has neither, so these tests skip with the reason; ``.ci/run`` sets
``TINYCOMP_REQUIRE_DATA=1``, which turns that skip into a failure so CI always runs them.
"""
import os

import pytest

from tinycomp.data import get_spec, resolve_root

REQUIRE_ENV = "TINYCOMP_REQUIRE_DATA"


def data_required():
    """True when ``TINYCOMP_REQUIRE_DATA=1``: a missing dataset must fail, not skip."""
    return os.environ.get(REQUIRE_ENV, "") == "1"


def require_data(name="cifar10"):
    """The data root holding ``name``'s folder; otherwise skip (or fail under TINYCOMP_REQUIRE_DATA=1)."""
    spec = get_spec(name)
    root, source = resolve_root(None)
    if (root / spec.folder).is_dir():
        return root
    reason = (f"no {spec.title} data: {root / spec.folder} does not exist (data root from {source}); "
              f"set TINYCOMP_DATA to the folder that contains {spec.folder}/")
    if data_required():
        pytest.fail(f"{reason} [{REQUIRE_ENV}=1 makes a missing dataset an error]", pytrace=False)
    pytest.skip(reason)
