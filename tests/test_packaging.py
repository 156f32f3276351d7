"""setup.cfg lists the packages by hand: every folder with an __init__.py must be in the list, or a
regular ``pip install .`` leaves it out while editable installs (and so the other tests) still find it.
.ci/check_install.py checks the real install."""
import configparser
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_package_folder_is_listed_in_setup_cfg():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    listed = set(cfg["options"]["packages"].split())
    roots = [line.split("=") for line in cfg["options"]["package_dir"].strip().splitlines()]  # import name = folder
    found = set()
    for top, path in ((name.strip(), ROOT / folder.strip()) for name, folder in roots):
        for init in path.rglob("__init__.py"):
            found.add(".".join((top, *init.parent.relative_to(path).parts)))
    assert {"tinycomp", "tinycomp.nn", "tinycomp_kernels"} <= found
    assert found - listed == set(), f"add to setup.cfg [options] packages: {sorted(found - listed)}"
