"""Dataset splits kept in memory across the jobs one worker process runs.

A reused Ray actor runs many trials and probes on the same few splits; loading CIFAR-10 from
disk each time would cost more than a small trial. Fine-tune trials, source tasks and probes
all read through :func:`cached_dataset`, so a process holds one copy of each split.
"""

from __future__ import annotations

import functools
from pathlib import Path

from raysweep.data.info import ArrayDataset
from raysweep.data.registry import load_dataset


@functools.lru_cache(maxsize=16)
def cached_dataset(name: str, split: str, data_root: str | None, download: bool) -> ArrayDataset:
    """``load_dataset(name, split)`` once per process and arguments."""
    root = Path(data_root).expanduser() if data_root else None
    return load_dataset(name, split, data_root=root, download=download)
