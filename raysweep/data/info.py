"""Typed records shared by every dataset loader: what a dataset is, and one split held in memory.

Importing this module does not import torch: the driver plans sweeps from ``DatasetInfo``
alone, and torch costs it ≈510 MiB RSS. ``ArrayDataset`` holds tensors, so whoever builds
one has torch loaded already.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

#: Train-time batch augmentations (:func:`raysweep.data.transforms.augment_batch`), each named
#: for what it does; specs validate ``augment:`` against them without torch.
AUGMENTATIONS: tuple[str, ...] = ("none", "flip_crop", "crop_rotate15", "crop_flip_jitter_rotate2")
#: Names a recipe had before (a spec using one is told the new name).
RENAMED_AUGMENTATIONS: dict[str, str] = {"crop_rotate": "crop_rotate15"}


@dataclass(frozen=True)
class DatasetInfo:
    """Static facts about a dataset, enough to plan a sweep without touching its files.

    ``mean``/``std`` are per native channel, of pixels scaled to [0, 1], over the training
    split: mean_c = E[x_c], std_c = sqrt(E[(x_c - mean_c)^2]) (population std over all
    pixels of all training images, not the average of per-image stds).
    """

    name: str
    num_classes: int
    channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    train_size: int
    builtin: bool


@dataclass(frozen=True)
class ArrayDataset:
    """One split in memory: uint8 images [N, C, H, W] at native channels/size, int64 labels [N]."""

    images: torch.Tensor
    labels: torch.Tensor
    info: DatasetInfo

    def __post_init__(self) -> None:
        import torch  # loaded already (the tensors exist); kept out of module import time

        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError(
                f"images of '{self.info.name}' must be uint8 [N, C, H, W], got "
                f"{self.images.dtype} {tuple(self.images.shape)}"
            )
        if self.labels.dtype != torch.int64 or self.labels.shape != (self.images.shape[0],):
            raise ValueError(
                f"labels of '{self.info.name}' must be int64 [{self.images.shape[0]}], got "
                f"{self.labels.dtype} {tuple(self.labels.shape)}"
            )

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def channel_stats(images: np.ndarray | torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and population std of uint8 images [N, C, H, W], in [0, 1] units.

    Accumulates in float64 one channel at a time, so a 6,000-image split costs a few MB
    of temporaries rather than a float copy of the whole array.
    """
    arr = np.asarray(images)  # a CPU tensor converts without a copy, and without importing torch
    means: list[float] = []
    stds: list[float] = []
    for c in range(arr.shape[1]):
        plane = arr[:, c].astype(np.float64) / 255.0
        means.append(float(plane.mean()))
        stds.append(float(plane.std()))
    return tuple(means), tuple(stds)
