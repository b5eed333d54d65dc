"""Terzi et al.'s fine-grained and scene targets, read from their official archive layouts.

Each dataset lives in one folder under ``data_root``, named and laid out as its published
archives extract (or, where torchvision reads it, as torchvision names the folder), so
``data_root`` can point at the extracted downloads:

- ``aircraft``: ``fgvc-aircraft-2013b/data/{images/*.jpg, variants.txt,
  images_variant_trainval.txt, images_variant_test.txt}`` (FGVC-Aircraft 2013b). train =
  ``trainval`` (6,667), test = ``test`` (3,333); class = 0-based line of ``variants.txt``.
- ``birds``: ``CUB_200_2011/{images.txt, image_class_labels.txt, train_test_split.txt,
  images/<class>/*.jpg}``; order of ``images.txt``; class = class id - 1 (the line of
  ``classes.txt``).
- ``cars``: ``stanford_cars/{cars_train/, cars_test/, devkit/cars_train_annos.mat,
  devkit/cars_meta.mat, cars_test_annos_withlabels.mat}`` (the original site's archives under
  torchvision's folder name); class = annotation ``class`` - 1.
- ``dogs``: ``stanford_dogs/{Images/<wnid-breed>/*.jpg, train_list.mat, test_list.mat}``
  (``lists.tar`` extracts its .mat files flat; a ``lists/`` subfolder is read too); class =
  ``labels`` - 1.
- ``flowers``: ``flowers-102/{jpg/image_XXXXX.jpg, imagelabels.mat, setid.mat}`` (torchvision's
  Flowers102 layout). train = ``trnid`` + ``valid`` (2,040, as Terzi Table 4), test = ``tstid``
  (6,149); class = ``labels`` - 1.
- ``indoor``: ``indoorCVPR_09/{Images/<category>/*.jpg, TrainImages.txt, TestImages.txt}`` (MIT
  Indoor-67; the two lists saved next to ``Images/``); class = rank of the category name among
  all categories the two lists name, sorted.
- ``cinic10_imagenet``: ``CINIC-10/{train,test}/<class>/*.png`` minus the ``cifar10-*`` files
  (CINIC-10's CIFAR images); ``valid/`` is not used; class = CIFAR-10's index of the folder
  name (CIFAR-10's order, which is also the sorted order); files sorted by name.

Readers. torchvision's ``FGVCAircraft`` and ``StanfordCars`` read their layouts as published and
check only presence, so they read ``aircraft`` and ``cars`` (through the public
``__getitem__``). Its ``Flowers102`` refuses files whose md5 differs from the published ones
when not downloading (as CIFAR/SVHN do, see ``files.py``), and Terzi's train split spans two of
its splits, so ``flowers`` reads the two .mat files here. CUB-200-2011, Stanford Dogs, MIT
Indoor-67 and CINIC-10 have no torchvision class; they are read here from their list files.

Download. ``download: true`` fetches, through torchvision and only when files are missing,
``aircraft`` and ``flowers`` (the official archives). The others cannot be fetched (no
torchvision download; Stanford Cars' original site is offline): their error names the folder
looked in and the official page.

Images. Fine-grained images are decoded with PIL, converted to RGB, resized to 256 on the
shorter side and centre-cropped to 224 (:func:`decode_folder_images`, the recipe ``files.py``
uses for ImageFolder trees too). A split is held in memory at 150 KB per image: Stanford Dogs'
12,000 training images take 1.8 GB. CINIC-10 images are 32 x 32 already and kept as they are.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.io
import torch
import torchvision
import torchvision.transforms.functional as TF
from PIL import Image
from torchvision.datasets.folder import pil_loader

from raysweep.data.catalog import FILE_INFOS, FOLDER_CROP, FOLDER_RESIZE

Split = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class _Source:
    folder: str  # under data_root: the folder the archive extracts to, or torchvision's name
    page: str  # where to get the archives, named in the error when files are absent
    downloadable: bool  # torchvision fetches it with download: true


_SOURCES: dict[str, _Source] = {
    "aircraft": _Source(
        "fgvc-aircraft-2013b", "https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/", True
    ),
    "birds": _Source(
        "CUB_200_2011", "https://www.vision.caltech.edu/datasets/cub_200_2011/", False
    ),
    "cars": _Source(
        "stanford_cars",
        "https://ai.stanford.edu/~jkrause/cars/car_dataset.html (offline; mirrors keep the same "
        "archives)",
        False,
    ),
    "dogs": _Source("stanford_dogs", "http://vision.stanford.edu/aditya86/ImageNetDogs/", False),
    "flowers": _Source("flowers-102", "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/", True),
    "indoor": _Source("indoorCVPR_09", "https://web.mit.edu/torralba/www/indoor.html", False),
    "cinic10_imagenet": _Source("CINIC-10", "https://github.com/BayesWatch/cinic-10", False),
}

#: Datasets whose ``download: true`` fetches the files (``files.py`` words its errors by it).
DOWNLOADABLE: frozenset[str] = frozenset(n for n, s in _SOURCES.items() if s.downloadable)

# CIFAR-10's label order, which CINIC-10's class folders share; it is also their sorted order.
_CINIC_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
_CINIC_SIZE = 32


# ---- errors -------------------------------------------------------------------------------


def _absent(name: str, folder: Path, missing: str) -> FileNotFoundError:
    """The one-line error for absent files: dataset, folder looked in, what is missing, the fix."""
    source = _SOURCES[name]
    if source.downloadable:
        fix = "set data_root: to the folder holding it, or download: true to fetch it there"
    else:
        fix = (
            f"set data_root: to the folder holding {source.folder}/ extracted from the archives "
            f"at {source.page} (it cannot be downloaded automatically)"
        )
    return FileNotFoundError(f"dataset '{name}' not found in {folder} (no {missing}); {fix}")


def _first_missing(folder: Path, needed: Iterable[str]) -> str | None:
    return next((rel for rel in needed if not (folder / rel).exists()), None)


def _require(name: str, folder: Path, needed: Iterable[str]) -> None:
    missing = _first_missing(folder, needed)
    if missing is not None:
        raise _absent(name, folder, missing)


def _listed_but_absent(name: str, image: object, listing: Path | str) -> FileNotFoundError:
    return FileNotFoundError(
        f"dataset '{name}': {image} is listed in {listing} but absent; re-extract the image "
        f"archive from {_SOURCES[name].page}"
    )


def _label_tensor(name: str, labels: Sequence[int], source: Path) -> torch.Tensor:
    """int64 labels, checked against the catalog's class count (a foreign list fails here)."""
    tensor = torch.tensor(list(labels), dtype=torch.int64)
    limit = FILE_INFOS[name].num_classes
    bad = tensor[(tensor < 0) | (tensor >= limit)]
    if len(bad):
        raise ValueError(
            f"dataset '{name}': {source} gives class index {int(bad[0])} (0-based) but "
            f"'{name}' has {limit} classes"
        )
    return tensor


