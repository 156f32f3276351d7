"""Training-time augmentation and normalisation of uint8 NCHW batches -> float32 NCHW.

The recipe (issue 4): per image, pad 4 pixels on each side (reflect by default, zero as an
option), take a random 32x32 window of the 40x40 padded image, flip it horizontally with
probability 1/2; then normalise each channel, ``(pixel / 255 - mean[c]) / std[c]``, with the
training set's mean and std (``channel_stats``). All of it runs as one fused Numba pass
(``tinycomp_kernels.augment.augment``): one read of the uint8 batch, one write of the float32 one.

Random draws, per batch of N images, from a ``np.random.Generator`` ``rng``, in this order:

    offsets = rng.integers(0, 2 * pad + 1, size=(N, 2))   # (dy, dx) per image, row n = image n
    flips   = rng.integers(0, 2, size=N).astype(bool)     # only when flip=True

``offsets[n]`` is the top-left corner of image n's window in the padded image (``pad, pad`` is
the un-shifted crop). With ``pad=0`` no offsets are drawn, with ``flip=False`` no flips: the
stream is a function of (rng state, N, pad, flip) only, so seeding ``rng`` reproduces it exactly.
"""
import numpy as np

from tinycomp_kernels.augment import MODES, augment as _augment_kernel


def channel_stats(images, indices=None, chunk=10_000):
    """Per-channel mean and std of uint8 images (N, C, H, W), on the [0, 1] scale (pixel / 255).

    Exact: per-channel histograms of the 256 byte values give the sums of v and v^2 in integers.
    ``std`` is the population std (ddof=0), as torchvision-style recipes compute it.
    ``indices``: optional subset of images (e.g. the training part of a train/val split).
    Returns two float64 arrays of shape (C,).
    """
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(f"channel_stats: images must be uint8 (N, C, H, W), got {images.dtype} {images.shape}")
    C = images.shape[1]
    idx = np.arange(images.shape[0]) if indices is None else np.asarray(indices)
    if idx.size == 0:
        raise ValueError("channel_stats: no images")
    hist = np.zeros((C, 256), dtype=np.int64)
    for start in range(0, idx.size, chunk):
        part = images[idx[start:start + chunk]]  # (n, C, H, W) copy of one chunk
        for c in range(C):
            hist[c] += np.bincount(part[:, c].ravel(), minlength=256)
    values = np.arange(256, dtype=np.float64)
    count = hist.sum(axis=1).astype(np.float64)
    mean = (hist @ values) / count  # (C,) on the 0..255 scale
    var = (hist @ (values ** 2)) / count - mean ** 2
    return mean / 255.0, np.sqrt(np.maximum(var, 0.0)) / 255.0


class Normalize:
    """Per-channel normalisation ``(pixel / 255 - mean[c]) / std[c]`` of uint8 NCHW batches.

    ``mean`` and ``std`` are on the [0, 1] scale (what ``channel_stats`` returns). Calling the
    object on a uint8 batch returns float32. ``Normalize.identity(C)`` maps pixels to pixel / 255.
    """

    def __init__(self, mean, std):
        self.mean = np.asarray(mean, dtype=np.float64).reshape(-1)
        self.std = np.asarray(std, dtype=np.float64).reshape(-1)
        if self.mean.shape != self.std.shape or self.mean.size == 0:
            raise ValueError(f"Normalize: mean and std must be non-empty with equal shapes, "
                             f"got {self.mean.shape} and {self.std.shape}")
        if not np.all(np.isfinite(self.mean)) or not np.all(self.std > 0):
            raise ValueError("Normalize: mean must be finite and std positive")

    @classmethod
    def from_images(cls, images, indices=None):
        """Statistics of ``images[indices]`` (see ``channel_stats``)."""
        return cls(*channel_stats(images, indices))

    @classmethod
    def identity(cls, channels=3):
        return cls(np.zeros(channels), np.ones(channels))

    @property
    def scale(self):
        """float32 (C,): the multiplier of a raw 0..255 pixel."""
        return (1.0 / (255.0 * self.std)).astype(np.float32)

    @property
    def shift(self):
        """float32 (C,): the offset added after scaling."""
        return (-self.mean / self.std).astype(np.float32)

    def state_dict(self):
        return {"mean": self.mean.copy(), "std": self.std.copy()}

    def __call__(self, images):
        return augment_batch(images, None, normalize=self, pad=0, flip=False)

    def __repr__(self):
        return f"Normalize(mean={self.mean.round(4).tolist()}, std={self.std.round(4).tolist()})"


def draw_params(rng, n, pad=4, flip=True):
    """The random draws for a batch of ``n`` images, in the documented order.

    Returns ``offsets`` int64 (n, 2) in [0, 2*pad] and ``flips`` bool (n,).
    """
    if pad:
        offsets = rng.integers(0, 2 * pad + 1, size=(n, 2), dtype=np.int64)
    else:
        offsets = np.zeros((n, 2), dtype=np.int64)
    flips = rng.integers(0, 2, size=n).astype(bool) if flip else np.zeros(n, dtype=bool)
    return offsets, flips


def augment_batch(images, rng, normalize=None, pad=4, flip=True, mode="reflect", out=None):
    """Random crop (``pad`` pixels of ``mode`` padding) + horizontal flip + normalisation.

    ``images``: uint8 (N, C, H, W). ``rng``: a ``np.random.Generator`` (draws as in the module
    docstring); ``None`` means no augmentation (centre crop, no flip). ``normalize``: a
    ``Normalize`` (``None``: pixel / 255). Returns float32 (N, C, H, W).
    """
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"augment_batch: images must be 4-D (N, C, H, W), got shape {images.shape}")
    if mode not in MODES:
        raise ValueError(f"augment_batch: mode must be one of {MODES}, got {mode!r}")
    N, C = images.shape[:2]
    if normalize is None:
        normalize = Normalize.identity(C)
    if normalize.mean.size != C:
        raise ValueError(f"augment_batch: normalize has {normalize.mean.size} channels, images have {C}")
    if rng is None:
        offsets = np.full((N, 2), pad, dtype=np.int64)
        flips = np.zeros(N, dtype=bool)
    else:
        offsets, flips = draw_params(rng, N, pad, flip)
    return _augment_kernel(images, offsets, flips, normalize.scale, normalize.shift,
                           pad=pad, mode=mode, out=out)
