"""tinycomp_kernels.shift: the JIT shift equals np.roll + masking; the backward is the adjoint."""
import numpy as np
import pytest
from hypothesis import given, strategies as st
from numba import njit

from strategies import arrays
from tinycomp_kernels import shift as sh


def roll_reference(x, shift_y, shift_x):
    """Independent oracle: roll each channel so that out[y, x] = x[(y + shift_y) % H, (x + shift_x) % W],
    then zero the pixels whose source lies outside the image."""
    N, C, H, W = x.shape
    out = np.empty_like(x)
    ys, xs = np.arange(H)[:, None], np.arange(W)[None, :]
    for c in range(C):
        rolled = np.roll(x[:, c], (-int(shift_y[c]), -int(shift_x[c])), axis=(1, 2))  # (N, H, W)
        sy, sx = shift_y[c], shift_x[c]
        inside = (ys + sy >= 0) & (ys + sy < H) & (xs + sx >= 0) & (xs + sx < W)  # (H, W)
        out[:, c] = np.where(inside, rolled, 0)
    return out


@st.composite
def shift_cases(draw, max_side=9):
    N = draw(st.integers(1, 3))
    C = draw(st.integers(1, 12))
    H = draw(st.integers(1, max_side))
    W = draw(st.integers(1, max_side))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    x = draw(arrays(shape=(N, C, H, W), dtype=dtype))
    # offsets up to twice the image size: some channels move entirely out of the image
    lim = 2 * max(H, W)
    shift_y = np.array(draw(st.lists(st.integers(-lim, lim), min_size=C, max_size=C)), dtype=np.int64)
    shift_x = np.array(draw(st.lists(st.integers(-lim, lim), min_size=C, max_size=C)), dtype=np.int64)
    if draw(st.booleans()):  # the ShiftNet pattern, dilation 1 or 2
        k, dilation = draw(st.sampled_from([3, 5])), draw(st.sampled_from([1, 2]))
        shift_y, shift_x = sh.shiftnet_offsets(C, k=k, dilation=dilation)
    return x, shift_y, shift_x


@given(shift_cases())
def test_shift2d_equals_roll_reference(case):
    x, shift_y, shift_x = case
    got = sh.shift2d(x, shift_y, shift_x)
    assert got.dtype == x.dtype and got.shape == x.shape
    np.testing.assert_array_equal(got, roll_reference(x, shift_y, shift_x))
    np.testing.assert_array_equal(sh.shift2d_ref(x, shift_y, shift_x), roll_reference(x, shift_y, shift_x))


def run_loops(x, shift_y, shift_x, by_rows, nchunks, jit=True):
    """One of the two loops (whole-plane masked / per row), serial or in ``nchunks`` chunks."""
    N, C, H, W = x.shape
    table, masks, _ = sh._shift_plan(shift_y, shift_x, H, W, by_rows)
    out = np.full_like(x, np.nan)
    if by_rows:
        fn = sh.shift2d_rows_jit if nchunks > 1 else sh.shift2d_rows_serial_jit
        (fn if jit else sh._shift2d_rows_loops)(out, x, table, nchunks)
    else:
        fn = sh.shift2d_jit if nchunks > 1 else sh.shift2d_serial_jit
        (fn if jit else sh._shift2d_loops)(out, x, table, masks, nchunks)
    return out


@given(shift_cases(), st.booleans(), st.sampled_from([1, 2, 3, 7]))
def test_both_loops_any_chunking(case, by_rows, nchunks):
    # both plane walks on every input, whatever the wrapper's size thresholds pick; more chunks than
    # planes leaves some chunks empty; the first and last planes exercise the clipped reads
    x, shift_y, shift_x = case
    x = np.ascontiguousarray(x)
    expected = roll_reference(x, shift_y, shift_x)
    np.testing.assert_array_equal(run_loops(x, shift_y, shift_x, by_rows, nchunks), expected)


def test_special_values_stay_exact():
    # a select, not a multiply by the mask: NaN / inf shifted out of the image never leak, -0.0 and
    # NaN that stay inside are copied bit for bit, and the fill is +0.0
    x = np.zeros((2, 3, 4, 4), np.float32)
    x[:, :, 0, :] = np.nan      # row 0 leaves the image for shift_y = +1
    x[:, :, :, 3] = np.inf      # column 3 leaves for shift_x = -1
    x[:, :, 2, 1] = -0.0
    x[:, :, 1, 2] = np.nan
    shift_y, shift_x = np.array([1, 1, 0]), np.array([-1, 0, -1])
    for by_rows in (False, True):
        got = run_loops(x, shift_y, shift_x, by_rows, 2)
        ref = roll_reference(x, shift_y, shift_x)
        np.testing.assert_array_equal(got.view(np.uint32), ref.view(np.uint32))
        assert not np.isinf(got[:, 0]).any() and np.isnan(got[:, 0]).sum() == 2


