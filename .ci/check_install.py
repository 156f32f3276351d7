"""CI: a regular (non-editable) install of this checkout works, as the README's ``pip install .``.

An editable install finds every folder of the checkout, so a subpackage missing from setup.cfg's
``packages`` passes the tests there and is absent from a real install. This installs the checkout
into a temporary folder (``pip install --no-deps --target``), then, from outside the checkout, imports
every package (each must come from the install, not from the checkout through the editable finder)
and runs the installed ``tinycomp`` script. It builds from a copy of the checkout's files, so that no
build/ folder is written into (or reused from) the checkout.

    python .ci/check_install.py
"""
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IMPORT_ROOTS = {"tinycomp": "tinycomp", "kernels": "tinycomp_kernels"}  # folder -> import name

CHECK_IMPORTS = """
import importlib, sys
site, names = sys.argv[1], sys.argv[2:]
for name in names:
    module = importlib.import_module(name)
    assert module.__file__.startswith(site), f"{name} comes from {module.__file__}, not from the install"
print(f"{len(names)} packages import from the install")
"""


def package_names():
    """Import names of every folder holding an __init__.py under tinycomp/ and kernels/."""
    names = []
    for folder, name in IMPORT_ROOTS.items():
        for init in sorted((ROOT / folder).rglob("__init__.py")):
            parts = init.parent.relative_to(ROOT / folder).parts
            names.append(".".join((name, *parts)))
    return names


def copy_sources(dest):
    """Copy the files git tracks or would track (not build/, *.egg-info, caches) to ``dest``: a stale
    build/lib in the checkout would otherwise put a package in the install that setup.cfg omits."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            check=True, capture_output=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source, target = ROOT / name, Path(dest) / name
        if source.is_file():  # a tracked file deleted in the work tree is skipped
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


def main():
    with tempfile.TemporaryDirectory(prefix="tinycomp-install-") as tmp:
        src, site = os.path.join(tmp, "src"), os.path.join(tmp, "site")
        copy_sources(src)
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", site, src],
                       check=True)
        env = dict(os.environ, PYTHONPATH=site)
        run = dict(cwd=tmp, env=env, check=True)  # cwd outside the checkout: nothing found there by accident
        subprocess.run([sys.executable, "-c", CHECK_IMPORTS, site, *package_names()], **run)
        script = os.path.join(site, "bin", "tinycomp")
        subprocess.run([script, "--version"], **run)
        subprocess.run([script, "summary", "--model", "resnet20"], stdout=subprocess.DEVNULL, **run)
    print("non-editable install: every package imports, the tinycomp script runs")


if __name__ == "__main__":
    main()
