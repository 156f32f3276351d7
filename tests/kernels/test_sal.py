"""tinycomp_kernels.sal: the SAL inference form equals the dense convolution with the rounded mask."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from tinycomp_kernels import sal as L

TOL = dict(rtol=1e-4, atol=1e-4)  # float32 sums of at most C products of O(1) terms

cases = st.fixed_dictionaries(dict(
    N=st.integers(1, 3), C=st.integers(1, 9), O=st.integers(1, 7), H=st.integers(1, 9), W=st.integers(1, 9),
    k=st.sampled_from([1, 3, 3, 5]), pruned=st.sampled_from([0.0, 0.5, 1.0]), seed=st.integers(0, 2**32 - 1)))


def _inputs(cfg):
    rng = np.random.default_rng(cfg["seed"])
    k = cfg["k"]
    x = rng.standard_normal((cfg["N"], cfg["C"], cfg["H"], cfg["W"])).astype(np.float32)
    w = rng.standard_normal((cfg["O"], cfg["C"], k, k)).astype(np.float32)
    tap = rng.integers(0, k * k, (cfg["O"], cfg["C"]))
    tap[rng.random(tap.shape) < cfg["pruned"]] = -1
    return x, w, tap


def _dense_conv_same(x, w):
    """Dense stride-1 'same' conv2d by im2col (explicit patch gathering) + np.matmul, float64."""
    n, c, h, wd = x.shape
    o, _, k, _ = w.shape
    p = k // 2
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (p, p), (p, p)))
    cols = np.stack([xp[:, :, a:a + h, b:b + wd] for a in range(k) for b in range(k)], axis=2)  # (N, C, k*k, H, W)
    cols = cols.reshape(n, c * k * k, h * wd)  # rows ordered (c, a, b) like w.reshape(O, -1)
    return np.matmul(w.reshape(o, -1).astype(np.float64), cols).reshape(n, o, h, wd)


def _rounded_weight(w, tap):
    """W times the one-hot of the kept tap, written independently of sal_dense_weight."""
    out = np.zeros_like(w)
    for o in range(w.shape[0]):
        for c in range(w.shape[1]):
            if tap[o, c] >= 0:
                a, b = divmod(int(tap[o, c]), w.shape[2])
                out[o, c, a, b] = w[o, c, a, b]
    return out


@settings(max_examples=30)
@given(cases)
def test_sal_conv2d_equals_dense_rounded_conv(cfg):
    x, w, tap = _inputs(cfg)
    dense = _dense_conv_same(x, _rounded_weight(w, tap))
    packed = L.sal_pack(w, tap)
    assert len(packed.values) == int((tap >= 0).sum())  # one entry per kept pair
    np.testing.assert_allclose(L.sal_conv2d(x, packed), dense, **TOL)
    np.testing.assert_allclose(L.sal_conv2d_ref(x, w, tap), dense, **TOL)
    np.testing.assert_array_equal(L.sal_dense_weight(w, tap), _rounded_weight(w, tap))


def test_shift_of_a_single_pixel():
    """One pair, one tap: the output is the input pixel moved by (k//2 - a, k//2 - b), times the weight."""
    x = np.zeros((1, 2, 5, 6), np.float32)
    x[0, 1, 2, 3] = 1.0
    w = np.zeros((1, 2, 3, 3), np.float32)
    w[0, 1, 0, 2] = 2.5  # tap (a, b) = (0, 2): y[h, w] = 2.5 * x[h - 1, w + 1]
    tap = np.array([[-1, 2]])
    y = L.sal_conv2d(x, L.sal_pack(w, tap))
    expected = np.zeros((1, 1, 5, 6), np.float32)
    expected[0, 0, 3, 2] = 2.5
    np.testing.assert_array_equal(y, expected)


def test_all_pruned_gives_zeros_and_packing_order():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 4, 4)).astype(np.float32)
    w = rng.standard_normal((2, 3, 3, 3)).astype(np.float32)
    np.testing.assert_array_equal(L.sal_conv2d(x, L.sal_pack(w, -np.ones((2, 3), int))), np.zeros((2, 2, 4, 4)))
    tap = np.array([[8, -1, 0], [4, 4, 4]])
    packed = L.sal_pack(w, tap)
    np.testing.assert_array_equal(packed.indptr, [0, 2, 5])
    np.testing.assert_array_equal(packed.indices, [0 * 3 + 2, 8 * 3 + 0, 4 * 3 + 0, 4 * 3 + 1, 4 * 3 + 2])
    np.testing.assert_array_equal(packed.values, [w[0, 2, 0, 0], w[0, 0, 2, 2], w[1, 0, 1, 1], w[1, 1, 1, 1],
                                                  w[1, 2, 1, 1]])


