"""Numba's on-disk cache of the kernels, kept consistent with their sources.

Numba (``cache=True``) checks a cached function against the modification time of *its own* source
file only. A JIT that inlines a function of another module (``binary_conv2d``'s loops call
``xnor_gemm.xnor_dot_block``; most kernels call the tiles or the checks) keeps running the cached
machine code of the old callee after that module changes: after an upgrade or an edit, a kernel can
silently run code that no longer exists in the sources. So at import, before any kernel loads from
the cache, ``refresh()`` hashes every kernel source file together; when the digest differs from the
one recorded beside the cache (``__pycache__/kernel-sources.sha256``), it deletes this package's
cache files (``*.nbi``, ``*.nbc``), and the kernels compile afresh on first use.

This covers Numba's default cache location (``__pycache__`` next to the sources). With
``NUMBA_CACHE_DIR`` set, Numba writes elsewhere and that cache is left alone: clear it after
changing the kernels.
"""
import hashlib
import os
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
CACHE = PACKAGE / "__pycache__"
DIGEST_FILE = CACHE / "kernel-sources.sha256"


def sources_digest():
    """SHA-256 of every ``.py`` file of the package, names and contents, in sorted order."""
    h = hashlib.sha256()
    for path in sorted(PACKAGE.glob("*.py")):
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def refresh():
    """Delete the package's Numba cache files when the sources changed since they were written.
    Returns the number of files deleted (0 when the cache was current, absent or not writable)."""
    if os.environ.get("NUMBA_CACHE_DIR") or not CACHE.is_dir():
        return 0
    digest = sources_digest()
    try:
        if DIGEST_FILE.read_text().strip() == digest:
            return 0
    except OSError:
        pass  # no record yet: a cache written before this check, or none
    removed = 0
    for path in list(CACHE.glob("*.nbi")) + list(CACHE.glob("*.nbc")):
        try:
            path.unlink()
            removed += 1
        except OSError:  # another process removed it first, or a read-only install
            pass
    try:
        DIGEST_FILE.write_text(digest + "\n")
    except OSError:
        pass
    return removed