@given(shift_cases())
def test_backward_is_adjoint(case):
    x, shift_y, shift_x = case
    g = np.random.default_rng(0).standard_normal(x.shape).astype(x.dtype)
    lhs = np.vdot(sh.shift2d(x, shift_y, shift_x).astype(np.float64), g.astype(np.float64))
    rhs = np.vdot(x.astype(np.float64), sh.shift2d_backward(g, shift_y, shift_x).astype(np.float64))
    # both sides sum the same products (exact in float64 up to summation order)
    assert abs(lhs - rhs) <= 1e-9 * (1 + np.abs(x).sum() * np.abs(g).max())
    np.testing.assert_array_equal(sh.shift2d_backward(g, shift_y, shift_x), roll_reference(g, -shift_y, -shift_x))


@pytest.mark.parametrize("shape", [(2, 11, 96, 80), (33, 64, 8, 8), (3, 27, 16, 24)])
def test_parallel_path_large_array(shape, monkeypatch):
    # the prange path through the wrapper, per row (96x80) and masked (8x8, 16x24), whatever the
    # tuned serial/parallel threshold is
    monkeypatch.setattr(sh, "_PARALLEL_MIN_BYTES", 1 << 16)
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape).astype(np.float32)
    N, C, H, W = shape
    shift_y, shift_x = sh.shiftnet_offsets(C, k=3, dilation=2)
    shift_y[-1], shift_x[-1] = 200, -3  # one channel shifted out of the image
    assert x.nbytes >= sh._PARALLEL_MIN_BYTES
    np.testing.assert_array_equal(sh.shift2d(x, shift_y, shift_x), roll_reference(x, shift_y, shift_x))
    np.testing.assert_array_equal(sh.shift2d_backward(x, shift_y, shift_x), roll_reference(x, -shift_y, -shift_x))
    out = np.full_like(x, np.nan)
    assert sh.shift2d(x, shift_y, shift_x, out=out) is out
    np.testing.assert_array_equal(out, roll_reference(x, shift_y, shift_x))


def test_loops_run_in_plain_python():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 5, 3, 5)).astype(np.float32)
    # the first plane reads before the array's start (s < 0), the last one past its end (s > 0)
    shift_y = np.array([-1, 1, 0, 7, 1], dtype=np.int64)
    shift_x = np.array([-2, 1, 0, 0, 2], dtype=np.int64)
    for by_rows in (False, True):  # the undecorated functions: plain Python
        for nchunks in (1, 3):
            got = run_loops(x, shift_y, shift_x, by_rows, nchunks, jit=False)
            np.testing.assert_array_equal(got, roll_reference(x, shift_y, shift_x))


_checked_loops = {}


@pytest.mark.parametrize("by_rows", [False, True])
def test_loops_stay_inside_the_arrays(by_rows):
    # reads outside a plane are masked out, so equality tests cannot see reads outside the ARRAY;
    # a bounds-checked compile raises IndexError on any of them. First / last planes shifted both ways.
    if by_rows not in _checked_loops:
        loops = sh._shift2d_rows_loops if by_rows else sh._shift2d_loops
        _checked_loops[by_rows] = njit(boundscheck=True)(loops)
    rng = np.random.default_rng(4)
    cases = [((1, 1, 3, 5), [-1], [-2]), ((1, 1, 3, 5), [1], [2]), ((1, 2, 1, 6), [0, 0], [-5, 5]),
             ((2, 3, 4, 4), [-1, 0, 1], [-1, 0, 1]), ((1, 2, 4, 1), [-3, 3], [0, 0])]
    for _ in range(20):
        N, C, H, W = rng.integers(1, 4), rng.integers(1, 5), rng.integers(1, 7), rng.integers(1, 7)
        cases.append(((N, C, H, W), rng.integers(-H, H + 1, C), rng.integers(-W, W + 1, C)))
    for shape, shift_y, shift_x in cases:
        x = rng.standard_normal(shape).astype(np.float32)
        shift_y, shift_x = np.array(shift_y, dtype=np.int64), np.array(shift_x, dtype=np.int64)
        table, masks, _ = sh._shift_plan(shift_y, shift_x, shape[2], shape[3], by_rows)
        for nchunks in (1, 2):
            out = np.full_like(x, np.nan)
            if by_rows:
                _checked_loops[by_rows](out, x, table, nchunks)
            else:
                _checked_loops[by_rows](out, x, table, masks, nchunks)
            np.testing.assert_array_equal(out, roll_reference(x, shift_y, shift_x))


