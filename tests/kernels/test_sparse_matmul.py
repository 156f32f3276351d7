"""tinycomp_kernels.sparse_matmul: the JIT products equal dense masked NumPy products (float32, atol 1e-4 scaled)."""
import re

import numpy as np
import pytest
from hypothesis import given, strategies as st
from numba import config, njit

from strategies import csr_matrices
from tinycomp_kernels import csr as C, csr_tile as T, sparse_matmul as S

# float32 sums of up to ~500 products of O(1) terms: an absolute 1e-4 per unit of scale is ample
TOL = dict(rtol=1e-4, atol=1e-4)


def _b(rng, k, n):
    return rng.standard_normal((k, n)).astype(np.float32)


@given(csr_matrices(max_rows=30, max_cols=30), st.integers(1, 70), st.integers(0, 2**32 - 1))
def test_csr_matmul_equals_dense(wm, n, seed):
    w, mask = wm
    indptr, indices, values = C.csr_from_dense(w, mask=mask)
    b = _b(np.random.default_rng(seed), w.shape[1], n)
    expected = w.astype(np.float64) @ b.astype(np.float64)
    np.testing.assert_allclose(S.csr_matmul(indptr, indices, values, b), expected, **TOL)
    np.testing.assert_allclose(S.csr_matmul_ref(indptr, indices, values, b), expected, **TOL)


@given(csr_matrices(max_rows=30, max_cols=30), st.integers(1, 70), st.integers(0, 2**32 - 1))
def test_csr_matmul_t_equals_dense(wm, n, seed):
    w, mask = wm
    indptr, indices, values = C.csr_from_dense(w, mask=mask)
    b = _b(np.random.default_rng(seed), w.shape[0], n)
    got = S.csr_matmul_t(indptr, indices, values, b, w.shape[1])
    np.testing.assert_allclose(got, w.T.astype(np.float64) @ b, **TOL)


@given(csr_matrices(max_rows=30, max_cols=30), st.integers(1, 70), st.integers(0, 2**32 - 1))
def test_csr_sddmm_equals_masked_dense_gradient(wm, n, seed):
    w, mask = wm
    indptr, indices, _ = C.csr_from_dense(w, mask=mask)
    rng = np.random.default_rng(seed)
    a, b = _b(rng, w.shape[0], n), _b(rng, w.shape[1], n)
    dense = a.astype(np.float64) @ b.astype(np.float64).T  # dL/dW of out = W @ b with dL/dout = a
    np.testing.assert_allclose(S.csr_sddmm(indptr, indices, a, b), dense[mask], **TOL)


def test_all_zero_and_wide_tiles():
    rng = np.random.default_rng(1)
    w = np.zeros((5, 7), dtype=np.float32)
    b = _b(rng, 7, 2500)  # more than one column tile
    indptr, indices, values = C.csr_from_dense(w)
    assert len(values) == 0
    np.testing.assert_array_equal(S.csr_matmul(indptr, indices, values, b), np.zeros((5, 2500), np.float32))
    np.testing.assert_array_equal(S.csr_matmul_t(indptr, indices, values, _b(rng, 5, 3), 7), np.zeros((7, 3)))
    w = rng.standard_normal((9, 7)).astype(np.float32)
    w[rng.random(w.shape) < 0.5] = 0
    np.testing.assert_allclose(S.csr_matmul(*C.csr_from_dense(w), b), w.astype(np.float64) @ b, **TOL)


