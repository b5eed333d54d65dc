"""The content-addressed store: source checkpoints, subset indices and frozen features.

The store lives under the runs root and is shared by every sweep there, so a source model that
two sweeps describe identically is trained once. Files are written atomically (a temporary
file, then ``os.replace``): a crash leaves either the old state or the new one, never half.
Writers of the same entry serialise on a file lock (:func:`exclusive`), so two sweeps that
need one source at once train it once.

The store does not trust its files: each checkpoint's sha256 is in its JSON record and is
checked when the checkpoint is loaded (:meth:`Store.verified_checkpoint`); feature files carry
theirs in a sidecar record, subset files in themselves. A checkpoint that fails the check fails
its jobs with the fix (delete it, relaunch: the pretrain stage rebuilds it); derived files
(features, subset indices) are recomputed.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raysweep.schema import subset_label

#: Bytes hashed per read: large enough to hash a 100 MB checkpoint in well under a second.
_HASH_CHUNK = 1 << 20


class StoreError(ValueError):
    """A stored file that fails its checksum; the message names the file and the fix."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_HASH_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


@contextlib.contextmanager
def exclusive(lock_path: Path) -> Iterator[None]:
    """An exclusive advisory lock held for the block (blocks until other holders release)."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def write_json_atomic(path: Path, payload: Any) -> None:
    write_text_atomic(path, json.dumps(payload, sort_keys=True))


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, then rename: never half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
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

    def lock(self, key: str) -> Path:
        """The lock file writers of source ``key`` hold while they build it."""
        return self.root / "checkpoints" / f"{key}.lock"

    def read_record(self, key: str) -> dict[str, Any] | None:
        """The record of a finished source, or None if it has not been (fully) written."""
        record, checkpoint = self.record(key), self.checkpoint(key)
        if not (record.is_file() and checkpoint.is_file()):
            return None
        try:
            return json.loads(record.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None

    def verified_checkpoint(self, key: str) -> Path:
        """The checkpoint of source ``key`` once its sha256 matches its record.

        A checkpoint without a checksum (its record not written yet, or written before
        checksums existed) is accepted as it is: checkpoints are written atomically, so it is
        whole, and the next pretrain task that reuses it records the checksum."""
        path = self.checkpoint(key)
        if not path.is_file():
            raise FileNotFoundError(
                f"source checkpoint {path} is missing; relaunch the sweep: the pretrain stage "
                "rebuilds it"
            )
        expected = (self.read_record(key) or {}).get("sha256")
        if expected is not None and sha256_file(path) != expected:
            raise StoreError(
                f"source checkpoint {path} is corrupt (its sha256 differs from the one recorded "
                f"when it was written); delete it and relaunch: the pretrain stage rebuilds it"
            )
        return path

    def subset_file_ok(self, target: str, size: int | None, seed: int, indices: list[int]) -> bool:
        """Whether the stored subset file holds exactly ``indices`` with a matching checksum."""
        path = self.subset(target, size, seed)
        try:
            saved = json.loads(path.read_text())
        except (OSError, ValueError):
            return False
        return saved.get("indices") == indices and saved.get("sha256") == indices_sha256(indices)

    def write_subset(self, target: str, size: int | None, seed: int, indices: list[int]) -> Path:
        """Write (or repair) the subset file of a fine-tune job: its indices and their sha256."""
        path = self.subset(target, size, seed)
        if not self.subset_file_ok(target, size, seed, indices):
            write_json_atomic(path, {"indices": indices, "sha256": indices_sha256(indices)})
        return path


def indices_sha256(indices: list[int]) -> str:
    """sha256 of a subset's indices as canonical JSON (what a subset file's checksum covers)."""
    return hashlib.sha256(json.dumps(indices, separators=(",", ":")).encode()).hexdigest()
