"""Datasets: registry, offline built-ins, file-backed loaders, subsets and batch transforms.

Images are stored as uint8 [N, C, H, W] at native size; ``to_model_input`` turns a batch into
float [0, 1] pixels at the model's size and channels; normalisation belongs to the model.
"""

from raysweep.data.info import ArrayDataset, DatasetInfo
from raysweep.data.registry import dataset_info, dataset_names, load_dataset
from raysweep.data.subsets import sample_subset
from raysweep.data.transforms import AUGMENTATIONS, augment_batch, to_model_input

__all__ = [
    "AUGMENTATIONS",
    "ArrayDataset",
    "DatasetInfo",
    "augment_batch",
    "dataset_info",
    "dataset_names",
    "load_dataset",
    "sample_subset",
    "to_model_input",
]
