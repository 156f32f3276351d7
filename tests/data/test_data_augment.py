"""Augmentation and normalisation of uint8 batches (tinycomp.data.augment)."""
import numpy as np
import pytest

from tinycomp.data import Normalize, augment_batch, channel_stats, draw_params


def images_(n=64, seed=0):
    rng = np.random.default_rng(seed)
    # channels with different means and spreads, so per-channel statistics matter
    base = rng.normal([60, 128, 200], [10, 50, 20], size=(n, 8, 8, 3)).transpose(0, 3, 1, 2)
    return np.clip(base, 0, 255).astype(np.uint8)


def test_channel_stats_exact():
    x = images_()
    mean, std = channel_stats(x, chunk=10)  # chunking must not change the result
    ref = x.astype(np.float64) / 255
    np.testing.assert_allclose(mean, ref.mean(axis=(0, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(std, ref.std(axis=(0, 2, 3)), rtol=1e-10)
    idx = np.array([3, 1, 40])
    m2, s2 = channel_stats(x, idx)
    np.testing.assert_allclose(m2, ref[idx].mean(axis=(0, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(s2, ref[idx].std(axis=(0, 2, 3)), rtol=1e-10)
    with pytest.raises(ValueError, match="uint8"):
        channel_stats(x.astype(np.float32))
    with pytest.raises(ValueError, match="no images"):
        channel_stats(x, np.zeros(0, int))


def test_normalisation_gives_zero_mean_unit_std():
    x = images_()
    norm = Normalize.from_images(x)
    y = norm(x)
    assert y.dtype == np.float32 and y.shape == x.shape
    np.testing.assert_allclose(y.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(y.std(axis=(0, 2, 3)), 1, atol=1e-5)
    np.testing.assert_allclose(y, (x / 255 - norm.mean[:, None, None]) / norm.std[:, None, None], atol=1e-5)


def test_normalize_checks_and_identity():
    x = images_(4)
    np.testing.assert_allclose(Normalize.identity()(x), x / 255, rtol=1e-6)
    with pytest.raises(ValueError, match="std positive"):
        Normalize([0, 0, 0], [1, 0, 1])
    with pytest.raises(ValueError, match="equal shapes"):
        Normalize([0, 0], [1, 1, 1])
    with pytest.raises(ValueError, match="channels"):
        augment_batch(x, None, normalize=Normalize([0], [1]))
    assert set(Normalize([0.1] * 3, [0.2] * 3).state_dict()) == {"mean", "std"}


def test_draws_are_documented_and_reproducible():
    offsets, flips = draw_params(np.random.default_rng(5), 100, pad=4)
    rng = np.random.default_rng(5)
    np.testing.assert_array_equal(offsets, rng.integers(0, 9, size=(100, 2)))
    np.testing.assert_array_equal(flips, rng.integers(0, 2, size=100).astype(bool))
    assert offsets.min() == 0 and offsets.max() == 8 and 20 < flips.sum() < 80
    off0, flips0 = draw_params(np.random.default_rng(5), 10, pad=0, flip=False)
    assert not off0.any() and not flips0.any()


def test_augment_batch_matches_its_draws():
    x = images_(16)
    norm = Normalize.from_images(x)
    out = augment_batch(x, np.random.default_rng(7), normalize=norm, pad=2, mode="zero")
    offsets, flips = draw_params(np.random.default_rng(7), 16, pad=2)
    padded = np.pad(x, ((0, 0), (0, 0), (2, 2), (2, 2)))
    for n in range(16):
        dy, dx = offsets[n]
        window = padded[n, :, dy:dy + 8, dx:dx + 8]
        window = window[..., ::-1] if flips[n] else window
        np.testing.assert_allclose(out[n], norm(window[None])[0], atol=1e-6)
    # crop stays inside the padded image, so every value is an image or padding value
    assert np.isin(np.round(out * norm.std[:, None, None].astype(np.float32) * 255
                            + norm.mean[:, None, None].astype(np.float32) * 255),
                   np.arange(256)).all()


def test_no_rng_means_centre_crop_no_flip():
    x = images_(8)
    np.testing.assert_allclose(augment_batch(x, None, pad=4), x / 255, rtol=1e-6)
    a = augment_batch(x, np.random.default_rng(0))
    b = augment_batch(x, np.random.default_rng(0))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, augment_batch(x, np.random.default_rng(1)))
    with pytest.raises(ValueError, match="mode"):
        augment_batch(x, None, mode="edge")
