"""The content-addressed store: source checkpoints, subset indices and frozen features.

The store lives under the runs root and is shared by every sweep there, so a source model that
two sweeps describe identically is trained once. Files are written atomically (a temporary
file, then ``os.replace``): a crash leaves either the old state or the new one, never half.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raysweep.schema import subset_label


def write_json_atomic(path: Path, payload: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(payload, handle, sort_keys=True)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclass(frozen=True)
class Store:
    root: Path

    def checkpoint(self, key: str) -> Path:
        return self.root / "checkpoints" / f"{key}.pt"

    def record(self, key: str) -> Path:
        """The JSON record written after a checkpoint: training history and metadata."""
        return self.root / "checkpoints" / f"{key}.json"

    def features(self, key: str) -> Path:
        """Frozen penultimate features of a source on a target split (raysweep.worker.features)."""
        return self.root / "features" / f"{key}.pt"

    def subset(self, target: str, size: int | None, seed: int) -> Path:
        return self.root / "subsets" / target / f"n{subset_label(size)}-seed{seed}.json"

    def read_record(self, key: str) -> dict[str, Any] | None:
        """The record of a finished source, or None if it has not been (fully) written."""
        record, checkpoint = self.record(key), self.checkpoint(key)
        if not (record.is_file() and checkpoint.is_file()):
            return None
        try:
            return json.loads(record.read_text())
        except json.JSONDecodeError:
            return None
