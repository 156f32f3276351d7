"""Where the data lives, and fetching it when it is not there.

Data root: the folder that *contains* ``cifar-10-batches-bin/`` (or ``cifar-100-binary/``),
chosen in this order:

1. the ``data_dir`` argument (the CLI's ``--data-dir``);
2. the environment variable ``TINYCOMP_DATA``;
3. the user's cache: ``$XDG_CACHE_HOME/tinycomp`` if that variable is set, else ``~/.cache/tinycomp``.

Download (``ensure_dataset``), only when the dataset folder is absent and downloads are allowed.
By default only into the cache folder (3.): a root named by 1. or 2. that lacks the dataset is an
error naming what belongs there, since a mistyped path would otherwise get a 162 MB download (and
new folders); ``download=True`` (the CLI's ``--download``) allows it.

- URL and md5: the function arguments, else ``TINYCOMP_CIFAR10_URL`` / ``TINYCOMP_CIFAR10_MD5``
  (``TINYCOMP_CIFAR100_...`` for CIFAR-100), else the official archive and its published md5.
- Allowed URLs: ``https://`` anywhere; plain ``http://`` only to a loopback host (127.0.0.1, ::1,
  localhost), so the tests can serve a synthetic archive from a local ``http.server`` while a
  real download can never travel unencrypted.
- The archive streams into a temporary file inside the data root, with a tqdm progress bar; its
  md5 is checked *before* extraction. Extraction refuses any member that is not a regular file or
  folder (symlinks, hard links, devices) or whose path is absolute or contains ``..``; members are
  written by this code into a temporary folder, never by ``tarfile.extract``. The extracted
  dataset folder is validated (sizes, record counts, labels) and only then renamed into place,
  atomically. On any failure the temporary file and folder are removed, and the data root too if
this call created it: nothing is left behind.
"""
import hashlib
import ipaddress
import os
import shutil
import tarfile
import tempfile
import urllib.parse
import urllib.request
from pathlib import Path, PurePosixPath

from .formats import DatasetError, check_folder, get_spec

ENV_ROOT = "TINYCOMP_DATA"
_CHUNK = 1 << 20


def default_root():
    """The cache folder used when neither ``data_dir`` nor ``TINYCOMP_DATA`` is given."""
    cache = os.environ.get("XDG_CACHE_HOME")
    base = Path(cache) if cache else Path.home() / ".cache"
    return base / "tinycomp"


def resolve_root(data_dir=None):
    """The data root: ``data_dir``, else ``$TINYCOMP_DATA``, else ``default_root()``.

    Returns ``(path, source)`` where ``source`` says which of the three was used (for messages).
    """
    if data_dir is not None and str(data_dir) != "":
        return Path(data_dir).expanduser(), "--data-dir"
    env = os.environ.get(ENV_ROOT)
    if env:
        return Path(env).expanduser(), f"${ENV_ROOT}"
    return default_root(), "default cache folder"


def _env_key(spec):
    return "TINYCOMP_" + spec.name.upper()


def dataset_source(spec, url=None, md5=None):
    """The (url, md5) a download of ``spec`` would use: arguments, else env vars, else official."""
    url = url or os.environ.get(_env_key(spec) + "_URL") or spec.url
    md5 = md5 or os.environ.get(_env_key(spec) + "_MD5") or spec.md5
    return url, md5.lower()


