"""Hypothesis strategies shared by the test suite (the public ones live in ``tinycomp.testing``)."""
import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tinycomp.testing import arrays, conv_configs  # noqa: F401  (re-exported for the tests)


@st.composite
def sign_arrays(draw, shape, zero_fraction=0.1):
    """±1 float32 arrays of ``shape`` with some exact zeros inserted (sign(0) must be +1)."""
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    a = np.where(rng.random(shape) < 0.5, -1.0, 1.0).astype(np.float32)
    a[rng.random(shape) < zero_fraction] = 0.0
    return a


@st.composite
def csr_matrices(draw, max_rows=40, max_cols=40, dtype=np.float32):
    """(dense, mask) pairs: a dense matrix and the sparsity mask, with some all-zero rows."""
    m = draw(st.integers(1, max_rows))
    k = draw(st.integers(1, max_cols))
    density = draw(st.sampled_from([0.0, 0.05, 0.3, 0.7, 1.0]))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    mask = rng.random((m, k)) < density
    mask[rng.random(m) < 0.2] = False  # empty rows
    dense = np.where(mask, rng.standard_normal((m, k)), 0).astype(dtype)
    return dense, mask


def float_arrays(shape, dtype=np.float64, lo=-3.0, hi=3.0):
    return hnp.arrays(dtype, shape, elements=st.floats(lo, hi, allow_nan=False, width=64 if dtype == np.float64 else 32))


def pruned_conv_layer(rng, n, c, o, h, w, k, density):
    """x (n, c, h, w), a k x k weight (o, c, k, k) keeping about ``density`` of its entries, and the
    weight's CSR triple over (o, c*k*k): a pruned layer for the sparse convolution tests."""
    from tinycomp_kernels.csr import csr_from_dense
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    weight = rng.standard_normal((o, c, k, k)).astype(np.float32) * (rng.random((o, c, k, k)) < density)
    return x, weight, csr_from_dense(weight.reshape(o, -1))
