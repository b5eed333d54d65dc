"""The sweep folder: where a sweep keeps its spec copy, SQLite tracking file, Tune state, report.

    <root>/store/                 content-addressed checkpoints and subsets, shared by sweeps
    <root>/<name>/spec.yaml       the spec as launched (resume reads it)
    <root>/<name>/sweep.json      tracking URI and parent run id
    <root>/<name>/launch.lock     held by the launch running the sweep, naming it
    <root>/<name>/ledger.db       every job's state, kept by the driver (raysweep.ledger)
    <root>/<name>/mlflow.db       default tracking store (``mlflow ui --backend-store-uri …``)
    <root>/<name>/artifacts/      artifact root of the default store
    <root>/<name>/tune/           Ray Tune experiment state
    <root>/<name>/trials/<key>/   a running fine-tune trial's resumable state (raysweep.protocol)
    <root>/<name>/probes/<key>/   a probe's output files
    <root>/<name>/search/         the Optuna studies of a ``search:`` section
    <root>/<name>/report/         figures and tables
    <root>/<name>/cache/          runs analysis fetched (raysweep.analysis.runcache)

``<root>`` is ``--root``, else ``$RAYSWEEP_ROOT``, else ``./raysweep_runs``.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raysweep.store import Store, write_json_atomic

DEFAULT_ROOT = "raysweep_runs"
#: What a sweep or source name may be: it becomes a folder (``<root>/<name>``) and an MLflow
#: experiment, so no separators, no leading dot (``.``, ``..``, hidden folders), at most 100.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
NAME_RULE = "letters, digits, '.', '_' and '-', starting with a letter or digit, at most 100"


class SweepDirError(RuntimeError):
    """A sweep folder that is missing or cannot be written; the message says what to do."""


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a sweep or a source, or None when it can."""
    if NAME_PATTERN.fullmatch(name):
        return None
    shown = name if len(name) <= 40 else name[:37] + "..."
    return f"{shown!r} is not a valid name: use {NAME_RULE}"


def resolve_root(root: str | Path | None) -> Path:
    """``--root``, else ``$RAYSWEEP_ROOT``, else ``./raysweep_runs``, as an absolute path.

    A URI (``s3://…``, ``gs://…``) is refused: the store and trial states are written with
    atomic renames, which object stores do not offer (README, "Shared root")."""
    chosen = str(root or os.environ.get("RAYSWEEP_ROOT") or DEFAULT_ROOT)
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", chosen):
        raise SweepDirError(
            f"runs root {chosen} is a URI; raysweep needs a POSIX filesystem (local disk, or "
            "NFS/EFS mounted on every node): pass --root /mnt/shared/raysweep_runs"
        )
    return Path(chosen).expanduser().resolve()


@dataclass(frozen=True)
class SweepDir:
    root: Path
    name: str

    def __post_init__(self) -> None:
        problem = name_problem(self.name)
        if problem is not None:
            raise SweepDirError(f"sweep name {problem}")

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
    def lock_file(self) -> Path:
        """Held by the one launch running this sweep (raysweep.driver.lock)."""
        return self.path / "launch.lock"

    @property
    def ledger_file(self) -> Path:
        """Each job's state, written by the driver after MLflow (raysweep.ledger)."""
        return self.path / "ledger.db"

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
    def runs_cache_dir(self) -> Path:
        """The runs analysis fetched, kept so the next analysis fetches only new ones."""
        return self.path / "cache"

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
        try:
            state = json.loads(self.state_file.read_text())
        except (OSError, ValueError) as error:
            raise SweepDirError(
                f"{self.state_file} is unreadable ({error.__class__.__name__}); relaunch the "
                f"sweep's spec with --name {self.name} to rewrite it"
            ) from None
        if not isinstance(state, dict) or not isinstance(state.get("tracking_uri"), str):
            raise SweepDirError(
                f"{self.state_file} has no tracking_uri; relaunch the sweep's spec with "
                f"--name {self.name} (and --tracking-uri if it was not the default) to rewrite it"
            )
        return state

    def write_state(self, state: dict[str, Any]) -> None:
        write_json_atomic(self.state_file, state)

    def tracking_uri(self, override: str | None = None, *, new: bool = False) -> str:
        """The rule every command follows: ``--tracking-uri`` when given, else the URI the sweep
        was launched with (``sweep.json``); for a launch (``new``) of a sweep without a readable
        ``sweep.json``, the SQLite file in its folder. Otherwise the one-line error of
        :meth:`read_state`."""
        if override:
            return override
        if new:
            try:
                return str(self.read_state()["tracking_uri"])
            except SweepDirError:
                return self.default_tracking_uri()
        return str(self.read_state()["tracking_uri"])

    def recorded_tracking_uri(self) -> str | None:
        """The URI in ``sweep.json``, or None when there is none to read."""
        try:
            return str(self.read_state()["tracking_uri"])
        except SweepDirError:
            return None
