"""The kernels' Numba cache is dropped when any kernel source changes (Numba checks only a function's own file)."""
from tinycomp_kernels import jit_cache


def _package(tmp_path, monkeypatch):
    pkg = tmp_path / "pkg"
    cache = pkg / "__pycache__"
    cache.mkdir(parents=True)
    (pkg / "a.py").write_text("x = 1\n")
    (pkg / "b.py").write_text("y = 2\n")
    monkeypatch.setattr(jit_cache, "PACKAGE", pkg)
    monkeypatch.setattr(jit_cache, "CACHE", cache)
    monkeypatch.setattr(jit_cache, "DIGEST_FILE", cache / "kernel-sources.sha256")
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    return pkg, cache


def _cached(cache):
    for name in ("a.f-1.py311.nbi", "a.f-1.py311.1.nbc", "b.g-3.py311.nbi"):
        (cache / name).write_bytes(b"x")
    (cache / "a.cpython-311.pyc").write_bytes(b"x")


def test_a_changed_source_drops_every_cached_kernel_and_only_those_files(tmp_path, monkeypatch):
    pkg, cache = _package(tmp_path, monkeypatch)
    _cached(cache)
    assert jit_cache.refresh() == 3  # no digest recorded yet: a cache of unknown sources
    assert sorted(p.name for p in cache.iterdir()) == ["a.cpython-311.pyc", "kernel-sources.sha256"]
    _cached(cache)
    assert jit_cache.refresh() == 0  # sources unchanged: the cache stays
    (pkg / "b.py").write_text("y = 3\n")  # a callee in another file changed
    assert jit_cache.refresh() == 3 and not list(cache.glob("*.nb?"))


def test_a_cache_elsewhere_is_left_alone(tmp_path, monkeypatch):
    pkg, cache = _package(tmp_path, monkeypatch)
    _cached(cache)
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "elsewhere"))
    assert jit_cache.refresh() == 0 and len(list(cache.glob("*.nb?"))) == 3


def test_the_digest_covers_names_and_contents(tmp_path, monkeypatch):
    pkg, _ = _package(tmp_path, monkeypatch)
    d = jit_cache.sources_digest()
    (pkg / "b.py").rename(pkg / "c.py")
    assert jit_cache.sources_digest() != d
