"""File-backed datasets: torchvision's on-disk formats and ImageFolder trees, read into memory.

On-disk layouts are torchvision's own, so an existing torchvision data folder works as is
(the fine-grained targets, read from their official archives, are in ``finegrained.py``):

- ``cifar10``/``cifar100``: ``<root>/cifar-10-batches-py/data_batch_1..5, test_batch`` and
  ``<root>/cifar-100-python/train, test`` (python pickles of {"data": uint8 [N, 3072],
  "labels" | "fine_labels": [N]}).
- ``mnist``/``fashion_mnist``/``kmnist``: ``<root>/{MNIST,FashionMNIST,KMNIST}/raw/`` with the
  four uncompressed idx files (``train-images-idx3-ubyte`` ...).
- ``svhn``: ``<root>/train_32x32.mat``, ``<root>/test_32x32.mat`` (X uint8 [32, 32, 3, N],
  y [N, 1] with label 10 meaning digit 0).
- ``imagenet``/``caltech101``/``stylized_imagenet``: ``<root>/<name>/train/<class>/*.jpg|png``
  and ``<root>/<name>/val/...`` (or ``test/``), class index = rank of the folder name among
  the *train* folders (so a val tree missing a class keeps the same indices).
- ``aircraft``, ``birds``, ``cars``, ``dogs``, ``flowers``, ``indoor``, ``cinic10_imagenet``:
  the official archives extracted under ``<root>/`` (``fgvc-aircraft-2013b/``, ``CUB_200_2011/``,
  ``stanford_cars/``, ``stanford_dogs/``, ``flowers-102/``, ``indoorCVPR_09/``, ``CINIC-10/``);
  layouts, splits and class indices in ``finegrained.py``, which this module dispatches to.

Integrity. With ``download=False`` torchvision's CIFAR and SVHN classes refuse any file whose
md5 differs from the published archive's, which rules out re-packed subsets and the tiny
real-format files our tests write. We therefore read those two formats ourselves, with the
same file names (taken from torchvision's class attributes, so they cannot drift) and the same
array layout; a truncated or foreign file still fails loudly on read. CIFAR pickles are
opened with an unpickler that only resolves the numpy names an array needs, so a crafted
file cannot run code. With ``download=True`` torchvision downloads and md5-checks the
archives and its parsed arrays are used directly. MNIST-family files are only checked for
presence by torchvision, so its class is used in both cases.

ImageFolder splits are decoded with PIL, converted to RGB, resized to 256 on the shorter side
and centre-cropped to 224 (the ImageNet evaluation recipe, ``finegrained.decode_folder_images``,
shared with the fine-grained targets), kept as uint8. The whole split is
held in memory (N x 150 KB): use these loaders on folders of a few thousand images (Caltech101,
subsets of ImageNet), not on the 1.28 M-image ImageNet training set.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
import torch
import torchvision
from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset

from raysweep.data.catalog import FILE_INFOS
from raysweep.data.finegrained import (
    DOWNLOADABLE,
    FINEGRAINED,
    decode_folder_images,
    load_finegrained,
)
from raysweep.data.info import ArrayDataset

_CIFAR = {"cifar10": torchvision.datasets.CIFAR10, "cifar100": torchvision.datasets.CIFAR100}
_MNIST = {
    "mnist": torchvision.datasets.MNIST,
    "fashion_mnist": torchvision.datasets.FashionMNIST,
    "kmnist": torchvision.datasets.KMNIST,
}
_FOLDERS = ("imagenet", "caltech101", "stylized_imagenet")
# Datasets ``download: true`` can fetch; the no-data_root error offers it only for these.
_DOWNLOADABLE = frozenset({*_CIFAR, *_MNIST, "svhn", *DOWNLOADABLE})

# Every catalog name needs a loader here (the catalog is torch-free and cannot check it).
_UNHANDLED = set(FILE_INFOS) ^ {*_CIFAR, *_MNIST, "svhn", *_FOLDERS, *FINEGRAINED}
if _UNHANDLED:
    raise ImportError(
        f"raysweep.data.catalog.FILE_INFOS and the loaders disagree: {sorted(_UNHANDLED)}"
    )


def missing_files(name: str, folder: Path | str, downloadable: bool) -> FileNotFoundError:
    """The one-line error for absent files: dataset, folder looked in, and the fix."""
    if downloadable:
        fix = "set data_root: to the folder holding it, or download: true to fetch it there"
    else:
        fix = (
            f"set data_root: to a folder holding {name}/train/<class>/*.jpg "
            "(it cannot be downloaded automatically)"
        )
    return FileNotFoundError(f"dataset '{name}' not found in {folder}; {fix}")


def load_file_dataset(
    name: str, split: str, data_root: str | Path | None, download: bool
) -> ArrayDataset:
    """Load ``split`` of a registered file-backed dataset into uint8 tensors."""
    if data_root is None:
        raise FileNotFoundError(
            f"dataset '{name}' is read from files but no data_root was given; set data_root: to "
            "the folder holding it"
            + (" (download: true fetches it there)" if name in _DOWNLOADABLE else "")
        )
    root = Path(data_root).expanduser()
    train = split == "train"
    if name in _CIFAR:
        images, labels = _load_cifar(name, root, train, download)
    elif name in _MNIST:
        images, labels = _load_mnist(name, root, train, download)
    elif name == "svhn":
        images, labels = _load_svhn(root, split, download)
    elif name in FINEGRAINED:
        images, labels = load_finegrained(name, root, split, download)
    else:
        images, labels = _load_folder(name, root, split)
    return ArrayDataset(images=images, labels=labels, info=FILE_INFOS[name])


class _ArrayUnpickler(pickle.Unpickler):
    """Resolves only what a pickled numpy array (and Python 2 byte strings) needs."""

    _ALLOWED = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data file")
        return super().find_class(module, name)


def _load_cifar(
    name: str, root: Path, train: bool, download: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    cls = _CIFAR[name]
    if download:
        ds = cls(str(root), train=train, download=True)
        chw = np.ascontiguousarray(ds.data.transpose(0, 3, 1, 2))
        return torch.from_numpy(chw), torch.tensor(ds.targets, dtype=torch.int64)
    folder = root / cls.base_folder
    files = [folder / f for f, _ in (cls.train_list if train else cls.test_list)]
    if not all(f.is_file() for f in files):
        raise missing_files(name, folder, downloadable=True)
    data, labels = [], []
    for path in files:
        # latin1 because the published batches are Python 2 pickles with byte-string keys.
        entry = _ArrayUnpickler(io.BytesIO(path.read_bytes()), encoding="latin1").load()
        data.append(np.asarray(entry["data"], dtype=np.uint8))
        labels.extend(entry["labels"] if "labels" in entry else entry["fine_labels"])
    images = np.vstack(data).reshape(-1, 3, 32, 32)  # rows are R plane, G plane, B plane
    return torch.from_numpy(images), torch.tensor(labels, dtype=torch.int64)


def _load_mnist(
    name: str, root: Path, train: bool, download: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    cls = _MNIST[name]
    raw = root / cls.__name__ / "raw"
    # torchvision wants all four idx files before it reads either split.
    expected = [raw / Path(url).stem for url, _ in cls.resources]
    if not download and not all(f.is_file() for f in expected):
        raise missing_files(name, raw, downloadable=True)
    ds = cls(str(root), train=train, download=download)
    return ds.data.unsqueeze(1).to(torch.uint8).contiguous(), ds.targets.to(torch.int64)


def _load_svhn(root: Path, split: str, download: bool) -> tuple[torch.Tensor, torch.Tensor]:
    if download:
        ds = torchvision.datasets.SVHN(str(root), split=split, download=True)
        return torch.from_numpy(np.ascontiguousarray(ds.data)), torch.from_numpy(ds.labels)
    import scipy.io

    path = root / torchvision.datasets.SVHN.split_list[split][1]
    if not path.is_file():
        raise missing_files("svhn", root, downloadable=True)
    mat = scipy.io.loadmat(str(path))
    images = np.ascontiguousarray(mat["X"].transpose(3, 2, 0, 1)).astype(np.uint8)  # HWCN->NCHW
    labels = mat["y"].astype(np.int64).reshape(-1)
    labels[labels == 10] = 0  # SVHN stores digit 0 as label 10
    return torch.from_numpy(images), torch.from_numpy(labels)


def _load_folder(name: str, root: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    base = root / name
    train_dir = base / "train"
    if split == "train":
        split_dir = train_dir
    else:
        split_dir = next((base / s for s in ("val", "test") if (base / s).is_dir()), base / "val")
    if not train_dir.is_dir() or not split_dir.is_dir():
        raise missing_files(name, split_dir if train_dir.is_dir() else train_dir, False)
    classes = sorted(p.name for p in train_dir.iterdir() if p.is_dir())
    limit = FILE_INFOS[name].num_classes
    if len(classes) > limit:
        raise ValueError(
            f"{train_dir} holds {len(classes)} class folders but '{name}' has "
            f"{limit} classes; remove the extra folders"
        )
    samples = make_dataset(
        str(split_dir),
        {c: i for i, c in enumerate(classes)},
        extensions=IMG_EXTENSIONS,
        allow_empty=True,
    )
    if not samples:
        raise missing_files(name, split_dir, downloadable=False)
    images = decode_folder_images([path for path, _ in samples])
    labels = torch.tensor([label for _, label in samples], dtype=torch.int64)
    return images, labels
