"""The sweep folder: where a sweep keeps its spec copy, SQLite tracking file, Tune state, report.

    <root>/store/                 content-addressed checkpoints and subsets, shared by sweeps
    <root>/<name>/spec.yaml       the spec as launched (resume reads it)
    <root>/<name>/sweep.json      tracking URI and parent run id
    <root>/<name>/mlflow.db       default tracking store (``mlflow ui --backend-store-uri …``)
    <root>/<name>/artifacts/      artifact root of the default store
    <root>/<name>/tune/           Ray Tune experiment state
    <root>/<name>/trials/<key>/   a running fine-tune trial's resumable state (raysweep.protocol)
    <root>/<name>/probes/<key>/   a probe's output files
    <root>/<name>/search/         the Optuna studies of a ``search:`` section
    <root>/<name>/report/         figures and tables

``<root>`` is ``--root``, else ``$RAYSWEEP_ROOT``, else ``./raysweep_runs``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raysweep.store import Store, write_json_atomic

DEFAULT_ROOT = "raysweep_runs"


class SweepDirError(RuntimeError):
    """A sweep folder that is missing or cannot be written; the message says what to do."""


def resolve_root(root: str | Path | None) -> Path:
    chosen = root or os.environ.get("RAYSWEEP_ROOT") or DEFAULT_ROOT
    return Path(chosen).expanduser().resolve()


@dataclass(frozen=True)
class SweepDir:
    root: Path
    name: str

    @property
    def path(self) -> Path:
        return self.root / self.name

    @property
    def store(self) -> Store:
        return Store(self.root / "store")

    @property
    def spec_copy(self) -> Path:
        return self.path / "spec.yaml"

    @property
    def state_file(self) -> Path:
        return self.path / "sweep.json"

    @property
    def tune_dir(self) -> Path:
        return self.path / "tune"

    @property
    def trials_dir(self) -> Path:
        return self.path / "trials"

    @property
    def search_dir(self) -> Path:
        return self.path / "search"

    def probe_dir(self, key: str) -> Path:
        return self.path / "probes" / key

    @property
    def report_dir(self) -> Path:
        return self.path / "report"

    @property
    def artifact_root(self) -> Path:
        return self.path / "artifacts"

    def default_tracking_uri(self) -> str:
        return f"sqlite:///{self.path / 'mlflow.db'}"

    def exists(self) -> bool:
        return self.state_file.is_file()

    def create(self) -> None:
        """Make the folders, failing with one line if the location is not writable."""
        try:
            for folder in (self.path, self.store.root, self.tune_dir, self.artifact_root):
                folder.mkdir(parents=True, exist_ok=True)
            probe = self.path / ".write-test"
            probe.write_text("ok")
            probe.unlink()
        except OSError as error:
            raise SweepDirError(
                f"cannot write the sweep folder {self.path} ({error.strerror}); pass a writable "
                "--root or set RAYSWEEP_ROOT"
            ) from None

    def read_state(self) -> dict[str, Any]:
        if not self.exists():
            known = sorted(p.parent.name for p in self.root.glob("*/sweep.json"))
            listing = ", ".join(known) if known else "none"
            raise SweepDirError(
                f"no sweep named '{self.name}' under {self.root} (known: {listing}); launch it "
                "first or pass --root"
            )
        return json.loads(self.state_file.read_text())

    def write_state(self, state: dict[str, Any]) -> None:
        write_json_atomic(self.state_file, state)

    def tracking_uri(self, override: str | None = None, *, new: bool = False) -> str:
        """The rule every command follows: ``--tracking-uri`` when given, else the URI the sweep
        was launched with (``sweep.json``); for a sweep not launched yet (``new``), the SQLite
        file in its folder. Without either, the one-line "no sweep named …" error."""
        if override:
            return override
        if new and not self.exists():
            return self.default_tracking_uri()
        return str(self.read_state()["tracking_uri"])
