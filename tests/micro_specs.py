"""Small sweep specs for the tests that launch real sweeps: one cheap natural source."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

NATURAL_TEXTURES = {
    "name": "natural",
    "architecture": "small_cnn",
    "dataset": "textures",
    "training": {"kind": "natural"},
}
ONE_EPOCH = {"epochs": 1, "optimizer": {"lr": 0.05, "batch_size": 128}, "augment": "none"}


def one_source_spec(name: str, **grid: Any) -> dict[str, Any]:
    """A spec with one natural small_cnn source pretrained one epoch on `textures`."""
    return {"name": name, "sources": [NATURAL_TEXTURES], "pretrain": ONE_EPOCH, **grid}


def write_spec(folder: Path, name: str, grid: dict[str, Any], **changes: Any) -> Path:
    """``one_source_spec(name, **grid)`` with ``changes`` on top, as ``<folder>/<name>.yaml``."""
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({**one_source_spec(name, **grid), **changes}))
    return path