def _is_loopback(host):
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_url(url):
    """Allow https anywhere and plain http only to a loopback host; raise DatasetError otherwise."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return
    if parts.scheme == "http" and parts.hostname and _is_loopback(parts.hostname):
        return
    raise DatasetError(f"refusing to download from {url!r}: only https:// URLs (or http:// to a "
                       "loopback address, for tests) are allowed")


def fetch(url, dest, md5, progress=True, timeout=60):
    """Stream ``url`` into the file ``dest`` with a progress bar; raise DatasetError unless its md5
    equals ``md5``. ``dest`` is left for the caller to remove."""
    from tqdm.auto import tqdm

    check_url(url)
    digest = hashlib.md5()
    # a loopback server is this machine: never route it through an http(s)_proxy from the environment
    handlers = [urllib.request.ProxyHandler({})] if _is_loopback(urllib.parse.urlsplit(url).hostname) else []
    opener = urllib.request.build_opener(*handlers)
    try:
        with opener.open(url, timeout=timeout) as response, open(dest, "wb") as out:
            total = response.headers.get("Content-Length")
            with tqdm(total=int(total) if total else None, unit="B", unit_scale=True,
                      unit_divisor=1024, desc=f"download {url.rsplit('/', 1)[-1]}",
                      disable=not progress) as bar:
                while True:
                    chunk = response.read(_CHUNK)
                    if not chunk:
                        break
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
    except OSError as err:  # URLError, HTTPError, timeouts and disk errors are all OSErrors
        raise DatasetError(f"download of {url} failed: {err}") from err
    got = digest.hexdigest()
    if got != md5.lower():
        raise DatasetError(f"download of {url}: md5 {got} does not match the expected {md5}; "
                           "the archive was discarded")


def _member_target(member, target):
    """The path inside ``target`` for a tar member, or DatasetError if the member is unsafe."""
    name = member.name
    if not (member.isfile() or member.isdir()):
        raise DatasetError(f"archive member {name!r} is not a regular file or folder "
                           "(links and devices are refused)")
    pure = PurePosixPath(name)
    if pure.is_absolute() or name.startswith(("/", "\\")) or ".." in pure.parts or "\\" in name \
            or (pure.parts and ":" in pure.parts[0]):
        raise DatasetError(f"archive member {name!r} points outside the extraction folder; refused")
    path = (target / pure).resolve()
    root = target.resolve()
    if path != root and root not in path.parents:
        raise DatasetError(f"archive member {name!r} points outside the extraction folder; refused")
    return path


def safe_extract(archive, target):
    """Extract a tar(.gz) archive into the folder ``target``, refusing unsafe members.

    All members are checked before anything is written. Only regular files and folders are
    created; permissions, owners and times from the archive are ignored.
    """
    target = Path(target)
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            plan = [(m, _member_target(m, target)) for m in members]
            for member, path in plan:
                if member.isdir():
                    path.mkdir(parents=True, exist_ok=True)
                    continue
                path.parent.mkdir(parents=True, exist_ok=True)
                source = tar.extractfile(member)
                with source, open(path, "wb") as out:
                    shutil.copyfileobj(source, out, _CHUNK)
    except (tarfile.TarError, EOFError) as err:
        raise DatasetError(f"{archive}: not a valid tar archive: {err}") from err


def _expected(spec):
    """What the dataset folder holds, for messages: "data_batch_1.bin ... data_batch_5.bin, ..."."""
    train = [f for f, _ in spec.train_files]
    names = [f"{train[0]} ... {train[-1]}" if len(train) > 2 else ", ".join(train)]
    names += [f for f, _ in spec.test_files] + [f for _, f in spec.names_files]
    return ", ".join(names)


def _misplaced_hint(spec, root):
    """A suggestion when ``root`` is one level too deep (it is the dataset folder) or too high (a
    child holds the dataset folder); "" otherwise."""
    first = spec.train_files[0][0]
    if root.name == spec.folder or (root / first).is_file():
        return f" {root} looks like the dataset folder itself: point at its parent, {root.parent}."
    try:
        children = sorted(c for c in root.iterdir() if c.is_dir())[:1000]
        holders = [c for c in children if (c / spec.folder).is_dir()]
    except OSError:  # missing, not a folder, or unreadable (a child too)
        return ""
    if holders:
        return f" {holders[0]} holds {spec.folder}/: point at {holders[0]} instead."
    return ""


def _not_found(spec, root, source, download):
    """The DatasetError message for a dataset that is not in ``root``."""
    hint = _misplaced_hint(spec, root) or (f" Point at the folder that contains {spec.folder}/ with "
                                           f"--data-dir DIR or {ENV_ROOT}=DIR.")
    where = (f"{spec.title} not found: looked for {root / spec.folder} (data root {root}, from {source}); "
             f"the folder {spec.folder}/ should hold {_expected(spec)}.{hint}")
    if download is False:
        return f"{where} Or allow the download."
    # a folder the user named is never downloaded into unasked: a typo would get 162 MB and new folders
    return (f"{where} Or pass --download to download the official archive into {root}"
            + ("" if root.is_dir() else " (creating that folder)") + ".")


def ensure_dataset(name="cifar10", data_dir=None, download=None, url=None, md5=None, progress=True):
    """The dataset folder (``<root>/cifar-10-batches-bin`` ...), downloading it if absent and allowed.

    ``name``: ``"cifar10"``, ``"cifar100"`` or a ``DatasetSpec``. ``data_dir``: see
    ``resolve_root``. ``download``: None (default) downloads a missing dataset only into the default
    cache folder; a root named by ``data_dir`` or ``$TINYCOMP_DATA`` that lacks it is an error naming
    what was expected there (and the likely right path when the root is one level off). True
    downloads into any root, creating the root folder itself (not its parents) if needed; False never
    downloads. Every error says where it looked and how to point at the data. ``url``/``md5``
    override the archive (see the module docstring). An existing folder is returned as is (the
    caller validates it when reading).
    """
    spec = get_spec(name)
    root, source = resolve_root(data_dir)
    folder = root / spec.folder
    if folder.is_dir():
        return folder
    if folder.exists():
        raise DatasetError(f"{spec.title}: {folder} exists but is not a folder")
    explicit = source != "default cache folder"
    if download is False or (download is None and explicit):
        raise DatasetError(_not_found(spec, root, source, download))
    url, md5 = dataset_source(spec, url, md5)
    check_url(url)
    created = not root.exists()
    try:
        # the default cache may need its parents (~/.cache); a named root only itself
        root.mkdir(parents=not explicit, exist_ok=True)
    except OSError as err:
        raise DatasetError(f"{spec.title}: cannot create data root {root}: {err}") from err
    try:
        _download_into(spec, folder, url, md5, progress)
    except DatasetError as err:
        raise DatasetError(f"{err}. {spec.title} is not in {folder} (data root {root}, from {source}); if you "
                           f"have a copy, point at the folder that contains {spec.folder}/ with --data-dir DIR "
                           f"or {ENV_ROOT}=DIR.") from err
    finally:
        if created and not folder.is_dir():  # leave no folder behind that the user did not have
            try:
                root.rmdir()
            except OSError:
                pass
    return folder


def _download_into(spec, folder, url, md5, progress):
    """Fetch, check and extract the archive, then rename its dataset folder to ``folder``; nothing is
    left in ``folder.parent`` on failure."""
    root = folder.parent
    fd, archive = tempfile.mkstemp(dir=root, prefix=f".{spec.name}-", suffix=".tar.gz.part")
    os.close(fd)
    workdir = tempfile.mkdtemp(dir=root, prefix=f".{spec.name}-extract-")
    try:
        fetch(url, archive, md5, progress=progress)
        safe_extract(archive, workdir)
        extracted = Path(workdir) / spec.folder
        if not extracted.is_dir():
            raise DatasetError(f"{spec.title}: the archive from {url} has no {spec.folder}/ folder")
        try:
            check_folder(extracted, spec)
        except DatasetError as err:
            raise DatasetError(f"{spec.title}: the archive from {url} is invalid: {err}") from err
        try:
            os.rename(extracted, folder)
        except OSError:
            # another process may have finished the same download first: use its folder
            if not folder.is_dir():
                raise
    finally:
        Path(archive).unlink(missing_ok=True)
        shutil.rmtree(workdir, ignore_errors=True)