# ---- decoding -----------------------------------------------------------------------------


def folder_image(image: Image.Image) -> torch.Tensor:
    """One RGB PIL image -> uint8 [3, 224, 224]: shorter side to 256, centre crop to 224."""
    return TF.pil_to_tensor(TF.center_crop(TF.resize(image, FOLDER_RESIZE), FOLDER_CROP))


def decode_folder_images(paths: Sequence[str | Path]) -> torch.Tensor:
    """uint8 [N, 3, 224, 224] of the image files ``paths``, in order (see :func:`folder_image`)."""
    images = torch.empty((len(paths), 3, FOLDER_CROP, FOLDER_CROP), dtype=torch.uint8)
    for i, path in enumerate(paths):
        images[i] = folder_image(pil_loader(str(path)))
    return images


def _decode_listed(name: str, paths: list[Path], labels: list[int], listing: Path) -> Split:
    """Check every listed image exists (before decoding thousands), then decode them."""
    if not paths:
        raise _absent(name, listing.parent, f"images listed in {listing.name}")
    absent = next((p for p in paths if not p.is_file()), None)
    if absent is not None:
        raise _listed_but_absent(name, absent, listing)
    label_tensor = _label_tensor(name, labels, listing)
    return decode_folder_images(paths), label_tensor


def _decode_vision(name: str, dataset: torchvision.datasets.VisionDataset, folder: Path) -> Split:
    """Decode a torchvision dataset built with ``transform=folder_image``, via ``__getitem__``."""
    if len(dataset) == 0:
        raise _absent(name, folder, "images in its list files")
    images = torch.empty((len(dataset), 3, FOLDER_CROP, FOLDER_CROP), dtype=torch.uint8)
    labels: list[int] = []
    for i in range(len(dataset)):
        try:
            images[i], label = dataset[i]
        except FileNotFoundError as err:  # torchvision lists paths without checking them
            raise _listed_but_absent(name, err.filename, f"the lists of {folder}") from err
        labels.append(int(label))
    return images, _label_tensor(name, labels, folder)


