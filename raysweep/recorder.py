"""A Ray Tune callback that records each fine-tune trial as its job's MLflow run, on the driver."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ray import tune

from raysweep.entrypoints import ERROR_KEY, HOST_KEY, NODE_KEY
from raysweep.plan import Job
from raysweep.progress import Progress
from raysweep.store import Store
from raysweep.tracking import SweepTracker

METRIC_PREFIXES = ("train/", "test/", "adv/", "val/")


def reported_metrics(result: dict[str, Any]) -> dict[str, float]:
    """The job's own metrics in a Tune result (Tune adds its bookkeeping beside them)."""
    metrics = {
        k: float(v)
        for k, v in result.items()
        if k.startswith(METRIC_PREFIXES) and isinstance(v, int | float)
    }
    if "n_train" in result:
        metrics["n_train"] = float(result["n_train"])
    return metrics


def error_text(trial: Any) -> str:
    """First line of the exception a trial died with, as stored by Tune."""
    path = getattr(trial, "error_file", None)
    if path and Path(path).is_file():
        lines = [ln for ln in Path(path).read_text().splitlines() if ln.strip()]
        if lines:
            return lines[-1][:500]
    return "trial failed without an error message; see the Tune logs in the sweep folder"


class JobRecorder(tune.Callback):
    """Creates the run when a trial starts, logs each report at step = epoch, closes the run."""

    def __init__(
        self, tracker: SweepTracker, jobs: dict[str, Job], store: Store, progress: Progress
    ) -> None:
        self.tracker = tracker
        self.jobs = jobs
        self.store = store
        self.progress = progress
        self.run_ids: dict[str, str] = {}
        self.errors: dict[str, str] = {}
        self.failures: dict[str, str] = {}
        self.finished: set[str] = set()
        #: Last epoch logged per job: a trial that Tune restarts (its node died) reports its
        #: early epochs again, and those must not be logged twice.
        self.last_epoch: dict[str, int] = {}
        #: Node each job's run is tagged with: tagged again only when a retry moved the trial.
        self.nodes: dict[str, str] = {}

    @staticmethod
    def key_of(trial: Any) -> str:
        return trial.config["job"]["key"]

    def run_of(self, trial: Any) -> str:
        key = self.key_of(trial)
        if key not in self.run_ids:
            self.run_ids[key] = self.tracker.start_job(self.jobs[key])
        return self.run_ids[key]

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.run_of(trial)

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        run_id = self.run_of(trial)
        self.tag_node(run_id, self.key_of(trial), result)
        if ERROR_KEY in result:
            self.errors[self.key_of(trial)] = str(result[ERROR_KEY])
            return
        key, epoch = self.key_of(trial), int(result["epoch"])
        if epoch <= self.last_epoch.get(key, 0):
            return
        self.last_epoch[key] = epoch
        self.tracker.log_metrics(run_id, reported_metrics(result), step=epoch)

    def tag_node(self, run_id: str, key: str, result: dict[str, Any]) -> None:
        node = result.get(NODE_KEY)
        if node is not None and self.nodes.get(key) != node:
            self.tracker.tag_node(run_id, str(node), str(result.get(HOST_KEY, "")))
            self.nodes[key] = node

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        key = self.key_of(trial)
        run_id = self.run_of(trial)
        job = self.jobs[key].config
        subset = self.store.subset(job["target"], job["subset_size"], job["seed"])
        if subset.is_file():
            self.tracker.client.log_artifact(run_id, str(subset), artifact_path="subset")
        error = self.errors.pop(key, None)
        self.tracker.end_job(run_id, error=error)
        if error is None:
            self.finished.add(key)
        else:
            self.failures[key] = error
        self.progress.tick(failed=error is not None)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        error = error_text(trial)
        self.failures[self.key_of(trial)] = error
        self.tracker.end_job(self.run_of(trial), error=error)
        self.progress.tick(failed=True)
