"""Batching: seeded shuffling, validation split, subsets, bitwise-resumable streams."""
import numpy as np
import pytest

from tinycomp.data import BatchLoader, Normalize, train_val_split


def dataset(n=50, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 3, 8, 8), dtype=np.uint8)
    return images, np.arange(n)  # label = image index, to check pairing


def run(loader):
    return [(x.copy(), y.copy()) for x, y in loader]


def assert_same(a, b):
    assert len(a) == len(b)
    for (xa, ya), (xb, yb) in zip(a, b):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)


def make(images, labels, **kw):
    args = dict(batch_size=8, shuffle=True, seed=3, augment=True, pad=2)
    args.update(kw)
    return BatchLoader(images, labels, **args)


def test_split_is_fixed_for_a_seed_and_partitions():
    tr, va = train_val_split(100, val=20, seed=4)
    assert va.size == 20 and tr.size == 80
    np.testing.assert_array_equal(np.sort(np.concatenate([tr, va])), np.arange(100))
    assert np.all(np.diff(tr) > 0) and np.all(np.diff(va) > 0)
    tr2, va2 = train_val_split(100, val=20, seed=4)
    np.testing.assert_array_equal(va, va2)
    np.testing.assert_array_equal(tr, tr2)
    assert not np.array_equal(va, train_val_split(100, val=20, seed=5)[1])
    assert not np.array_equal(va, np.arange(80, 100))  # a permutation, not the tail of the files


def test_subset_is_first_images_and_leaves_val_alone():
    tr, va = train_val_split(100, val=0, subset=30)
    np.testing.assert_array_equal(tr, np.arange(30))
    assert va.size == 0
    full_tr, full_va = train_val_split(100, val=20, seed=1)
    tr, va = train_val_split(100, val=20, seed=1, subset=10)
    np.testing.assert_array_equal(va, full_va)
    np.testing.assert_array_equal(tr, full_tr[:10])
    for bad in (dict(val=100), dict(val=-1), dict(val=20, subset=81), dict(subset=0), dict(seed=-1)):
        with pytest.raises(ValueError):
            train_val_split(100, **bad)


def test_epoch_visits_every_image_once_with_labels_paired():
    images, labels = dataset(50)
    loader = make(images, labels, augment=False)
    batches = run(loader)
    assert len(loader) == len(batches) == 7 and batches[-1][1].size == 2
    seen = np.concatenate([y for _, y in batches])
    np.testing.assert_array_equal(np.sort(seen), np.arange(50))
    assert not np.array_equal(seen, np.arange(50))  # shuffled
    for x, y in batches:
        np.testing.assert_allclose(x, images[y] / 255, rtol=1e-6)
        assert x.dtype == np.float32 and y.dtype == np.int64
    assert loader.state() == {"epoch": 1, "batch": 0}


def test_drop_last_indices_and_no_shuffle():
    images, labels = dataset(50)
    idx = np.arange(10, 40)
    loader = make(images, labels, indices=idx, drop_last=True, shuffle=False, augment=False)
    batches = run(loader)
    assert len(loader) == len(batches) == 3
    np.testing.assert_array_equal(np.concatenate([y for _, y in batches]), np.arange(10, 34))
    empty = make(images, labels, indices=idx[:5], drop_last=True)
    assert len(empty) == 0 and run(empty) == [] and empty.state() == {"epoch": 1, "batch": 0}


def test_same_seed_same_batches_other_seed_differs():
    images, labels = dataset()
    a, b = make(images, labels), make(images, labels)
    for _ in range(2):  # two epochs
        assert_same(run(a), run(b))
    c = run(make(images, labels, seed=4))
    assert not np.array_equal(c[0][1], run(make(images, labels))[0][1])
    epochs = [np.concatenate([y for _, y in run(a)]) for _ in range(2)]
    assert not np.array_equal(epochs[0], epochs[1])  # a new order every epoch


def test_epoch_order_does_not_depend_on_batches_consumed():
    images, labels = dataset()
    a = make(images, labels)
    for i, _ in enumerate(a):  # epoch 0 partly consumed, then epoch 1 from a fresh position
        if i == 2:
            break
    a.set_epoch(1)
    b = make(images, labels)
    run(b)  # epoch 0 fully consumed
    assert_same(run(a), run(b))


def test_resume_mid_epoch_is_bitwise_the_tail():
    images, labels = dataset(60)
    norm = Normalize.from_images(images)
    whole = make(images, labels, normalize=norm, padding_mode="reflect")
    whole.set_epoch(2)
    full = run(whole)
    for k in (0, 3, len(full) - 1):
        resumed = make(images, labels, normalize=norm)
        resumed.load_state({"epoch": 2, "batch": k})
        assert_same(run(resumed), full[k:])


def test_state_after_interruption_restores_the_stream():
    images, labels = dataset(60)
    first = make(images, labels, drop_last=True)
    run(first)
    taken = []
    for x, y in first:  # epoch 1, interrupted after 3 batches
        taken.append((x.copy(), y.copy()))
        if len(taken) == 3:
            break
    state = first.state()
    assert state == {"epoch": 1, "batch": 3}
    rest = make(images, labels, drop_last=True)
    rest.load_state(state)
    reference = make(images, labels, drop_last=True)
    reference.set_epoch(1)
    assert_same(taken + run(rest), run(reference))
    assert rest.state() == {"epoch": 2, "batch": 0}


def test_batch_access_and_end_of_epoch_position():
    images, labels = dataset(20)
    loader = make(images, labels)
    x, y = loader.batch(5, 1)
    assert x.shape == (8, 3, 8, 8) and y.shape == (8,)
    with pytest.raises(IndexError):
        loader.batch(0, 3)
    loader.set_epoch(4, start_batch=len(loader))
    assert loader.state() == {"epoch": 5, "batch": 0}
    with pytest.raises(ValueError, match="cannot resume"):
        loader.set_epoch(0, start_batch=4)


@pytest.mark.parametrize("kwargs, match", [
    (dict(images=np.zeros((4, 3, 8, 8), np.float32)), "images must be uint8"),
    (dict(labels=np.arange(5)), "labels must be integers"),
    (dict(labels=np.zeros(4, np.float32)), "labels must be integers"),
    (dict(batch_size=0), "batch_size"),
    (dict(indices=[0, 4]), "indices"),
    (dict(seed=-2), "seed"),
    (dict(padding_mode="wrap"), "padding_mode"),
])
def test_bad_arguments(kwargs, match):
    args = dict(images=np.zeros((4, 3, 8, 8), np.uint8), labels=np.arange(4), batch_size=2)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        BatchLoader(**args)
