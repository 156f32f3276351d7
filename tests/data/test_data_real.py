"""The real CIFAR-10 copy (found through TINYCOMP_DATA): record counts, classes, statistics.

Skips with the reason when no data folder is found; fails instead under TINYCOMP_REQUIRE_DATA=1.
"""
import numpy as np
import pytest

from tinycomp.data import BatchLoader, Normalize, load_cifar, train_val_split

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cifar10(cifar10_root):
    return load_cifar("cifar10", root=cifar10_root, download=False)


def test_counts_and_classes(cifar10):
    assert cifar10.train_images.shape == (50_000, 3, 32, 32) and cifar10.train_images.dtype == np.uint8
    assert cifar10.test_images.shape == (10_000, 3, 32, 32)
    np.testing.assert_array_equal(np.bincount(cifar10.train_labels, minlength=10), [5000] * 10)
    np.testing.assert_array_equal(np.bincount(cifar10.test_labels, minlength=10), [1000] * 10)
    assert cifar10.classes == ["airplane", "automobile", "bird", "cat", "deer",
                               "dog", "frog", "horse", "ship", "truck"]


def test_statistics_look_like_cifar(cifar10):
    norm = Normalize.from_images(cifar10.train_images)
    # CIFAR-10's well-known per-channel means (~0.49, 0.48, 0.45) and stds (~0.25, 0.24, 0.26)
    np.testing.assert_allclose(norm.mean, [0.491, 0.482, 0.447], atol=0.01)
    np.testing.assert_allclose(norm.std, [0.247, 0.243, 0.261], atol=0.01)
    train_idx, _ = train_val_split(50_000, val=5_000, seed=0)
    loader = BatchLoader(cifar10.train_images, cifar10.train_labels, 128, indices=train_idx,
                         shuffle=True, drop_last=True, augment=True, normalize=norm)
    assert len(loader) == 45_000 // 128
    x, y = loader.batch(0, 0)
    assert x.shape == (128, 3, 32, 32) and abs(float(x.mean())) < 0.3 and 0.7 < float(x.std()) < 1.3
