"""``load_cifar``: find (or download) a CIFAR dataset, validate it, read it into NumPy arrays."""
import dataclasses

import numpy as np

from .download import ensure_dataset
from .formats import check_folder, get_spec, read_names, read_split


@dataclasses.dataclass
class CifarData:
    """A loaded dataset: uint8 images (N, 3, 32, 32), int64 labels (N,), class names.

    ``name`` is the dataset's title ("CIFAR-10", "CIFAR-100"), ``folder`` the folder it was read
    from, ``label`` the label field the labels and ``classes`` refer to.
    """
    name: str
    folder: str
    label: str
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    classes: list

    @property
    def num_classes(self):
        return len(self.classes)


def load_cifar(name="cifar10", root=None, download=None, label=None, url=None, md5=None, progress=True):
    """Load CIFAR-10 or CIFAR-100 from the data root, downloading the official archive if absent.

    ``name``: "cifar10", "cifar100" (or a ``DatasetSpec``). ``root``: the data root, the folder
    that *contains* ``cifar-10-batches-bin/`` / ``cifar-100-binary/`` (default: ``$TINYCOMP_DATA``,
    else ``~/.cache/tinycomp``; see ``resolve_root``). ``download``: None downloads a missing
    dataset only into the default cache, True into any root, False never (see ``ensure_dataset``);
    a missing folder that is not downloaded raises ``DatasetError`` saying where it looked.
    ``label``: CIFAR-100's "fine" (default, 100 classes) or "coarse" (20 superclasses). ``url``/``md5``: override the
    archive (see ``tinycomp.data.download``).

    The folder is validated (every file present, sizes, record counts, label ranges, names
    files) before anything is returned; errors name the bad file.
    """
    spec = get_spec(name)
    label = label or spec.default_field()
    if label not in dict(spec.label_fields):
        raise ValueError(f"{spec.title} has no label {label!r}; choose one of "
                         f"{[f for f, _ in spec.label_fields]}")
    folder = ensure_dataset(spec, root, download=download, url=url, md5=md5, progress=progress)
    check_folder(folder, spec)
    train_images, train_labels = read_split(folder, spec, "train")
    test_images, test_labels = read_split(folder, spec, "test")
    classes = read_names(folder / dict(spec.names_files)[label], spec, label)
    return CifarData(name=spec.title, folder=str(folder), label=label,
                     train_images=train_images, train_labels=train_labels[label],
                     test_images=test_images, test_labels=test_labels[label], classes=classes)


