"""tinycomp_kernels.shift: the JIT shift equals np.roll + masking; the backward is the adjoint."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

from strategies import arrays
from tinycomp_kernels import shift as sh


def roll_reference(x, dy, dx):
    """Independent oracle: roll each channel so that out[y, x] = x[(y + dy) % H, (x + dx) % W],
    then zero the pixels whose source lies outside the image."""
    N, C, H, W = x.shape
    out = np.empty_like(x)
    ys, xs = np.arange(H)[:, None], np.arange(W)[None, :]
    for c in range(C):
        rolled = np.roll(x[:, c], (-int(dy[c]), -int(dx[c])), axis=(1, 2))  # (N, H, W)
        inside = (ys + dy[c] >= 0) & (ys + dy[c] < H) & (xs + dx[c] >= 0) & (xs + dx[c] < W)  # (H, W)
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
    dy = np.array(draw(st.lists(st.integers(-lim, lim), min_size=C, max_size=C)), dtype=np.int64)
    dx = np.array(draw(st.lists(st.integers(-lim, lim), min_size=C, max_size=C)), dtype=np.int64)
    if draw(st.booleans()):  # the ShiftNet pattern, dilation 1 or 2
        dy, dx = sh.shiftnet_offsets(C, k=draw(st.sampled_from([3, 5])), dilation=draw(st.sampled_from([1, 2])))
    return x, dy, dx


@given(shift_cases())
def test_shift2d_equals_roll_reference(case):
    x, dy, dx = case
    got = sh.shift2d(x, dy, dx)
    assert got.dtype == x.dtype and got.shape == x.shape
    np.testing.assert_array_equal(got, roll_reference(x, dy, dx))
    np.testing.assert_array_equal(sh.shift2d_ref(x, dy, dx), roll_reference(x, dy, dx))


@given(shift_cases())
def test_backward_is_adjoint(case):
    x, dy, dx = case
    g = np.random.default_rng(0).standard_normal(x.shape).astype(x.dtype)
    lhs = np.vdot(sh.shift2d(x, dy, dx).astype(np.float64), g.astype(np.float64))
    rhs = np.vdot(x.astype(np.float64), sh.shift2d_backward(g, dy, dx).astype(np.float64))
    # both sides sum the same products (exact in float64 up to summation order)
    assert abs(lhs - rhs) <= 1e-9 * (1 + np.abs(x).sum() * np.abs(g).max())
    np.testing.assert_array_equal(sh.shift2d_backward(g, dy, dx), roll_reference(g, -dy, -dx))


def test_parallel_path_large_array():
    # above the serial/parallel threshold (512 KiB): the prange path
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 11, 96, 80)).astype(np.float32)
    dy, dx = sh.shiftnet_offsets(11, k=3, dilation=2)
    dy[-1], dx[-1] = 200, -3  # one channel shifted out of the image
    assert x.nbytes >= sh._PARALLEL_MIN_BYTES
    np.testing.assert_array_equal(sh.shift2d(x, dy, dx), roll_reference(x, dy, dx))
    out = np.full_like(x, np.nan)
    assert sh.shift2d(x, dy, dx, out=out) is out
    np.testing.assert_array_equal(out, roll_reference(x, dy, dx))


def test_loops_run_in_plain_python():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 4, 3, 5)).astype(np.float32)
    dy = np.array([1, -1, 0, 7], dtype=np.int64)
    dx = np.array([-2, 1, 0, 0], dtype=np.int64)
    out = np.full_like(x, np.nan)
    sh._shift2d_loops(out, x, dy, dx)  # the undecorated function: plain Python
    np.testing.assert_array_equal(out, roll_reference(x, dy, dx))


@pytest.mark.parametrize("C,k,d", [(9, 3, 1), (20, 3, 1), (18, 3, 2), (7, 3, 1), (50, 5, 1), (0, 3, 1)])
def test_shiftnet_offsets(C, k, d):
    dy, dx = sh.shiftnet_offsets(C, k=k, dilation=d)
    assert dy.shape == dx.shape == (C,) and dy.dtype.kind == "i"
    m = k * k * (C // (k * k))
    for c in range(C):
        if c < m:
            assert dx[c] == d * ((c % k) - k // 2) and dy[c] == d * ((c // k) % k - k // 2)
        else:
            assert dx[c] == 0 and dy[c] == 0
    if m:  # every tap of the k x k (dilated) neighbourhood is used equally often
        pairs, counts = np.unique(np.stack([dy[:m], dx[:m]], 1), axis=0, return_counts=True)
        assert len(pairs) == k * k and np.all(counts == m // (k * k))
        assert set(np.unique(dx[:m])) == {d * (i - k // 2) for i in range(k)}


def test_bad_inputs():
    x = np.zeros((1, 3, 4, 4), np.float32)
    z = np.zeros(3, np.int64)
    with pytest.raises(TypeError, match="shift2d: x"):
        sh.shift2d(x.astype(np.int32), z, z)
    with pytest.raises(TypeError, match="shift2d: x"):
        sh.shift2d(x.tolist(), z, z)
    with pytest.raises(ValueError, match="shift2d: x"):
        sh.shift2d(x[0], z, z)
    with pytest.raises(ValueError, match="shift2d: dy"):
        sh.shift2d(x, np.zeros(2, np.int64), z)
    with pytest.raises(ValueError, match="shift2d: dx"):
        sh.shift2d(x, z, np.zeros((3, 1), np.int64))
    with pytest.raises(TypeError, match="shift2d: dx"):
        sh.shift2d(x, z, np.zeros(3) + 0.5)
    with pytest.raises(ValueError, match="shift2d: out"):
        sh.shift2d(x, z, z, out=np.zeros((1, 3, 4, 5), np.float32))
    with pytest.raises(TypeError, match="shift2d: out"):
        sh.shift2d(x, z, z, out=np.zeros((1, 3, 4, 4), np.float64))
    with pytest.raises(ValueError, match="shift2d: out"):
        sh.shift2d(x, z, z, out=x)
    with pytest.raises(ValueError, match="shift2d_backward: dy"):
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
    dy, dx = np.array([1, 0, -1]), np.array([0, 1, -1])
    np.testing.assert_array_equal(sh.shift2d(view, dy, dx), roll_reference(np.ascontiguousarray(view), dy, dx))
    empty = np.zeros((0, 3, 4, 4), np.float32)
    assert sh.shift2d(empty, dy, dx).shape == empty.shape
