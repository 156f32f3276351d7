"""Batches for training and evaluation: seeded shuffling, validation split, resumable streams.

Determinism: every random choice is drawn from its own ``np.random.Generator`` built from a
``SeedSequence`` of integers, never from a shared, advancing generator:

    validation split   SeedSequence([seed, 2])                    -> permutation of the N images
    epoch order        SeedSequence([seed, 0, epoch])             -> permutation of the pool
    augmentation       SeedSequence([seed, 1, epoch, batch])      -> draws of tinycomp.data.augment

So batch ``b`` of epoch ``e`` is a pure function of (data, seed, e, b, settings): a stream
resumed at (e, b) is bitwise the stream that was interrupted there, however many batches were
consumed before, and the threads count does not enter (the augmentation kernel is elementwise).

Split (``train_val_split``): the validation set is the last ``val`` entries of a seeded
permutation of all training images, so it depends only on (seed, val) and never on ``subset``;
``subset=K`` then keeps the first K remaining training images in file order (with ``val=0``,
exactly the first K images). Both index arrays are returned sorted.
"""
import numpy as np
from tinycomp_kernels.checks import is_int

from .augment import Normalize, augment_batch

_SHUFFLE, _AUGMENT, _SPLIT = 0, 1, 2


def _check_seed(seed, where):
    if not is_int(seed) or seed < 0:
        raise ValueError(f"{where}: seed must be a non-negative int, got {seed!r}")
    return int(seed)


def _rng(*key):
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(k) for k in key])))


def train_val_split(num_images, val=0, seed=0, subset=None):
    """Indices ``(train_idx, val_idx)`` (sorted int64) of a training set of ``num_images``.

    ``val``: number of images held out for validation (last ``val`` of a permutation seeded by
    ``seed``). ``subset``: keep only the first ``subset`` of the remaining training images.
    """
    seed = _check_seed(seed, "train_val_split")
    val = int(val or 0)
    if not 0 <= val < num_images:
        raise ValueError(f"val must be in [0, {num_images}) for {num_images} training images, got {val}")
    if val:
        perm = _rng(seed, _SPLIT).permutation(num_images)
        val_idx = np.sort(perm[num_images - val:])
        train_idx = np.sort(perm[:num_images - val])
    else:
        val_idx = np.zeros(0, dtype=np.int64)
        train_idx = np.arange(num_images, dtype=np.int64)
    if subset is not None:
        subset = int(subset)
        if not 0 < subset <= train_idx.size:
            raise ValueError(f"subset must be in [1, {train_idx.size}] (training images left after "
                             f"holding out {val} for validation), got {subset}")
        train_idx = train_idx[:subset]
    return train_idx.astype(np.int64), val_idx.astype(np.int64)


