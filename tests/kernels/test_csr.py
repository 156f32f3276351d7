"""tinycomp_kernels.csr: the CSR format's construction, K-blocked form, transpose and checks."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

from strategies import csr_matrices
from tinycomp_kernels import csr as C, sparse_conv as V, sparse_matmul as S


def test_csr_from_dense_layout_and_dtypes():
    w = np.array([[0, 2, 0, 3], [0, 0, 0, 0], [5, 0, 0, -1]], dtype=np.float32)
    indptr, indices, values = C.csr_from_dense(w)
    assert indptr.dtype == np.int64 and indices.dtype == np.int32 and values.dtype == np.float32
    np.testing.assert_array_equal(indptr, [0, 2, 2, 4])
    np.testing.assert_array_equal(indices, [1, 3, 0, 3])
    np.testing.assert_array_equal(values, [2, 3, 5, -1])
    mask = w != 0
    mask[1, 2] = True  # a kept weight that is exactly zero keeps its slot
    indptr, indices, values = C.csr_from_dense(w, mask=mask)
    np.testing.assert_array_equal(indptr, [0, 2, 3, 5])
    np.testing.assert_array_equal(C.csr_to_dense(indptr, indices, values, 4), w)


@given(csr_matrices(max_rows=20, max_cols=20), st.integers(0, 2**32 - 1))
def test_csr_transpose_roundtrip(wm, seed):
    w, mask = wm
    indptr, indices, values = C.csr_from_dense(w, mask=mask)
    it, jt, vt, perm = C.csr_transpose(indptr, indices, values, w.shape[1])
    np.testing.assert_array_equal(C.csr_to_dense(it, jt, vt, w.shape[0]), w.T)
    np.testing.assert_array_equal(vt, values[perm])
    assert np.all(np.diff(it) >= 0) and it[-1] == len(values)


def test_loops_run_in_plain_python():
    w = np.array([[1.5, 0, -2, 0, 0, 1], [0, 0, 0, 0, 0, 0], [0, 3, 0, 1, 1, 0]], dtype=np.float32)
    indptr, indices, values = C.csr_from_dense(w)
    bw = C.csr_block(indptr, indices, values, 6, k_block=4)  # two K-blocks, the second partial
    assert C._blocked_consistent_loops(bw.ptr, bw.indices, bw.used, bw.used_ptr, 3, 6, 4, 2)
    assert not C._blocked_consistent_loops(bw.ptr, bw.indices, bw.used[1:], bw.used_ptr, 3, 6, 4, 2)
    ptr, ib, vb, perm = np.empty(2 * 3 + 1, np.int64), np.empty_like(indices), np.empty_like(values), \
        np.empty(len(values), np.int64)
    C._csr_block_loops(ptr, ib, vb, perm, indptr, indices, values, 4)
    np.testing.assert_array_equal(ptr, bw.ptr)
    np.testing.assert_array_equal(vb, values[perm])
    no_perm = C.csr_block_unchecked(indptr, indices, values, 6, 4, with_perm=False)  # csr_matmul's copy: same order
    assert no_perm.perm.size == 0
    for got, want in zip(no_perm[:3], bw[:3]):
        np.testing.assert_array_equal(got, want)
    it, jt, perm = np.empty(7, np.int64), np.empty(len(values), np.int32), np.empty(len(values), np.int64)
    C._csr_transpose_loops(it, jt, perm, indptr, indices)
    np.testing.assert_array_equal(C.csr_to_dense(it, jt, values[perm], 3), w.T)


def test_format_bad_input():
    indptr, indices, values = C.csr_from_dense(np.array([[1, 0, 2], [0, 0, 3]], dtype=np.float32))
    with pytest.raises(ValueError, match="csr_transpose: indices out of range"):
        C.csr_transpose(indptr, indices, values, 1)
    with pytest.raises(ValueError, match="csr_block: indices out of range"):
        C.csr_block(indptr, indices, values, 2)
    with pytest.raises(ValueError, match="csr_block: k_block"):
        C.csr_block(indptr, indices, values, 3, k_block=0)
    for bad in (-5, None, 6.5, "3", True):
        with pytest.raises(ValueError, match="csr_block: the number of columns"):
            C.csr_block(indptr, indices, values, bad)
    w = np.ones((3, 2, 3, 3), np.float32)
    with pytest.raises(ValueError, match="csr_from_dense: w must be 2-D"):
        C.csr_from_dense(w)
    with pytest.raises(ValueError, match="csr_from_dense: mask"):
        C.csr_from_dense(w.reshape(3, -1), mask=np.ones((3, 2), bool))


# an indptr whose differences wrap around: 2**62 - 0 fine, then (-2**63 + 2) - 2**62 overflows to a
# positive int64; with indptr[0] == 0 and indptr[-1] == nnz it passed an np.diff test and crashed
WRAPPING_INDPTR = np.array([0, 2**62, -2**63 + 2, 1], np.int64)


def test_non_monotone_indptr_that_np_diff_misses_is_refused():
    i1, v1, b = np.zeros(1, np.int32), np.ones(1, np.float32), np.ones((1, 8), np.float32)
    unsigned = np.array([0, 1000, 5], np.uint64)  # a decrease wraps to a huge positive difference
    i5, v5 = np.zeros(5, np.int32), np.ones(5, np.float32)
    cases = [
        ("csr_matmul", lambda: S.csr_matmul(WRAPPING_INDPTR, i1, v1, b)),
        ("csr_matmul", lambda: S.csr_matmul(unsigned, i5, v5, b)),
        ("csr_sddmm", lambda: S.csr_sddmm(unsigned.astype(np.uint8), i5, np.ones((2, 8), np.float32), b)),
        ("csr_transpose", lambda: C.csr_transpose(WRAPPING_INDPTR, i1, v1, 1)),
        ("csr_matmul_t", lambda: S.csr_matmul_t(WRAPPING_INDPTR, i1, v1, np.ones((3, 8), np.float32), 1)),
        ("csr_block", lambda: C.csr_block(np.array([0, 5, 2, 5], np.uint64), i5, v5, 1)),
        ("sparse_conv2d", lambda: V.sparse_conv2d(np.ones((1, 1, 3, 3), np.float32), unsigned, i5, v5,
                                                  (2, 1, 1, 1))),
    ]
    for name, call in cases:
        with pytest.raises(ValueError, match=f"{name}: indptr must be non-decreasing"):
            call()
    bw = C.BlockedCSR(WRAPPING_INDPTR, i1, v1, np.zeros(1, np.int64), np.zeros(1, np.int32), np.array([0, 1]), 3, 1, 1)
    with pytest.raises(ValueError, match="csr_matmul_blocked: bw is inconsistent"):
        S.csr_matmul_blocked(bw, b)