@given(csr_matrices(max_rows=20, max_cols=40), st.integers(1, 150), st.integers(1, 24), st.integers(0, 2**32 - 1))
def test_csr_block_matmul_equals_dense(wm, n, k_block, seed):
    """K not a multiple of k_block, N not a multiple of the 64-column tile, empty rows and blocks."""
    w, mask = wm
    indptr, indices, values = C.csr_from_dense(w, mask=mask)
    bw = C.csr_block(indptr, indices, values, w.shape[1], k_block=k_block)
    k_block = min(k_block, w.shape[1])
    assert bw.k_block == k_block and bw.ptr[-1] == len(values)
    np.testing.assert_array_equal(bw.values, values[bw.perm])
    np.testing.assert_array_equal(np.sort(bw.perm), np.arange(len(values)))
    rows = np.repeat(np.arange(w.shape[0]), np.diff(indptr))
    for kb in range((len(bw.ptr) - 1) // w.shape[0]):  # every entry sits in its (K-block, row) slot
        for i in range(w.shape[0]):
            q = bw.perm[bw.ptr[kb * w.shape[0] + i]:bw.ptr[kb * w.shape[0] + i + 1]]
            assert np.all(rows[q] == i) and np.all(indices[q] // k_block == kb)
            np.testing.assert_array_equal(indices[q] % k_block, bw.indices[bw.ptr[kb * w.shape[0] + i]:
                                                                          bw.ptr[kb * w.shape[0] + i + 1]])
    b = _b(np.random.default_rng(seed), w.shape[1], n)
    np.testing.assert_allclose(S.csr_matmul_blocked(bw, b), w.astype(np.float64) @ b, **TOL)


@pytest.mark.parametrize("slab", [None, 32, 96])
def test_csr_matmul_slabs_bands_row_blocks(slab):
    """Several slabs per worker, several K-bands (the last partial), partial 32- and 64-column tiles,
    rows split into blocks, empty rows, rows empty in some bands, columns of W that keep nothing (whose
    rows of b are never copied: NaN there must not leak into the product) and bands that keep nothing."""
    rng = np.random.default_rng(5)
    for m, k, n, density in ((70, 300, 333, 0.05), (9, 130, 40, 0.3), (1, 5, 1, 1.0), (200, 64, 17, 0.02),
                             (30, 400, 50, 0.002)):
        w = rng.standard_normal((m, k)).astype(np.float32)
        w[rng.random(w.shape) > density] = 0
        w[m // 2] = 0
        w[:, 130:260] = 0  # one whole band (k_block 128) and parts of two others keep nothing
        b = _b(rng, k, n)
        b[~w.any(axis=0)] = np.nan  # rows of b that no kept weight multiplies
        bw = C.csr_block(*C.csr_from_dense(w), k, k_block=128)
        np.testing.assert_array_equal(bw.used, np.flatnonzero(w.any(axis=0)))
        out = np.full((m, n), np.nan, np.float32)
        S.csr_matmul_blocked_into(out, bw, b, slab=slab)
        np.testing.assert_allclose(out, w.astype(np.float64) @ np.nan_to_num(b, nan=0.0), **TOL)


@pytest.mark.parametrize("reuse", [0.0, np.inf])
def test_whole_row_and_blocked_kernels_agree(monkeypatch, reuse):
    """ROWS_MAX_REUSE 0 leaves every product to the blocked kernel, inf gives all to the whole-row one
    (in pieces of 48 columns here): both equal the dense product with bands, empty rows and bands, and
    NaN in the rows of b that no kept weight reads."""
    monkeypatch.setattr(S, "ROWS_MAX_REUSE", reuse)
    monkeypatch.setattr(S, "ROWS_CHUNK", 48)
    rng = np.random.default_rng(6)
    for m, k, n, density in ((70, 300, 333, 0.05), (1, 5, 1, 1.0), (30, 400, 50, 0.002), (3, 7, 100, 0.0)):
        w = rng.standard_normal((m, k)).astype(np.float32)
        w[rng.random(w.shape) > density] = 0
        w[m // 2] = 0
        b = _b(rng, k, n)
        b[~w.any(axis=0)] = np.nan
        bw = C.csr_block(*C.csr_from_dense(w), k, k_block=128)
        np.testing.assert_allclose(S.csr_matmul_blocked(bw, b), w.astype(np.float64) @ np.nan_to_num(b, nan=0.0),
                                   **TOL)
        np.testing.assert_allclose(S.csr_matmul(*C.csr_from_dense(w), b), w @ np.nan_to_num(b, nan=0.0), **TOL)


def test_matmul_algorithm_from_the_shapes():
    """The whole-row kernel for a 99 %-sparse 64-row W (1.3 kept entries per used row of b), the
    blocked one at 95 % and for a 99 %-sparse 256-row W."""
    rng = np.random.default_rng(8)
    for m, k, density, want in ((64, 576, 0.01, "rows"), (64, 576, 0.05, "blocked"), (256, 2304, 0.01, "blocked")):
        _, indices, _ = C.csr_from_dense(rng.standard_normal((m, k)) * (rng.random((m, k)) < density))
        assert S.csr_matmul_algorithm(len(indices), len(np.unique(indices))) == want


def test_csr_block_unsorted_columns_and_auto_k_block():
    """Columns in any order within a row (a valid CSR need not sort them) block and multiply correctly;
    auto_k_block splits K into equal bands of at most K_BLOCK rows."""
    rng = np.random.default_rng(6)
    w = rng.standard_normal((20, 300)).astype(np.float32)
    w[rng.random(w.shape) > 0.1] = 0
    indptr, indices, values = C.csr_from_dense(w)
    shuffled = np.concatenate([rng.permutation(np.arange(indptr[i], indptr[i + 1])) for i in range(20)])
    bw = C.csr_block(indptr, indices[shuffled], values[shuffled], 300, k_block=64)
    b = _b(rng, 300, 70)
    np.testing.assert_allclose(S.csr_matmul_blocked(bw, b), w.astype(np.float64) @ b, **TOL)
    np.testing.assert_allclose(S.csr_matmul(indptr, indices[shuffled], values[shuffled], b),
                               w.astype(np.float64) @ b, **TOL)
    assert C.auto_k_block(2304) == 192 and C.auto_k_block(576) == 192 and C.auto_k_block(5) == 5
    for k in (1, 1000, 1025, 5000):  # bands of at most K_BLOCK rows, of equal height but for rounding
        kb = C.auto_k_block(k)
        bands = -(-k // kb)
        assert kb <= C.K_BLOCK and bands == -(-k // C.K_BLOCK) and k - (bands - 1) * kb > kb - bands
    assert C.csr_block(indptr, indices, values, 300).k_block == C.auto_k_block(300)


@pytest.mark.parametrize("m, k, n, workers", [(256, 2304, 4096, 2), (64, 576, 16384, 2), (16, 144, 65536, 1),
                                              (512, 4608, 196, 2), (2000, 300, 64, 4)])
def test_plan_fits_the_l2_budget_and_gives_every_worker_work(m, k, n, workers):
    """The packed band and the output slab of a worker stay within L2_BUDGET (the measured knee:
    module doc) unless one 64-column tile alone exceeds it; the tasks cover N and M."""
    band = C.auto_k_block(k)
    slab, row_block = S._plan(m, n, band, workers)
    assert slab % S.LINE == 0 and slab >= S.LINE
    stride = S._padded(slab)
    assert stride >= slab and stride % S.LINE == 0 and (stride // S.LINE) % 2 == 1
    footprint = 4 * (band + row_block) * stride
    assert footprint <= S.L2_BUDGET * 1.1 or slab == S.TILE
    assert -(-n // slab) * -(-m // row_block) >= workers


def test_scratch_buffers_disjoint_aligned_and_reused():
    bbuf, obuf = S._scratch((2, 2, 5, 80), (2, 7, 80))
    assert bbuf.shape == (2, 2, 5, 80) and obuf.shape == (2, 7, 80)
    assert bbuf.flags.c_contiguous and obuf.flags.c_contiguous and bbuf.dtype == obuf.dtype == np.float32
    assert bbuf.ctypes.data % (1 << 21) == 0 and obuf.ctypes.data % 64 == 0
    assert obuf.ctypes.data >= bbuf.ctypes.data + bbuf.nbytes  # no overlap
    again, _ = S._scratch((3, 4), (1,))
    assert again.ctypes.data == bbuf.ctypes.data  # one buffer, kept between calls
    big, _ = S._scratch((3 << 20,), (5,))  # more than the buffer holds: a larger one replaces it
    assert big.size == 3 << 20 and big.ctypes.data % (1 << 21) == 0


def test_calls_from_python_threads_never_share_the_workspace(monkeypatch):
    """Numba releases the GIL inside the parallel kernel: without the workspace lock two Python
    threads packed their bands into the same scratch buffer (wrong products, found by review)."""
    import threading
    import time

    kernel, running, overlaps = S.csr_matmul_jit, [], []

    def slow_kernel(*args):
        running.append(1)
        overlaps.append(len(running) > 1)
        time.sleep(0.02)  # releases the GIL, as the parallel region does
        kernel(*args)
        running.pop()

    monkeypatch.setattr(S, "csr_matmul_jit", slow_kernel)
    rng = np.random.default_rng(11)
    w = rng.standard_normal((20, 300)).astype(np.float32)
    w[rng.random(w.shape) > 0.1] = 0
    csr = C.csr_from_dense(w)
    bs = [_b(rng, 300, 90 + 7 * t) for t in range(3)]
    results = {}

    def call(t):
        results[t] = [S.csr_matmul(*csr, bs[t]) for _ in range(3)]

    threads = [threading.Thread(target=call, args=(t,)) for t in range(3)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(overlaps) == 9 and not any(overlaps)
    for t in range(3):
        for got in results[t]:
            np.testing.assert_allclose(got, w.astype(np.float64) @ bs[t], **TOL)


def test_csr_matmul_blocked_huge_n_cols_refused_before_any_table():
    """A tampered n_cols (with an empty b of as many rows, which costs no memory) must be refused,
    not allocate an n_cols-long table (it raised MemoryError for 2**40)."""
    w = np.array([[1, 0, 2], [0, 3, 0]], np.float32)
    bw = C.csr_block(*C.csr_from_dense(w), 3)  # one K-block: used_ptr stays valid for any larger k_block
    huge = bw._replace(n_cols=2**40, k_block=2**40)
    with pytest.raises(ValueError, match="csr_matmul_blocked: bw is inconsistent"):
        S.csr_matmul_blocked(huge, np.empty((2**40, 0), np.float32))
    with pytest.raises(ValueError, match="csr_matmul_blocked: b has 3 rows, W has 1099511627776 columns"):
        S.csr_matmul_blocked(huge, np.ones((3, 4), np.float32))


def test_csr_row_tile_plain_python_and_jit():
    rng = np.random.default_rng(3)
    b = _b(rng, 9, 150)
    indices = np.array([4, 0, 8, 4, 2], np.int32)
    values = rng.standard_normal(5).astype(np.float32)
    tiles = ((0, T.csr_row_tile_full, 64, 10, 64), (1, T.csr_row_tile, 100, 3, 37), (1, T.csr_row_tile, 1, 5, 64))
    for which, tile, j0, bj0, ncols in tiles:
        for p1 in (1, 2, 3, 4, 5):  # 0..4 kept weights: both remainders of the two accumulator sets
            for acc in (False, True):
                out = _b(rng, 3, 170)
                expected = out.copy()
                T.csr_row_tile_ref(expected, 1, j0, ncols, 1, p1, indices, values, b, bj0, acc)
                got_py, got_jit = out.copy(), out.copy()
                tile(got_py, 1, j0, ncols, 1, p1, indices, values, b, bj0, acc)
                _tile_caller(which, got_jit, j0, ncols, p1, indices, values, b, bj0, acc)
                np.testing.assert_allclose(got_py, expected, **TOL)
                np.testing.assert_allclose(got_jit, expected, **TOL)  # masked lanes beyond ncols untouched


def test_csr_row_tile_long_row():
    """Many kept weights (the main loop over two accumulator sets, then a remainder of 0 or 1)."""
    rng = np.random.default_rng(4)
    b = _b(rng, 50, 80)
    for nnz in (37, 38):
        indices = rng.integers(0, 50, nnz).astype(np.int32)
        values = rng.standard_normal(nnz).astype(np.float32)
        out = _b(rng, 2, 80)
        expected = out.copy()
        T.csr_row_tile_ref(expected, 1, 8, 64, 0, nnz, indices, values, b, 8, True)
        _tile_caller(0, out, 8, 64, nnz, indices, values, b, 8, True, 0)
        np.testing.assert_allclose(out, expected, **TOL)


@njit
def _tile_caller(which, out, j0, ncols, p1, indices, values, b, bj0, acc, p0=1):
    if which == 0:
        T.csr_row_tile_full(out, 1, j0, ncols, p0, p1, indices, values, b, bj0, acc)
    else:
        T.csr_row_tile(out, 1, j0, ncols, p0, p1, indices, values, b, bj0, acc)


def test_csr_matmul_asm_uses_full_width_fma():
    """The register tile compiles to FMAs of the CPU's widest vectors: 512-bit with AVX-512, 256-bit
    on an AVX2 CPU (AMD Zen 3, say), with no narrower packed fallback in the hot loop."""
    import llvmlite.binding as llvm

    if config.DISABLE_JIT:
        pytest.skip("NUMBA_DISABLE_JIT=1: nothing is compiled")
    fresh = njit(parallel=True)(S._csr_matmul_loops)  # not the cached dispatcher: its asm is not inspectable
    bw = C.csr_block(*C.csr_from_dense(np.eye(3, dtype=np.float32)), 3)
    fresh(np.empty((3, 3), np.float32), bw.ptr, bw.indices, bw.values, bw.used, bw.used_ptr,
          np.ones((3, 3), np.float32), 3, 64, 3, np.empty((1, 3, 80), np.float32), np.empty((1, 3, 80), np.float32),
          4, 16)
    asm = "\n".join(fresh.inspect_asm().values())
    if "+avx512f" in llvm.get_host_cpu_features().flatten():
        wide, narrow, least = "zmm", "[xy]mm", 8  # 2 kept weights x 4 vectors per loop trip
    else:
        wide, narrow, least = "ymm", "xmm", 16  # each 16-float vector is two ymm halves
    assert len(re.findall(rf"vfmadd\w*ps\s+[^\n]*{wide}", asm)) >= least
    assert not re.findall(rf"vfmadd\w*ps\s+[^\n]*{narrow}", asm)
    assert re.search(r"\bprefetchw\b", asm) and re.search(r"\bprefetcht1\b", asm)  # out rows, L2 look-ahead
    assert "prefetcht0" in asm and "prefetcht1" in asm  # the band copies' and the L2 look-ahead's prefetches


def test_loops_run_in_plain_python():
    rng = np.random.default_rng(2)
    w = np.array([[1.5, 0, -2, 0, 0, 1], [0, 0, 0, 0, 0, 0], [0, 3, 0, 1, 1, 0]], dtype=np.float32)
    indptr, indices, values = C.csr_from_dense(w)
    b = _b(rng, 6, 5)
    out = np.empty((3, 5), np.float32)
    bw = C.csr_block(indptr, indices, values, 6, k_block=4)  # two K-blocks, the second partial
    # two workers; slabs of 4 columns (two, the second 1 wide), row blocks of 2 (the last one 1 row):
    # four tasks, so each worker moves on to a next task
    bbuf, obuf = np.empty((2, 4, 20), np.float32), np.empty((2, 2, 20), np.float32)
    out[:] = np.nan
    S._csr_matmul_loops(out, bw.ptr, bw.indices, bw.values, bw.used, bw.used_ptr, b, 4, 4, 2, bbuf, obuf, 2, 3)
    np.testing.assert_allclose(out, w @ b, **TOL)
    out[:] = np.nan
    S._csr_rows_loops(out, bw.ptr, bw.indices, bw.values, b, 4, 2)  # pieces of 2 columns, the last 1
    np.testing.assert_allclose(out, w @ b, **TOL)
    a = _b(rng, 3, 5)
    g = np.empty(len(values), np.float32)
    S._csr_sddmm_loops(g, indptr, indices, a, b)
    np.testing.assert_allclose(g, (a @ b.T)[w != 0], **TOL)


def _valid():
    w = np.array([[1, 0, 2], [0, 0, 3]], dtype=np.float32)
    return C.csr_from_dense(w) + (np.ones((3, 4), np.float32),)


@pytest.mark.parametrize("mutate, exc, word", [
    (lambda a: (a[0][:-1],) + a[1:], ValueError, "indptr"),                         # mismatched indptr length
    (lambda a: (a[0], a[1] + 5) + a[2:], ValueError, "indices"),                    # out of range
    (lambda a: (a[0], a[1] - 5) + a[2:], ValueError, "indices"),                    # negative
    (lambda a: (a[0], a[1].astype(np.float64)) + a[2:], TypeError, "indices"),      # wrong dtype
    (lambda a: (a[0].astype(np.float32),) + a[1:], TypeError, "indptr"),
    (lambda a: a[:2] + (a[2].astype(np.float64), a[3]), TypeError, "values"),
    (lambda a: a[:2] + (a[2][:1], a[3]), ValueError, "values"),                    # nnz mismatch
    (lambda a: a[:3] + (a[3].astype(np.float64),), TypeError, "b"),
    (lambda a: a[:3] + (np.ones((3, 8), np.float32)[:, ::2],), ValueError, "b"),    # non-contiguous
    (lambda a: a[:3] + (np.ones((2, 4), np.float32),), ValueError, "indices"),       # index 2 >= K = 2 rows of b
    (lambda a: a[:3] + (np.ones(3, np.float32),), ValueError, "b"),                 # wrong ndim
    (lambda a: (np.array([0, 2, 1], np.int64),) + a[1:], ValueError, "indptr"),     # decreasing
])
def test_csr_matmul_bad_input(mutate, exc, word):
    args = mutate(_valid())
    with pytest.raises(exc, match=f"csr_matmul: .*{word}"):
        S.csr_matmul(*args)


def test_other_wrappers_bad_input():
    indptr, indices, values, _ = _valid()
    with pytest.raises(ValueError, match="csr_matmul_t: b has 3 rows"):
        S.csr_matmul_t(indptr, indices, values, np.ones((3, 4), np.float32), 3)
    with pytest.raises(ValueError, match="csr_matmul_t: indices out of range"):
        S.csr_matmul_t(indptr, indices, values, np.ones((2, 4), np.float32), 2)
    with pytest.raises(ValueError, match="csr_sddmm: a"):
        S.csr_sddmm(indptr, indices, np.ones((2, 4), np.float32), np.ones((3, 5), np.float32))
    with pytest.raises(TypeError, match="csr_sddmm: b must be float32"):
        S.csr_sddmm(indptr, indices, np.ones((2, 4), np.float32), np.ones((3, 4)))
    bw = C.csr_block(indptr, indices, values, 3, k_block=2)
    with pytest.raises(ValueError, match="csr_matmul_blocked: b has 4 rows"):
        S.csr_matmul_blocked(bw, np.ones((4, 5), np.float32))
    with pytest.raises(TypeError, match="csr_matmul_blocked: b must be float32"):
        S.csr_matmul_blocked(bw, np.ones((3, 5)))
    with pytest.raises(ValueError, match="csr_matmul_blocked: b must be C-contiguous"):
        S.csr_matmul_blocked(bw, np.ones((3, 10), np.float32)[:, ::2])
    with pytest.raises(TypeError, match="csr_matmul_blocked: bw must be a BlockedCSR"):
        S.csr_matmul_blocked((indptr, indices, values), np.ones((3, 5), np.float32))
    with pytest.raises(ValueError, match="csr_matmul_blocked: bw is inconsistent"):
        S.csr_matmul_blocked(bw._replace(ptr=bw.ptr[:-1]), np.ones((3, 5), np.float32))
    # the kernel trusts ptr and the block-local indices: out-of-range ones must not reach it
    for bad in (bw._replace(indices=bw.indices + 2), bw._replace(indices=bw.indices - 1),
                bw._replace(ptr=bw.ptr[::-1].copy()), bw._replace(k_block=0)):
        with pytest.raises(ValueError, match="csr_matmul_blocked: bw is inconsistent"):
            S.csr_matmul_blocked(bad, np.ones((3, 5), np.float32))
    last = bw.indices.copy()
    last[bw.ptr[bw.n_rows]:] = 1  # the last K-block of a 3-column W (k_block 2) holds one column only
    with pytest.raises(ValueError, match="csr_matmul_blocked: bw is inconsistent"):
        S.csr_matmul_blocked(bw._replace(indices=last), np.ones((3, 5), np.float32))
    # the kernel copies only the rows of b listed in ``used``: a list that misses a column with kept
    # entries, is out of order or out of range, or whose split by K-block is off must not reach it
    for used, used_ptr in ((bw.used[1:], bw.used_ptr - np.array([0, 1, 1])), (bw.used[::-1].copy(), bw.used_ptr),
                           (bw.used + 1, bw.used_ptr), (bw.used, bw.used_ptr + 1), (bw.used.astype(np.int64), bw.used_ptr)):
        with pytest.raises(ValueError, match="csr_matmul_blocked: bw is inconsistent"):
            S.csr_matmul_blocked(bw._replace(used=used, used_ptr=used_ptr), np.ones((3, 5), np.float32))


def test_integer_arguments_checked_and_numpy_ints_accepted():
    indptr, indices, values, b = _valid()
    with pytest.raises(ValueError, match="csr_matmul_t: the number of columns"):
        S.csr_matmul_t(indptr, indices, values, np.ones((2, 4), np.float32), 6.5)
    bw = C.csr_block(indptr, indices, values, np.int16(3), k_block=np.uint64(2))
    ref = C.csr_to_dense(indptr, indices, values, 3).astype(np.float64) @ b
    np.testing.assert_allclose(S.csr_matmul_blocked(bw, b), ref, **TOL)
    np.testing.assert_allclose(S.csr_matmul_blocked(bw._replace(k_block=np.uint64(2), n_rows=np.uint8(2)), b),
                               ref, **TOL)


def test_empty_products_return_before_any_blocked_copy():
    """N = 0 or M = 0: an empty result at once, even for a K whose blocked copy would need GBs of tables."""
    indptr, indices, values = np.zeros(3, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32)
    out = S.csr_matmul(indptr, indices, values, np.empty((2**30, 0), np.float32))
    assert out.shape == (2, 0) and out.dtype == np.float32
    out = S.csr_matmul(np.zeros(1, np.int64), indices, values, np.empty((2**30, 0), np.float32))
    assert out.shape == (0, 0)


def test_products_into_a_given_out():
    """out= fills the caller's buffer (every element: it starts as NaN) and returns it; a wrong
    shape, dtype, layout, a read-only buffer or one overlapping an array the kernel reads is refused,
    naming the function."""
    rng = np.random.default_rng(3)
    w = rng.standard_normal((70, 40)).astype(np.float32) * (rng.random((70, 40)) < 0.1)
    indptr, indices, values = C.csr_from_dense(w)
    b = _b(rng, 40, 100)
    a = _b(rng, 70, 100)
    bw = C.csr_block(indptr, indices, values, 40)
    calls = {"csr_matmul": (lambda out: S.csr_matmul(indptr, indices, values, b, out=out), (70, 100), w @ b),
             "csr_matmul_blocked": (lambda out: S.csr_matmul_blocked(bw, b, out=out), (70, 100), w @ b),
             "csr_matmul_t": (lambda out: S.csr_matmul_t(indptr, indices, values, a, 40, out=out), (40, 100), w.T @ a)}
    for name, (call, shape, want) in calls.items():
        out = np.full(shape, np.nan, np.float32)
        assert call(out) is out
        np.testing.assert_allclose(out, want, **TOL)
        read_only = np.empty(shape, np.float32)
        read_only.flags.writeable = False
        for bad, word in ((np.empty((shape[0], 99), np.float32), "out has shape"),
                          (np.empty(shape, np.float64), "out must be float32"),
                          (np.empty(shape[::-1], np.float32).T, "out must be C-contiguous"),
                          (read_only, "out is read-only")):
            with pytest.raises((ValueError, TypeError), match=f"{name}: {word}"):
                call(bad)
    big = _b(rng, 110, 100)
    with pytest.raises(ValueError, match="csr_matmul: out overlaps the dense operand b"):
        S.csr_matmul(indptr, indices, values, big[:40], out=big[30:100])
    want = w @ big[:40]
    np.testing.assert_allclose(S.csr_matmul(indptr, indices, values, big[:40], out=big[40:]), want, **TOL)  # adjacent
    # a BlockedCSR whose arrays share out's memory: the kernel would read what it overwrites
    store = np.zeros(70 * 100, np.float32)
    store[:len(bw.values)] = bw.values
    shared = bw._replace(values=store[:len(bw.values)])
    with pytest.raises(ValueError, match="csr_matmul_blocked: out overlaps bw.values"):
        S.csr_matmul_blocked(shared, b, out=store.reshape(70, 100))
