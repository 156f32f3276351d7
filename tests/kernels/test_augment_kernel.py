"""The fused crop + flip + normalise kernel against its NumPy reference, and its wrapper's checks."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tinycomp_kernels.augment import _augment_loops, augment, augment_ref

ONE = np.ones(3, np.float32)
ZERO = np.zeros(3, np.float32)


@st.composite
def augment_cases(draw):
    mode = draw(st.sampled_from(["reflect", "zero"]))
    N = draw(st.integers(0, 4))
    C = draw(st.integers(1, 3))
    H = draw(st.integers(1, 9))
    W = draw(st.integers(1, 9))
    pad = draw(st.integers(0, min(H, W) - 1)) if mode == "reflect" else draw(st.integers(0, 5))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    images = rng.integers(0, 256, size=(N, C, H, W), dtype=np.uint8)
    if draw(st.booleans()) and N:  # a non-contiguous view
        images = np.repeat(images, 2, axis=3)[..., ::2]
    offsets = rng.integers(0, 2 * pad + 1, size=(N, 2))
    flips = rng.integers(0, 2, size=N).astype(bool)
    scale = rng.uniform(0.001, 0.05, C).astype(np.float32)
    shift = rng.uniform(-2, 2, C).astype(np.float32)
    return images, offsets, flips, pad, mode, scale, shift


@given(augment_cases())
def test_kernel_matches_reference(case):
    images, offsets, flips, pad, mode, scale, shift = case
    got = augment(images, offsets, flips, scale, shift, pad=pad, mode=mode)
    want = augment_ref(images, offsets, flips, pad, mode, scale, shift)
    assert got.dtype == np.float32 and got.shape == images.shape
    # float32 affine map of integers 0..255 vs float64 then rounded: within a few float32 ulps
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


@given(augment_cases())
def test_crop_is_a_window_of_the_padded_image(case):
    images, offsets, flips, pad, mode, _, _ = case
    C = images.shape[1]
    got = augment(images, offsets, flips, np.ones(C), np.zeros(C), pad=pad, mode=mode)
    padded = np.pad(images, ((0, 0), (0, 0), (pad, pad), (pad, pad)),
                    mode="reflect" if mode == "reflect" else "constant")
    H, W = images.shape[2:]
    for n in range(images.shape[0]):
        dy, dx = offsets[n]
        window = padded[n, :, dy:dy + H, dx:dx + W]
        np.testing.assert_array_equal(got[n], window[..., ::-1] if flips[n] else window)


def test_flip_twice_is_identity():
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(5, 3, 6, 7), dtype=np.uint8)
    flips = np.ones(5, bool)
    offsets = np.zeros((5, 2), np.int64)
    once = augment(images, offsets, flips, ONE, ZERO, pad=0)
    np.testing.assert_array_equal(once, images[..., ::-1])
    twice = augment(once.astype(np.uint8), offsets, flips, ONE, ZERO, pad=0)
    np.testing.assert_array_equal(twice, images)


def test_reflect_does_not_repeat_the_edge():
    image = np.arange(4, dtype=np.uint8).reshape(1, 1, 1, 4) * np.ones((1, 1, 3, 1), np.uint8)
    # pad 2, window starting at column 0: columns -2, -1, 0, 1 -> 2, 1, 0, 1
    got = augment(image, np.array([[2, 0]]), np.zeros(1, bool), [1.0], [0.0], pad=2)
    np.testing.assert_array_equal(got[0, 0, 0], [2, 1, 0, 1])
    got = augment(image, np.array([[2, 0]]), np.zeros(1, bool), [2.0], [0.5], pad=2, mode="zero")
    np.testing.assert_array_equal(got[0, 0, 0], [0.5, 0.5, 0.5, 2.5])  # padded zeros map to shift


def test_loops_in_plain_python():
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, size=(2, 2, 3, 4), dtype=np.uint8)
    offsets = np.array([[0, 4], [2, 1]], np.int64)
    flips = np.array([1, 0], np.uint8)
    scale = np.array([0.5, 2.0], np.float32)
    shift = np.array([1.0, -3.0], np.float32)
    for mode in ("reflect", "zero"):
        out = np.empty(images.shape, np.float32)
        _augment_loops(out, images, offsets, flips, 2, mode == "reflect", scale, shift)
        np.testing.assert_allclose(out, augment_ref(images, offsets, flips, 2, mode, scale, shift), rtol=1e-6)


def test_out_argument_and_empty_batch():
    images = np.zeros((2, 3, 4, 4), np.uint8)
    out = np.full((2, 3, 4, 4), 7, np.float32)
    res = augment(images, np.zeros((2, 2), int), np.zeros(2, bool), ONE, ZERO + 1, pad=1, out=out)
    assert res is out and np.all(out == 1)
    empty = augment(np.zeros((0, 3, 4, 4), np.uint8), np.zeros((0, 2), int), np.zeros(0, bool), ONE, ZERO)
    assert empty.shape == (0, 3, 4, 4)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(images=np.zeros((2, 3, 4, 4), np.float32)), TypeError, "images must be uint8"),
    (dict(images=[[1]]), TypeError, "numpy array"),
    (dict(images=np.zeros((3, 4, 4), np.uint8)), ValueError, "4-D"),
    (dict(offsets=np.zeros((3, 2), int)), ValueError, "offsets must have shape"),
    (dict(offsets=np.zeros((2, 2), float)), TypeError, "offsets must be integers"),
    (dict(offsets=np.full((2, 2), 3)), ValueError, r"offsets must lie in \[0, 2\]"),
    (dict(offsets=np.full((2, 2), -1)), ValueError, "offsets must lie"),
    (dict(flips=np.zeros(3, bool)), ValueError, "flips must have shape"),
    (dict(flips=np.zeros(2, float)), TypeError, "flips must be booleans"),
    (dict(scale=np.ones(2)), ValueError, "scale and shift"),
    (dict(mode="wrap"), ValueError, "mode must be"),
    (dict(pad=-1), ValueError, "pad must be"),
    (dict(pad=4, offsets=np.zeros((2, 2), int)), ValueError, "reflect padding needs pad < H"),
    (dict(out=np.zeros((2, 3, 4, 4), np.float64)), ValueError, "out must be"),
    (dict(out=np.zeros((2, 3, 4, 8), np.float32)[..., ::2]), ValueError, "out must be"),
])
def test_wrapper_rejects_bad_input(kwargs, error, match):
    args = dict(images=np.zeros((2, 3, 4, 4), np.uint8), offsets=np.zeros((2, 2), int),
                flips=np.zeros(2, bool), scale=ONE, shift=ZERO, pad=1, mode="reflect", out=None)
    args.update(kwargs)
    with pytest.raises(error, match=match):
        augment(**args)
    with pytest.raises(error, match=r"^augment: "):
        augment(**args)