def test_plan_cache_follows_the_offsets():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 5, 6))
    shift_y, shift_x = np.array([1, 0, -2]), np.array([0, -1, 3])
    first = sh.shift2d(x, shift_y, shift_x)
    np.testing.assert_array_equal(sh.shift2d(x, shift_y, shift_x), first)  # cache hit
    # the same offsets for the backward are a different plan
    np.testing.assert_array_equal(sh.shift2d_backward(x, shift_y, shift_x), roll_reference(x, -shift_y, -shift_x))
    shift_y[0] = -1  # edited in place: new bytes, new key
    np.testing.assert_array_equal(sh.shift2d(x, shift_y, shift_x), roll_reference(x, shift_y, shift_x))
    # same values in another dtype or byte order, and plain lists (never cached)
    expected = roll_reference(x, shift_y, shift_x)
    np.testing.assert_array_equal(sh.shift2d(x, shift_y.astype(np.int32), shift_x), expected)
    swapped = shift_y.astype(">i8")  # other bytes, same values
    np.testing.assert_array_equal(sh.shift2d(x, swapped, shift_x), roll_reference(x, shift_y, shift_x))
    garbled = swapped.view("<i8")  # same bytes, other values
    np.testing.assert_array_equal(sh.shift2d(x, garbled, shift_x), roll_reference(x, garbled, shift_x))
    np.testing.assert_array_equal(sh.shift2d(x, shift_y.tolist(), shift_x.tolist()), expected)
    # a different image size with the same offsets
    y = rng.standard_normal((1, 3, 6, 5))
    np.testing.assert_array_equal(sh.shift2d(y, shift_y, shift_x), roll_reference(y, shift_y, shift_x))
    for wrong in (x[:, :2], np.concatenate([x, x], axis=1)):  # the same arrays, now the wrong length
        sh.shift2d(x, shift_y, shift_x)  # (a hit just before, same H and W)
        with pytest.raises(ValueError, match="shift2d: shift_y"):
            sh.shift2d(wrong, shift_y, shift_x)
    for i in range(sh._PLANS_MAX + 5):  # the cache stays bounded
        sh.shift2d(x, shift_y + i, shift_x)
    assert len(sh._PLANS) <= sh._PLANS_MAX


def test_extreme_offsets_zero_the_channel():
    x = np.ones((1, 4, 3, 4), np.float64)
    big = np.iinfo(np.int64)
    shift_y = np.array([big.max, big.min, 0, 0], dtype=np.int64)
    shift_x = np.array([0, 0, big.min, 1], dtype=np.int64)
    for f, sign in ((sh.shift2d, 1), (sh.shift2d_backward, -1)):
        got = f(x, shift_y, shift_x)
        assert not got[0, :3].any()
        np.testing.assert_array_equal(got[:, 3:], roll_reference(x[:, 3:], [0], [sign]))


