"""A Ray Tune callback that records each fine-tune job as its MLflow run, on the driver.

A trial is one job, or a packed bundle of jobs (:func:`raysweep.driver.packing.bundle_jobs`)
whose results name their job (``JOB_KEY``), its end (``DONE_KEY``) and the next job's start
(``START_KEY``), see :func:`raysweep.worker.finetune.run_bundle`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ray import tune

from raysweep.driver.progress import Progress
from raysweep.driver.scheduling import one_line
from raysweep.driver.tracker import TRACKING_ERRORS, SweepTracker
from raysweep.plan import Job
from raysweep.protocol import DONE_KEY, ERROR_KEY, HOST_KEY, JOB_KEY, NODE_KEY, OOM_KEY, START_KEY
from raysweep.schema import CONVERGED_METRIC, CONVERGED_TAG, METRIC_PREFIXES, converged_label
from raysweep.store import Store


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
    """Creates a job's run when it starts, logs each report at step = epoch, closes the run.

    Unpacked trial: start / end of the trial. Packed trial: the results naming the job's start
    and end; if the bundle dies for good, its jobs not closed yet fail with the trial's error.
    An MLflow write that fails (a locked database, a lost server) fails only the jobs it was
    for, in this launch: their runs are not FINISHED, so a resume runs them again; a Tune
    callback that raised would instead end the whole experiment.
    """

    def __init__(
        self,
        tracker: SweepTracker,
        jobs: dict[str, Job],
        store: Store,
        progress: Progress,
        retry_oom: bool = False,
    ) -> None:
        self.tracker = tracker
        self.jobs = jobs
        self.store = store
        self.progress = progress
        #: A job that ran out of GPU memory (OOM_KEY) goes to ``out_of_memory`` with its run
        #: left open, for the stage to run again at fewer trials per GPU (:meth:`carry`),
        #: instead of failing; False: it fails like any reported error.
        self.retry_oom = retry_oom
        self.out_of_memory: set[str] = set()
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
    def keys_of(trial: Any) -> list[str]:
        """The job keys a trial runs: its own, or its bundle's."""
        if "bundle" in trial.config:
            return [job["key"] for job in trial.config["bundle"]["jobs"]]
        return [trial.config["job"]["key"]]

    def run_of(self, key: str) -> str:
        if key not in self.run_ids:
            self.run_ids[key] = self.tracker.start_job(self.jobs[key])
        return self.run_ids[key]

    def open_jobs(self, trial: Any) -> list[str]:
        ended = (self.finished, self.failures, self.out_of_memory)
        return [k for k in self.keys_of(trial) if not any(k in group for group in ended)]

    def carry(self, earlier: JobRecorder, keys: set[str]) -> None:
        """Continue the open runs of ``keys`` that ``earlier`` left for a retry: same run, no
        epoch logged twice (the retry resumes from the trial's saved state and re-reports)."""
        for key in keys:
            self.run_ids[key] = earlier.run_ids[key]
            if key in earlier.last_epoch:
                self.last_epoch[key] = earlier.last_epoch[key]
            if key in earlier.nodes:
                self.nodes[key] = earlier.nodes[key]

    def guarded(self, keys: list[str], write: Callable[[], None]) -> None:
        """Run MLflow writes for ``keys``; if MLflow refuses, those jobs fail in this launch."""
        try:
            write()
        except TRACKING_ERRORS as error:
            reason = f"MLflow could not record it ({one_line(error)}); resume to run it again"
            for key in keys:
                if key not in self.finished and key not in self.failures:
                    self.failures[key] = reason
                    self.progress.tick(failed=True)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if "bundle" not in trial.config:  # a bundle's jobs start on their START_KEY result
            key = self.keys_of(trial)[0]
            self.guarded([key], lambda: self.run_of(key))

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        named = [str(result[k]) for k in (JOB_KEY, START_KEY) if result.get(k) is not None]
        keys = named or self.keys_of(trial)[:1]
        self.guarded(keys, lambda: self.record_result(trial, result))

    def record_result(self, trial: Any, result: dict) -> None:
        """Log a result: a job's metrics, its end, and the start of the bundle's next job."""
        key = result.get(JOB_KEY)
        if key is not None or "bundle" not in trial.config:
            key = str(key or self.keys_of(trial)[0])
            self.record(key, result)
            if result.get(DONE_KEY):
                self.close(key)
        if result.get(START_KEY):
            starting = str(result[START_KEY])
            self.tag_node(self.run_of(starting), starting, result)

    def record(self, key: str, result: dict[str, Any]) -> None:
        """Log one result of a job: its error, or its metrics at step = epoch (once per epoch)."""
        run_id = self.run_of(key)
        self.tag_node(run_id, key, result)
        if result.get(OOM_KEY) and self.retry_oom:
            self.out_of_memory.add(key)
            return
        if ERROR_KEY in result:
            self.errors[key] = str(result[ERROR_KEY])
            return
        metrics, epoch = reported_metrics(result), int(result.get("epoch", 0))
        if not metrics or epoch <= self.last_epoch.get(key, 0):
            return
        self.last_epoch[key] = epoch
        self.tracker.log_metrics(run_id, metrics, step=epoch)
        if CONVERGED_METRIC in metrics:  # the final epoch's convergence record
            verdict = converged_label(metrics[CONVERGED_METRIC])
            self.tracker.client.set_tag(run_id, CONVERGED_TAG, verdict)

    def tag_node(self, run_id: str, key: str, result: dict[str, Any]) -> None:
        node = result.get(NODE_KEY)
        if node is not None and self.nodes.get(key) != node:
            self.tracker.tag_node(run_id, str(node), str(result.get(HOST_KEY, "")))
            self.nodes[key] = node

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if "bundle" not in trial.config:
            key = self.keys_of(trial)[0]
            self.guarded([key], lambda: self.close(key))
            return
        for key in self.open_jobs(trial):  # a bundle ends only after every job's "done"
            reason = "its bundle ended without running it; relaunch to retry"
            self.guarded([key], lambda key=key, reason=reason: self.fail(key, reason))

    def close(self, key: str) -> None:
        """End a job's run: FINISHED, or FAILED with the error it reported (a job to retry
        out of memory stays open)."""
        if key in self.finished or key in self.failures or key in self.out_of_memory:
            return
        run_id = self.run_of(key)
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
        for key in self.open_jobs(trial):
            self.guarded([key], lambda key=key: self.fail(key, error))

    def fail(self, key: str, error: str) -> None:
        self.failures[key] = error
        self.tracker.end_job(self.run_of(key), error=error)
        self.progress.tick(failed=True)
