"""The dataset registry: one name -> one DatasetInfo and one loader.

Built-ins (``shapes``, ``shapes_outline``, ``textures``, ``digits``) need no files; the
others are read from ``data_root`` in torchvision's layouts or, for the fine-grained targets,
their official archives' (see ``files.py``, ``finegrained.py``). Variants
(``caltech101_lowres``, ``caltech101_lowpass``; see ``variants.py``) load their base dataset and
transform its images; they keep the base's facts (classes, size, statistics) under their name.

Names and facts come from torch-free modules (``catalog.py``, ``builtin.py``), so the driver can
validate and plan without torch; the torch loaders (``files.py``, ``variants.py``) are imported
by ``load_dataset`` only.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from raysweep.data.builtin import BUILTIN_NAMES, SPLITS, builtin_info, load_builtin
from raysweep.data.catalog import FILE_INFOS, VARIANT_BASES
from raysweep.data.info import ArrayDataset, DatasetInfo


def dataset_names() -> list[str]:
    """Every registered dataset name, built-ins first."""
    return [*BUILTIN_NAMES, *FILE_INFOS, *VARIANT_BASES]


def _check_name(name: str) -> None:
    if name not in BUILTIN_NAMES and name not in FILE_INFOS and name not in VARIANT_BASES:
        raise ValueError(f"unknown dataset {name!r}; valid: {', '.join(dataset_names())}")


def dataset_info(name: str) -> DatasetInfo:
    """Static facts about ``name``; for a built-in this generates (and caches) its train split."""
    _check_name(name)
    if name in VARIANT_BASES:
        return dataclasses.replace(dataset_info(VARIANT_BASES[name]), name=name)
    return builtin_info(name) if name in BUILTIN_NAMES else FILE_INFOS[name]


def load_dataset(
    name: str,
    split: str,
    *,
    data_root: str | Path | None = None,
    download: bool = False,
) -> ArrayDataset:
    """One split of ``name`` in memory as uint8 [N, C, H, W] images and int64 labels.

    Built-ins ignore ``data_root``/``download``. File-backed datasets raise
    ``FileNotFoundError`` naming the folder looked in when their files are absent and
    ``download`` is false.
    """
    _check_name(name)
    if split not in SPLITS:
        raise ValueError(
            f"unknown split {split!r} for dataset '{name}'; valid: {', '.join(SPLITS)}"
        )
    if name in VARIANT_BASES:
        from raysweep.data.variants import VARIANT_TRANSFORMS

        data = load_dataset(VARIANT_BASES[name], split, data_root=data_root, download=download)
        return ArrayDataset(VARIANT_TRANSFORMS[name](data.images), data.labels, dataset_info(name))
    if name in BUILTIN_NAMES:
        return load_builtin(name, split)
    from raysweep.data.files import load_file_dataset

    return load_file_dataset(name, split, data_root, download)