@pytest.mark.parametrize("C,k,d", [(9, 3, 1), (20, 3, 1), (18, 3, 2), (7, 3, 1), (50, 5, 1), (0, 3, 1)])
def test_shiftnet_offsets(C, k, d):
    shift_y, shift_x = sh.shiftnet_offsets(C, k=k, dilation=d)
    assert shift_y.shape == shift_x.shape == (C,) and shift_y.dtype.kind == "i"
    m = k * k * (C // (k * k))
    for c in range(C):
        if c < m:
            assert shift_x[c] == d * ((c % k) - k // 2) and shift_y[c] == d * ((c // k) % k - k // 2)
        else:
            assert shift_x[c] == 0 and shift_y[c] == 0
    if m:  # every tap of the k x k (dilated) neighbourhood is used equally often
        pairs, counts = np.unique(np.stack([shift_y[:m], shift_x[:m]], 1), axis=0, return_counts=True)
        assert len(pairs) == k * k and np.all(counts == m // (k * k))
        assert set(np.unique(shift_x[:m])) == {d * (i - k // 2) for i in range(k)}


def test_huge_unsigned_offsets_empty_the_channel():
    """uint64 offsets >= 2**63 must not wrap to negative shifts: any shift that large leaves zeros."""
    x = np.arange(32, dtype=np.float32).reshape(1, 2, 4, 4)
    huge = np.array([2**64 - 1, 1], np.uint64)
    zero = np.zeros(2, np.uint64)
    for f in (sh.shift2d, sh.shift2d_backward):
        y = f(x, huge, zero)
        assert not y[0, 0].any()
        np.testing.assert_array_equal(y[0, 1], f(x, np.array([0, 1]), np.zeros(2, int))[0, 1])


def test_shiftnet_offsets_huge_arguments():
    with pytest.raises(ValueError, match="shiftnet_offsets: k=25, dilation=.* beyond int64"):
        sh.shiftnet_offsets(25, 5 * 5, 2**62)
    with pytest.raises(ValueError, match="shiftnet_offsets: k=4294967296"):
        sh.shiftnet_offsets(4, np.int64(2**32))
    shift_y, shift_x = sh.shiftnet_offsets(np.int8(18), np.int8(3), np.int8(100))  # NumPy ints: no overflow
    assert shift_x.max() == 100 and shift_y.min() == -100


def test_bad_inputs():
    x = np.zeros((1, 3, 4, 4), np.float32)
    z = np.zeros(3, np.int64)
    with pytest.raises(TypeError, match="shift2d: x"):
        sh.shift2d(x.astype(np.int32), z, z)
    with pytest.raises(TypeError, match="shift2d: x"):
        sh.shift2d(x.tolist(), z, z)
    with pytest.raises(ValueError, match="shift2d: x"):
        sh.shift2d(x[0], z, z)
    with pytest.raises(ValueError, match="shift2d: shift_y"):
        sh.shift2d(x, np.zeros(2, np.int64), z)
    with pytest.raises(ValueError, match="shift2d: shift_x"):
        sh.shift2d(x, z, np.zeros((3, 1), np.int64))
    with pytest.raises(TypeError, match="shift2d: shift_x"):
        sh.shift2d(x, z, np.zeros(3) + 0.5)
    with pytest.raises(ValueError, match="shift2d: out"):
        sh.shift2d(x, z, z, out=np.zeros((1, 3, 4, 5), np.float32))
    with pytest.raises(TypeError, match="shift2d: out"):
        sh.shift2d(x, z, z, out=np.zeros((1, 3, 4, 4), np.float64))
    with pytest.raises(ValueError, match="shift2d: out"):
        sh.shift2d(x, z, z, out=x)
    with pytest.raises(ValueError, match="shift2d: out"):
        sh.shift2d(x, z, z, out=np.zeros((1, 3, 4, 8), np.float32)[..., ::2])
    with pytest.raises(ValueError, match="shift2d: out"):
        sh.shift2d(x, z, z, out=x[:, ::-1])
    with pytest.raises(TypeError, match="shift2d: x"):
        sh.shift2d(x.astype(">f4"), z, z)
    shared = np.zeros((2, 3, 4, 4), np.float32)
    with pytest.raises(ValueError, match="shift2d: out"):
        sh.shift2d(shared[:1], z, z, out=shared[:1])  # two views of the same memory
    sh.shift2d(shared[:1], z, z, out=shared[1:])  # views of disjoint halves are fine
    with pytest.raises(TypeError, match="shift2d_backward: shift_x"):
        sh.shift2d_backward(x, z, z.astype(bool))
    with pytest.raises(ValueError, match="shift2d: shift_y"):
        sh.shift2d(np.zeros((0, 3, 4, 4), np.float32), np.zeros(2, np.int64), z)
    with pytest.raises(ValueError, match="shift2d_backward: shift_y"):
        sh.shift2d_backward(x, np.zeros(4, np.int64), z)
    with pytest.raises(TypeError, match="shift2d_backward: dout"):
        sh.shift2d_backward(x.astype(np.float16), z, z)
    with pytest.raises(ValueError, match="shiftnet_offsets: C"):
        sh.shiftnet_offsets(-1)
    with pytest.raises(ValueError, match="shiftnet_offsets: k"):
        sh.shiftnet_offsets(9, k=0)
    with pytest.raises(ValueError, match="shiftnet_offsets: dilation"):
        sh.shiftnet_offsets(9, dilation=0)


def test_noncontiguous_and_empty():
    big = np.arange(2 * 3 * 4 * 6, dtype=np.float32).reshape(2, 3, 4, 6)
    view = big[:, :, :, ::2]  # (2, 3, 4, 3), strided
    shift_y, shift_x = np.array([1, 0, -1]), np.array([0, 1, -1])
    expected = roll_reference(np.ascontiguousarray(view), shift_y, shift_x)
    np.testing.assert_array_equal(sh.shift2d(view, shift_y, shift_x), expected)
    empty = np.zeros((0, 3, 4, 4), np.float32)
    assert sh.shift2d(empty, shift_y, shift_x).shape == empty.shape
