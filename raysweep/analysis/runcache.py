"""A sweep's runs kept between analyses, so a re-analysis fetches only what is new.

Listing every run through ``search_runs`` costs time in proportion to the sweep (49.6 s for
``raysweep analyze`` at 14,402 jobs, issue #18), and the accuracy-during-training family read
each run's metric history on top. FINISHED runs never change, so the frames are kept in
``<cache_dir>/``: one file of runs per stage, one of histories per (stage, metric), each beside a
``.json`` naming the store and experiment it came from. A later fetch asks MLflow only for the
runs that ended after the newest one kept (less :data:`~raysweep.schema.END_TIME_MARGIN_MS`),
plus, by id, the FINISHED runs the sweep's job ledger names that it lacks (a run whose end time
came from a machine with a slower clock), and only for the histories of runs it has not seen.
A cache from another store or experiment (``--tracking-uri``, a relaunch elsewhere), or one
that cannot be read, is fetched again whole.
A run deleted in the MLflow UI after it was cached stays in the cache: delete ``<cache_dir>``
to forget it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from mlflow import MlflowClient

from raysweep.analysis.results import (
    default_cache_path,
    latest_per_key,
    load_cached,
    metric_column,
    metric_history,
    sweep_runs,
)
from raysweep.ledger import Ledger, LedgerError
from raysweep.schema import END_TIME_MARGIN_MS, store_exists, sweep_experiment

#: Bumped when the cached frames' layout changes: older caches are then fetched again.
CACHE_VERSION = 1


class RunCache:
    """The cached frames of one sweep in one store, under ``folder``."""

    def __init__(
        self, folder: Path, tracking_uri: str, sweep: str, ledger_file: Path | None = None
    ) -> None:
        self.folder = Path(folder)
        self.ledger_file = ledger_file
        self.tracking_uri = tracking_uri
        self.sweep = sweep
        experiment = []
        if store_exists(tracking_uri):
            experiment = sweep_experiment(MlflowClient(tracking_uri), sweep)
        self.identity = {
            "tracking_uri": tracking_uri,
            "experiment_id": experiment[0] if experiment else None,
            "version": CACHE_VERSION,
        }

    def _read(self, stem: str) -> pd.DataFrame | None:
        path = default_cache_path(self.folder, stem)
        meta = path.with_suffix(".json")
        try:
            if json.loads(meta.read_text()) != self.identity:
                return None
            return load_cached(path)
        except (OSError, ValueError, ImportError):  # missing, damaged, or another layout
            return None

    def _write(self, stem: str, df: pd.DataFrame) -> None:
        """Keep ``df``; a folder that cannot be written (another user's sweep) only costs the
        next analysis a full fetch. The frame is written before its identity, so a torn write
        reads as no cache."""
        path = default_cache_path(self.folder, stem)
        meta = path.with_suffix(".json")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            meta.unlink(missing_ok=True)
            if path.suffix == ".parquet":
                df.to_parquet(path, index=False)
            else:
                df.to_csv(path, index=False)
            meta.write_text(json.dumps(self.identity))
        except OSError:
            return

    def runs(self, stage: str) -> pd.DataFrame:
        """The stage's FINISHED runs, as :func:`~raysweep.analysis.results.sweep_runs` gives
        them, fetching only those that ended since the cached ones."""
        stem = f"runs_{stage}"
        cached = self._read(stem)
        if cached is None or cached.empty:
            fresh = sweep_runs(self.tracking_uri, self.sweep, stage=stage)
        else:
            since = int(pd.to_numeric(cached["end_time"]).max()) - END_TIME_MARGIN_MS
            new = sweep_runs(self.tracking_uri, self.sweep, stage=stage, ended_since=since)
            missing = self.ledger_finished(stage) - {*cached["run_id"], *new["run_id"]}
            if missing:  # ended "before" the cache by another machine's clock
                lost = sweep_runs(self.tracking_uri, self.sweep, stage=stage, run_ids=missing)
                new = pd.concat([new, lost]) if not new.empty else lost
            fresh = cached if new.empty else latest_per_key(pd.concat([cached, new]))
        if self.identity["experiment_id"] is not None:
            self._write(stem, fresh)
        return fresh

    def ledger_finished(self, stage: str) -> set[str]:
        """The FINISHED runs of ``stage`` the sweep's job ledger names (none without one)."""
        if self.ledger_file is None or not self.ledger_file.is_file():
            return set()
        try:
            with Ledger(self.ledger_file, readonly=True) as ledger:
                if ledger.meta("store") != {
                    "tracking_uri": self.tracking_uri,
                    "experiment_id": self.identity["experiment_id"],
                }:
                    return set()
                return ledger.finished_run_ids(stage)
        except LedgerError:
            return set()

    def history(self, stage: str, metric: str, run_ids: list[str]) -> pd.DataFrame:
        """Every value of ``metric`` of ``run_ids`` (``run_id, step, value``), reading from
        MLflow only the runs not cached yet."""
        stem = f"history_{stage}_{metric_column(metric)}"
        cached = self._read(stem)
        if cached is None:
            cached = pd.DataFrame({"run_id": [], "step": [], "value": []})
        known = set(cached["run_id"].astype(str))
        missing = [run_id for run_id in run_ids if run_id not in known]
        if missing:
            new = metric_history(self.tracking_uri, missing, metric)
            cached = pd.concat([cached, new], ignore_index=True) if len(cached) else new
            if self.identity["experiment_id"] is not None:
                self._write(stem, cached)
        wanted = cached[cached["run_id"].isin(set(run_ids))]
        return wanted.astype({"run_id": object, "step": "int64", "value": "float64"})
