"""Static facts of every registered dataset that needs no generation: torch-free.

The driver validates and plans sweeps from these (``raysweep.data.dataset_info``) and must
not import torch; the loaders in ``files.py``, ``finegrained.py`` and ``variants.py`` read the
same tables.
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


def _fine_grained(*entries: tuple[str, int, int]) -> dict[str, DatasetInfo]:
    """(name, classes, train size) -> 224 px RGB entries with ImageNet statistics."""
    return {
        name: _info(name, classes, 3, FOLDER_CROP, _IMAGENET_MEAN, _IMAGENET_STD, train)
        for name, classes, train in entries
    }


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
    # Terzi et al.'s fine-grained and scene targets (Table 4), read from their official archives
    # by ``finegrained.py``. The paper fine-tunes ImageNet sources on them, so they are fed with
    # ImageNet statistics like Caltech101. Train sizes are the published train splits: Aircraft
    # "trainval" (train + val), Flowers-102 train + val (1,020 + 1,020), Indoor-67's 80 x 67.
    **_fine_grained(
        ("aircraft", 100, 6_667),
        ("birds", 200, 5_994),
        ("cars", 196, 8_144),
        ("dogs", 120, 12_000),
        ("flowers", 102, 2_040),
        ("indoor", 67, 5_360),
    ),
    # CINIC-10 minus its CIFAR-10 images (Terzi Table 5, "CINIC-IMAGENET"). CINIC-10 has 90,000
    # images per split, 20,000 of them CIFAR-10's (its 60,000 split evenly), so 70,000 of each
    # split come from ImageNet. Mean/std are CINIC-10's published ones, over all of its train
    # images (CIFAR ones included): the ImageNet-only statistics are not published.
    "cinic10_imagenet": _info(
        "cinic10_imagenet",
        10,
        3,
        32,
        (0.47889522, 0.47227842, 0.43047404),
        (0.24205776, 0.23828046, 0.25874835),
        70_000,
    ),
}


# Dataset variants (Utrera et al. 2021, §5): name -> the base dataset whose images they
# transform. The transforms are in ``variants.py`` (torch), which checks it covers these names.
VARIANT_BASES: dict[str, str] = {
    "caltech101_lowres": "caltech101",
    "caltech101_lowpass": "caltech101",
}
