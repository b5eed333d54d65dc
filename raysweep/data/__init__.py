"""Datasets: registry, offline built-ins, file-backed loaders, subsets and batch transforms.

Images are stored as uint8 [N, C, H, W] at native size; ``to_model_input`` turns a batch into
float [0, 1] pixels at the model's size and channels; normalisation belongs to the model.

Importing this package does not import torch: names and ``DatasetInfo`` are all the driver
needs to plan a sweep. The tensor helpers load on first access (PEP 562), so
``from raysweep.data import to_model_input`` works as before.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from raysweep.data.info import AUGMENTATIONS, ArrayDataset, DatasetInfo
from raysweep.data.registry import dataset_info, dataset_names, load_dataset
from raysweep.lazy import lazy_attributes

if TYPE_CHECKING:
    from raysweep.data.cache import cached_dataset
    from raysweep.data.subsets import draw_images, sample_subset, validation_split
    from raysweep.data.transforms import augment_batch, to_model_input

# public name -> submodule defining it
_LAZY: dict[str, str] = {
    "cached_dataset": "cache",
    "draw_images": "subsets",
    "sample_subset": "subsets",
    "validation_split": "subsets",
    "augment_batch": "transforms",
    "to_model_input": "transforms",
}

__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)


__all__ = [
    "AUGMENTATIONS",
    "ArrayDataset",
    "DatasetInfo",
    "augment_batch",
    "cached_dataset",
    "dataset_info",
    "dataset_names",
    "draw_images",
    "load_dataset",
    "sample_subset",
    "to_model_input",
    "validation_split",
]
