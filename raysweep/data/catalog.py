"""Static facts of every registered dataset that needs no generation: torch-free.

The driver validates and plans sweeps from these (``raysweep.data.dataset_info``) and must
not import torch; the loaders in ``files.py`` and ``variants.py`` read the same tables.
"""

from __future__ import annotations

from raysweep.data.info import DatasetInfo

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
FOLDER_RESIZE, FOLDER_CROP = 256, 224


def _info(
    name: str,
    classes: int,
    channels: int,
    size: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    train: int,
) -> DatasetInfo:
    return DatasetInfo(name, classes, channels, size, mean, std, train, builtin=False)


# Published training-split statistics. CIFAR stds are the per-pixel population std
# (0.2470 ..., not the often-quoted mean-of-per-image 0.2023 ...). Caltech101 (30 training
# images x 101 classes, Utrera et al. 2021 §5) and Stylized-ImageNet are fed to ImageNet models
# with ImageNet statistics, as in their papers.
FILE_INFOS: dict[str, DatasetInfo] = {
    "cifar10": _info(
        "cifar10", 10, 3, 32, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), 50_000
    ),
    "cifar100": _info(
        "cifar100", 100, 3, 32, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), 50_000
    ),
    "svhn": _info("svhn", 10, 3, 32, (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970), 73_257),
    "mnist": _info("mnist", 10, 1, 28, (0.1307,), (0.3081,), 60_000),
    "fashion_mnist": _info("fashion_mnist", 10, 1, 28, (0.2860,), (0.3530,), 60_000),
    "kmnist": _info("kmnist", 10, 1, 28, (0.1918,), (0.3483,), 60_000),
    "imagenet": _info("imagenet", 1000, 3, FOLDER_CROP, _IMAGENET_MEAN, _IMAGENET_STD, 1_281_167),
    "caltech101": _info("caltech101", 101, 3, FOLDER_CROP, _IMAGENET_MEAN, _IMAGENET_STD, 3_030),
    "stylized_imagenet": _info(
        "stylized_imagenet", 1000, 3, FOLDER_CROP, _IMAGENET_MEAN, _IMAGENET_STD, 1_281_167
    ),
}


# Dataset variants (Utrera et al. 2021, §5): name -> the base dataset whose images they
# transform. The transforms are in ``variants.py`` (torch), which checks it covers these names.
VARIANT_BASES: dict[str, str] = {
    "caltech101_lowres": "caltech101",
    "caltech101_lowpass": "caltech101",
}