def test_bad_input():
    w = np.ones((2, 3, 3, 3), np.float32)
    tap = np.zeros((2, 3), int)
    x = np.ones((1, 3, 4, 4), np.float32)
    with pytest.raises(ValueError, match="sal_pack: weight must be .* odd k"):
        L.sal_pack(np.ones((2, 3, 2, 2), np.float32), tap)
    with pytest.raises(ValueError, match="sal_pack: tap_index must have shape"):
        L.sal_pack(w, np.zeros((3, 2), int))
    with pytest.raises(TypeError, match="sal_pack: tap_index must be an integer"):
        L.sal_pack(w, np.zeros((2, 3)))
    with pytest.raises(ValueError, match="sal_pack: tap_index out of range"):
        L.sal_pack(w, np.full((2, 3), 9))
    with pytest.raises(ValueError, match="sal_pack: tap_index out of range"):
        L.sal_pack(w, np.full((2, 3), -2))
    with pytest.raises(TypeError, match="sal_pack: weight must be a float"):
        L.sal_pack(w.astype(np.int32), tap)
    packed = L.sal_pack(w, tap)
    with pytest.raises(ValueError, match="sal_conv2d: x has 2 channels"):
        L.sal_conv2d(np.ones((1, 2, 4, 4), np.float32), packed)
    with pytest.raises(TypeError, match="sal_conv2d: x must be float32"):
        L.sal_conv2d(x.astype(np.float64), packed)
    with pytest.raises(ValueError, match="sal_conv2d: x must be C-contiguous"):
        L.sal_conv2d(np.ones((1, 3, 4, 8), np.float32)[..., ::2], packed)
    with pytest.raises(ValueError, match="sal_conv2d: x must be a 4-D"):
        L.sal_conv2d(np.ones((3, 4, 4), np.float32), packed)
    with pytest.raises(TypeError, match="sal_conv2d: packed"):
        L.sal_conv2d(x, tuple(packed)[:3])
    with pytest.raises(ValueError, match="sal_conv2d: packed indices out of range"):
        L.sal_conv2d(x, packed._replace(indices=packed.indices + 100))
    with pytest.raises(ValueError, match="sal_conv2d: packed is not a consistent"):
        L.sal_conv2d(x, packed._replace(indptr=packed.indptr[:-1]))
    packed3 = L.sal_pack(np.ones((3, 3, 3, 3), np.float32), np.zeros((3, 3), int))
    nnz = len(packed3.indices)  # the differences of this indptr wrap around: np.diff saw no decrease
    wrapping = np.array([0, 2**62, nnz - 2**63 + 1, nnz], np.int64)
    for bad in (packed3._replace(indptr=wrapping), packed._replace(indices=packed.indices.reshape(1, -1)),
                packed._replace(values=list(packed.values)),
                packed._replace(indptr=np.repeat(packed.indptr, 2)[::2])):  # not contiguous
        with pytest.raises(ValueError, match="sal_conv2d: packed is not a consistent"):
            L.sal_conv2d(x, bad)
    with pytest.raises(ValueError, match="sal_conv2d: packed in_channels"):
        L.sal_conv2d(x, packed._replace(in_channels=3.0))
    with pytest.raises(ValueError, match="sal_conv2d: packed is not a consistent"):
        L.sal_conv2d(x, packed._replace(values=packed.values.astype(np.float64)))
    for k in (-1, 0, 2, 3.0):  # k sets the padding and the tap offsets the kernel reads at
        with pytest.raises(ValueError, match="sal_conv2d: packed kernel_size must be a positive odd int"):
            L.sal_conv2d(x, packed._replace(kernel_size=k))


def test_a_plan_gives_the_bits_of_sal_conv2d_and_refuses_another_input_size():
    rng = np.random.default_rng(5)
    w = rng.standard_normal((6, 5, 3, 3)).astype(np.float32)
    packed = L.sal_pack(w, rng.integers(-1, 9, (6, 5)))
    plan = L.SalPlan(packed, (12, 10))
    for n in (1, 3):
        x = rng.standard_normal((n, 5, 12, 10)).astype(np.float32)
        np.testing.assert_array_equal(plan(x), L.sal_conv2d(x, packed))
    with pytest.raises(ValueError, match="sal_conv2d: x is 10x12, the plan was made for 12x10"):
        plan(np.ones((1, 5, 10, 12), np.float32))
    with pytest.raises(TypeError, match="sal_conv2d: packed must be the SalPacked"):
        L.SalPlan(tuple(packed), (12, 10))
