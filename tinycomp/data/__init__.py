"""tinycomp.data: CIFAR-10 / CIFAR-100 from their official binary files, augmentation, batching.

Everything returns NumPy arrays; nothing is ever unpickled.

    from tinycomp.data import load_cifar, Normalize, BatchLoader, train_val_split
    data = load_cifar("cifar10", root=None)   # uint8 (N, 3, 32, 32), int64 labels
    train_idx, val_idx = train_val_split(len(data.train_labels), val=5000, seed=0)
    norm = Normalize.from_images(data.train_images, train_idx)
    train = BatchLoader(data.train_images, data.train_labels, 128, indices=train_idx, shuffle=True,
                        seed=0, drop_last=True, augment=True, normalize=norm)
    for x, y in train: ...                                    # one epoch; train.state() to checkpoint

Public API
- ``load_cifar(name="cifar10", root=None, download=None, label=None, url=None, md5=None,
  progress=True) -> CifarData`` (train/test images and labels, class names).
- ``resolve_root(data_dir=None) -> (Path, source)``: ``data_dir``, else ``$TINYCOMP_DATA``, else
  ``~/.cache/tinycomp``. ``ensure_dataset(name, data_dir, download, url, md5)`` -> dataset folder
  (``download``: None only into the default cache, True anywhere, False never).
- ``DatasetError`` (a ValueError): missing, malformed or undownloadable data; names the file.
- ``channel_stats(images, indices=None) -> (mean, std)``, ``Normalize(mean, std)``,
  ``augment_batch(images, rng, normalize=None, pad=4, flip=True, mode="reflect")``,
  ``draw_params(rng, n, pad, flip)`` (the documented per-image random draws).
- ``train_val_split(num_images, val=0, seed=0, subset=None) -> (train_idx, val_idx)``,
  ``BatchLoader(images, labels, batch_size, *, indices, shuffle, seed, drop_last, augment, pad,
  flip, padding_mode, normalize)`` with ``state()`` / ``load_state()`` / ``set_epoch()``.
- ``CIFAR10``, ``CIFAR100``: the ``DatasetSpec`` layouts (file names, record counts, URL, md5).

Modules: ``formats`` (layouts, validation, parsing), ``download`` (data root, safe download and
extraction), ``augment`` (crop/flip/normalise), ``loader`` (splits and batches), ``cifar``.
"""
from .augment import Normalize, augment_batch, channel_stats, draw_params
from .cifar import CifarData, load_cifar
from .download import default_root, ensure_dataset, resolve_root
from .formats import CIFAR10, CIFAR100, DatasetError, DatasetSpec, get_spec
from .loader import BatchLoader, train_val_split

__all__ = ["load_cifar", "CifarData", "resolve_root", "default_root", "ensure_dataset", "DatasetError",
           "DatasetSpec", "CIFAR10", "CIFAR100", "get_spec", "channel_stats", "Normalize", "augment_batch",
           "draw_params", "train_val_split", "BatchLoader"]