# ---- list-file helpers ----------------------------------------------------------------------


def _lines(path: Path) -> list[str]:
    """Non-blank stripped lines (the published lists end lines with \\n or \\r\\n)."""
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def _id_table(path: Path) -> dict[str, str]:
    """``<id> <value>`` lines (CUB's list files) -> {id: value}."""
    table: dict[str, str] = {}
    for line in _lines(path):
        key, _, value = line.partition(" ")
        table[key] = value.strip()
    return table


def _mat_column(path: Path, key: str) -> np.ndarray:
    """A MATLAB vector or cell column as a 1-D array (``squeeze_me`` makes one entry a scalar)."""
    return np.atleast_1d(scipy.io.loadmat(str(path), squeeze_me=True)[key])


# ---- readers: (data_root, split, download) -> (images, labels) -------------------------------
# One signature for all; only the downloadable ones (aircraft, flowers) use ``download``.


def _aircraft(root: Path, split: str, download: bool) -> Split:
    folder = root / _SOURCES["aircraft"].folder
    subset = "trainval" if split == "train" else "test"
    needed = ("data/images", "data/variants.txt", f"data/images_variant_{subset}.txt")
    if download and _first_missing(folder, needed) is not None:
        torchvision.datasets.FGVCAircraft(str(root), download=True)  # fetches the 2013b archive
    _require("aircraft", folder, needed)
    dataset = torchvision.datasets.FGVCAircraft(
        str(root), split=subset, annotation_level="variant", transform=folder_image
    )
    return _decode_vision("aircraft", dataset, folder)


def _birds(root: Path, split: str, download: bool) -> Split:
    folder = root / _SOURCES["birds"].folder
    _require(
        "birds", folder, ("images", "images.txt", "image_class_labels.txt", "train_test_split.txt")
    )
    listing = folder / "images.txt"
    paths = _id_table(listing)
    classes = _id_table(folder / "image_class_labels.txt")
    is_train = _id_table(folder / "train_test_split.txt")
    unmatched = next((i for i in paths if i not in classes or i not in is_train), None)
    if unmatched is not None:
        raise ValueError(
            f"dataset 'birds': image id {unmatched} of {listing} has no entry in "
            "image_class_labels.txt or train_test_split.txt; re-extract the archive"
        )
    wanted = "1" if split == "train" else "0"  # train_test_split.txt: 1 = training image
    ids = [i for i in paths if is_train[i] == wanted]
    return _decode_listed(
        "birds",
        [folder / "images" / paths[i] for i in ids],
        [int(classes[i]) - 1 for i in ids],
        listing,
    )


def _cars(root: Path, split: str, download: bool) -> Split:
    folder = root / _SOURCES["cars"].folder
    # The test labels shipped apart from the devkit, next to the image folders.
    train = split == "train"
    annotations = "devkit/cars_train_annos.mat" if train else "cars_test_annos_withlabels.mat"
    _require("cars", folder, (f"cars_{split}", annotations, "devkit/cars_meta.mat"))
    dataset = torchvision.datasets.StanfordCars(str(root), split=split, transform=folder_image)
    return _decode_vision("cars", dataset, folder)


def _dogs(root: Path, split: str, download: bool) -> Split:
    folder = root / _SOURCES["dogs"].folder
    name = f"{split}_list.mat"
    relative = f"lists/{name}" if (folder / "lists" / name).is_file() else name
    _require("dogs", folder, ("Images", relative))
    listing = folder / relative
    files = _mat_column(listing, "file_list")  # 'n02085620-Chihuahua/n02085620_5927.jpg'
    labels = _mat_column(listing, "labels")  # 1-based
    return _decode_listed(
        "dogs",
        [folder / "Images" / str(f) for f in files],
        [int(v) - 1 for v in labels],
        listing,
    )