class BatchLoader:
    """Iterate over ``(x float32 (B, C, H, W), y int64 (B,))`` batches of uint8 images.

    ``images`` uint8 (N, C, H, W) and ``labels`` (N,) integers; ``indices`` restricts the loader
    to a pool of images (a split from ``train_val_split``; default all). ``shuffle``: a new
    seeded order every epoch (else pool order). ``augment``: random ``pad``-pixel crop
    (``padding_mode`` "reflect" or "zero") and horizontal flip (``flip``). ``normalize``: a
    ``Normalize`` (default pixel / 255). ``drop_last``: skip the final partial batch.

    Iterating runs the rest of the current epoch, from the current position, and leaves the
    position at the start of the next epoch. ``state()`` is the position of the next batch,
    ``{"epoch": e, "batch": b}``: save it with a checkpoint taken after batch b - 1 was used, and
    ``load_state`` it to resume. ``batch(e, b)`` returns any batch directly.
    """

    def __init__(self, images, labels, batch_size=128, *, indices=None, shuffle=False, seed=0,
                 drop_last=False, augment=False, pad=4, flip=True, padding_mode="reflect",
                 normalize=None):
        images = np.asarray(images)
        labels = np.asarray(labels)
        if images.dtype != np.uint8 or images.ndim != 4:
            raise ValueError(f"BatchLoader: images must be uint8 (N, C, H, W), got {images.dtype} {images.shape}")
        if labels.ndim != 1 or labels.shape[0] != images.shape[0] or labels.dtype.kind not in "iu":
            raise ValueError(f"BatchLoader: labels must be integers of shape ({images.shape[0]},), "
                             f"got {labels.dtype} {labels.shape}")
        if not is_int(batch_size) or batch_size < 1:
            raise ValueError(f"BatchLoader: batch_size must be a positive int, got {batch_size!r}")
        if padding_mode not in ("reflect", "zero"):
            raise ValueError(f"BatchLoader: padding_mode must be 'reflect' or 'zero', got {padding_mode!r}")
        if indices is None:
            indices = np.arange(images.shape[0], dtype=np.int64)
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        if indices.size and (indices.min() < 0 or indices.max() >= images.shape[0]):
            raise ValueError(f"BatchLoader: indices must lie in [0, {images.shape[0]})")
        self.images = images
        self.labels = labels.astype(np.int64, copy=False)
        self.indices = indices
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.seed = _check_seed(seed, "BatchLoader")
        self.drop_last = bool(drop_last)
        self.augment = bool(augment)
        self.pad = int(pad) if self.augment else 0
        self.flip = bool(flip) and self.augment
        self.padding_mode = padding_mode
        self.normalize = normalize if normalize is not None else Normalize.identity(images.shape[1])
        self.epoch = 0
        self.position = 0
        self._order_cache = (None, None)

    @property
    def num_samples(self):
        """Images in the pool (per epoch, before ``drop_last``)."""
        return int(self.indices.size)

    def __len__(self):
        """Batches per epoch."""
        if self.drop_last:
            return self.num_samples // self.batch_size
        return -(-self.num_samples // self.batch_size)

    def epoch_order(self, epoch):
        """The pool's indices in the order epoch ``epoch`` visits them."""
        cached_epoch, order = self._order_cache
        if cached_epoch != epoch:
            if self.shuffle:
                order = self.indices[_rng(self.seed, _SHUFFLE, epoch).permutation(self.num_samples)]
            else:
                order = self.indices
            self._order_cache = (epoch, order)
        return order

    def batch(self, epoch, b):
        """Batch ``b`` of epoch ``epoch``: ``(x float32 (B, C, H, W), y int64 (B,))``."""
        if not 0 <= b < len(self):
            raise IndexError(f"BatchLoader: batch {b} out of range [0, {len(self)})")
        select = self.epoch_order(epoch)[b * self.batch_size:(b + 1) * self.batch_size]
        rng = _rng(self.seed, _AUGMENT, epoch, b) if self.augment else None
        x = augment_batch(self.images[select], rng, normalize=self.normalize, pad=self.pad,
                          flip=self.flip, mode=self.padding_mode)
        return x, self.labels[select]

    def __iter__(self):
        epoch, start, n = self.epoch, self.position, len(self)
        for b in range(start, n):
            x, y = self.batch(epoch, b)
            if b + 1 < n:
                self.position = b + 1
            else:
                self.epoch, self.position = epoch + 1, 0
            yield x, y
        if start >= n:  # an empty epoch (pool smaller than one batch with drop_last) still ends
            self.epoch, self.position = epoch + 1, 0

    def state(self):
        """The position of the next batch: ``{"epoch": e, "batch": b}`` (plain ints)."""
        return {"epoch": int(self.epoch), "batch": int(self.position)}

    def load_state(self, state):
        """Resume at ``state`` (from ``state()``)."""
        self.set_epoch(state["epoch"], state["batch"])

    def set_epoch(self, epoch, start_batch=0):
        """Position the loader at batch ``start_batch`` of epoch ``epoch``."""
        epoch, start_batch = int(epoch), int(start_batch)
        if epoch < 0 or not 0 <= start_batch <= len(self):
            raise ValueError(f"BatchLoader: cannot resume at epoch {epoch}, batch {start_batch} "
                             f"({len(self)} batches per epoch)")
        if start_batch == len(self) and start_batch:  # the end of an epoch is the next one's start
            epoch, start_batch = epoch + 1, 0
        self.epoch, self.position = epoch, start_batch