def _flowers(root: Path, split: str, download: bool) -> Split:
    folder = root / _SOURCES["flowers"].folder
    needed = ("jpg", "imagelabels.mat", "setid.mat")
    if download and _first_missing(folder, needed) is not None:
        torchvision.datasets.Flowers102(str(root), download=True)  # md5-checked official files
    _require("flowers", folder, needed)
    listing = folder / "setid.mat"
    keys = ("trnid", "valid") if split == "train" else ("tstid",)
    ids = [int(i) for key in keys for i in _mat_column(listing, key)]  # 1-based image numbers
    all_labels = _mat_column(folder / "imagelabels.mat", "labels")  # 1-based, by image number
    beyond = next((i for i in ids if not 1 <= i <= len(all_labels)), None)
    if beyond is not None:
        raise ValueError(
            f"dataset 'flowers': {listing} names image {beyond} but imagelabels.mat labels "
            f"{len(all_labels)} images"
        )
    return _decode_listed(
        "flowers",
        [folder / "jpg" / f"image_{i:05d}.jpg" for i in ids],
        [int(all_labels[i - 1]) - 1 for i in ids],
        listing,
    )


def _indoor(root: Path, split: str, download: bool) -> Split:
    folder = root / _SOURCES["indoor"].folder
    list_names = {"train": "TrainImages.txt", "test": "TestImages.txt"}
    _require("indoor", folder, ("Images", *list_names.values()))
    entries = {s: _lines(folder / f) for s, f in list_names.items()}  # 'category/file.jpg'
    # Indices from both lists, so neither split's content shifts the other's classes.
    categories = sorted({e.split("/")[0] for lines in entries.values() for e in lines})
    index = {c: i for i, c in enumerate(categories)}
    return _decode_listed(
        "indoor",
        [folder / "Images" / e for e in entries[split]],
        [index[e.split("/")[0]] for e in entries[split]],
        folder / list_names[split],
    )


def _cinic_files(split_dir: Path) -> tuple[list[Path], list[int]]:
    """ImageNet-derived PNGs per class folder, sorted; CINIC names its CIFAR ones cifar10-*."""
    unknown = sorted(
        p.name for p in split_dir.iterdir() if p.is_dir() and p.name not in _CINIC_CLASSES
    )
    if unknown:
        raise ValueError(
            f"dataset 'cinic10_imagenet': {split_dir} holds class folders {unknown} that are "
            f"not CINIC-10's ({', '.join(_CINIC_CLASSES)})"
        )
    paths: list[Path] = []
    labels: list[int] = []
    for label, name in enumerate(_CINIC_CLASSES):
        kept = sorted(
            p for p in (split_dir / name).glob("*.png") if not p.name.startswith("cifar10-")
        )
        paths += kept
        labels += [label] * len(kept)
    return paths, labels


def _cinic_image(path: Path) -> torch.Tensor:
    image = pil_loader(str(path))  # RGB: a few CINIC images are stored greyscale
    if image.size != (_CINIC_SIZE, _CINIC_SIZE):
        raise ValueError(
            f"dataset 'cinic10_imagenet': {path} is {image.size[0]}x{image.size[1]}; CINIC-10 "
            f"images are {_CINIC_SIZE}x{_CINIC_SIZE}"
        )
    return TF.pil_to_tensor(image)


def _cinic10_imagenet(root: Path, split: str, download: bool) -> Split:
    folder = root / _SOURCES["cinic10_imagenet"].folder
    _require("cinic10_imagenet", folder, (split,))
    split_dir = folder / split
    paths, labels = _cinic_files(split_dir)
    if not paths:
        raise _absent("cinic10_imagenet", split_dir, "<class>/*.png not named cifar10-*")
    images = torch.empty((len(paths), 3, _CINIC_SIZE, _CINIC_SIZE), dtype=torch.uint8)
    for i, path in enumerate(paths):
        images[i] = _cinic_image(path)
    return images, _label_tensor("cinic10_imagenet", labels, split_dir)


_READERS: dict[str, Callable[[Path, str, bool], Split]] = {
    "aircraft": _aircraft,
    "birds": _birds,
    "cars": _cars,
    "dogs": _dogs,
    "flowers": _flowers,
    "indoor": _indoor,
    "cinic10_imagenet": _cinic10_imagenet,
}

#: The catalog names this module loads (``files.py`` dispatches them here).
FINEGRAINED: frozenset[str] = frozenset(_READERS)


def load_finegrained(name: str, root: Path, split: str, download: bool) -> Split:
    """uint8 images [N, 3, H, W] and int64 labels of ``split`` ("train"/"test") of ``name``."""
    return _READERS[name](root, split, download)
