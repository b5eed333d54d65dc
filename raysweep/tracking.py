"""MLflow conventions: one experiment and parent run per sweep, one child run per job.

The driver is the only process that writes to MLflow (Ray workers report to it), so a SQLite
file is safe and a crash can never leave two writers disagreeing. A job's run is found by its
tag ``raysweep.key``; a FINISHED run means the job is done and is never run again.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from importlib import metadata
from pathlib import Path

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from raysweep.plan import Job

KEY_TAG = "raysweep.key"
SWEEP_TAG = "raysweep.sweep"
ROLE_TAG = "raysweep.role"
STAGE_TAG = "raysweep.stage"
ERROR_TAG = "raysweep.error"
#: The Ray node id and the hostname a job ran on (the last ones, if it was retried elsewhere).
NODE_TAG = "raysweep.node"
HOST_TAG = "raysweep.host"
PARENT_TAG = "mlflow.parentRunId"
RUN_NAME_TAG = "mlflow.runName"
PACKAGES = ("raysweep", "ray", "torch", "torchvision", "mlflow", "optuna", "numpy", "pot")
#: MLflow caps one log_batch call at 1,000 metrics.
BATCH_LIMIT = 1000

# With an HTTP tracking URI, MLflow prints two "View run … at" lines for every run it closes (and
# fetches the run to do so): thousands of jobs would bury the progress lines.
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")


class TrackingError(RuntimeError):
    """The tracking server or store cannot be used; the message says how to fix it."""


def experiment_name(sweep: str) -> str:
    return f"raysweep/{sweep}"


def check_reachable(tracking_uri: str, timeout_s: float = 5.0) -> None:
    """Fail fast, before any work, if an HTTP tracking server does not answer."""
    if not tracking_uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(f"{tracking_uri.rstrip('/')}/health", timeout=timeout_s):
            return
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise TrackingError(
            f"MLflow tracking server {tracking_uri} is unreachable ({reason}); start it or "
            "pass another --tracking-uri"
        ) from None


def package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def git_sha() -> str:
    """The commit of the raysweep checkout that runs, or 'unknown' outside a git checkout."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


class SweepTracker:
    """The MLflow side of one sweep."""

    def __init__(self, tracking_uri: str, sweep: str, artifact_root: Path | None = None) -> None:
        check_reachable(tracking_uri)
        self.uri = tracking_uri
        self.sweep = sweep
        self.client = MlflowClient(tracking_uri=tracking_uri)
        self.experiment_id = self._experiment(artifact_root)
        self.parent_id: str | None = None

    def _experiment(self, artifact_root: Path | None) -> str:
        name = experiment_name(self.sweep)
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            if found.lifecycle_stage == "deleted":
                self.client.restore_experiment(found.experiment_id)
            return found.experiment_id
        location = artifact_root.resolve().as_uri() if artifact_root else None
        return self.client.create_experiment(name, artifact_location=location)

    def runs(self, filter_string: str, statuses: Iterable[str] | None = None) -> list:
        """All active runs of this sweep's experiment matching the filter (paginated)."""
        found, token = [], None
        while True:
            page = self.client.search_runs(
                [self.experiment_id], filter_string, max_results=5000, page_token=token
            )
            found.extend(page)
            token = page.token
            if not token:
                break
        if statuses is not None:
            wanted = set(statuses)
            found = [run for run in found if run.info.status in wanted]
        return found

    def open_parent(self, spec_path: Path) -> str:
        """Reuse the sweep's parent run or create it, with spec, git SHA and versions."""
        existing = self.runs(f"tags.`{ROLE_TAG}` = 'sweep'")
        if existing:
            self.parent_id = existing[0].info.run_id
            self.client.update_run(self.parent_id, status="RUNNING")
        else:
            tags = {SWEEP_TAG: self.sweep, ROLE_TAG: "sweep", RUN_NAME_TAG: self.sweep}
            run = self.client.create_run(self.experiment_id, tags=tags)
            self.parent_id = run.info.run_id
        versions = package_versions()
        tags = {"raysweep.git_sha": git_sha(), **{f"version.{k}": v for k, v in versions.items()}}
        self.client.log_batch(self.parent_id, tags=[RunTag(k, v) for k, v in tags.items()])
        self.client.log_artifact(self.parent_id, str(spec_path), artifact_path="spec")
        return self.parent_id

    def finish_parent(self, status: str) -> None:
        if self.parent_id is not None:
            self.client.set_terminated(self.parent_id, status=status)

    def finished_keys(self) -> set[str]:
        runs = self.runs(f"tags.`{ROLE_TAG}` = 'job'", statuses=("FINISHED",))
        return {run.data.tags[KEY_TAG] for run in runs if KEY_TAG in run.data.tags}

    def failed_keys(self) -> set[str]:
        runs = self.runs(f"tags.`{ROLE_TAG}` = 'job'", statuses=("FAILED",))
        return {run.data.tags[KEY_TAG] for run in runs if KEY_TAG in run.data.tags}

    def retire_unfinished(self, keys: set[str]) -> int:
        """Mark runs of unfinished jobs KILLED and delete them, so each job keeps one run.

        A run left RUNNING by a crashed driver (or FAILED earlier) would otherwise sit beside
        the run that the retry creates. Deleted runs stay restorable in MLflow's trash.
        """
        stale = self.runs(
            f"tags.`{ROLE_TAG}` = 'job'", statuses=("RUNNING", "SCHEDULED", "FAILED", "KILLED")
        )
        retired = 0
        for run in stale:
            if run.data.tags.get(KEY_TAG) in keys:
                if run.info.status in ("RUNNING", "SCHEDULED"):
                    self.client.set_terminated(run.info.run_id, status="KILLED")
                self.client.delete_run(run.info.run_id)
                retired += 1
        return retired

    def start_job(self, job: Job) -> str:
        """Create the child run of a job, with every axis as a param and a tag."""
        assert self.parent_id is not None, "open_parent() first"
        tags = {
            **job.axes,
            PARENT_TAG: self.parent_id,
            SWEEP_TAG: self.sweep,
            ROLE_TAG: "job",
            STAGE_TAG: job.stage,
            KEY_TAG: job.key,
            RUN_NAME_TAG: job.name,
        }
        run = self.client.create_run(self.experiment_id, tags=tags)
        params = [Param(k, v) for k, v in job.axes.items()]
        params.append(Param("config", json.dumps(job.config, sort_keys=True)[:6000]))
        self.client.log_batch(run.info.run_id, params=params)
        return run.info.run_id

    def log_metrics(self, run_id: str, metrics: Mapping[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        for start in range(0, len(batch), BATCH_LIMIT):
            self.client.log_batch(run_id, metrics=batch[start : start + BATCH_LIMIT])

    def tag_node(self, run_id: str, node_id: str, hostname: str) -> None:
        """Record where a job ran; workers report it, the driver (sole MLflow writer) tags it."""
        tags = [RunTag(NODE_TAG, node_id), RunTag(HOST_TAG, hostname)]
        self.client.log_batch(run_id, tags=tags)

    def end_job(self, run_id: str, error: str | None = None) -> None:
        if error is not None:
            self.client.set_tag(run_id, ERROR_TAG, error[:5000])
        self.client.set_terminated(run_id, status="FAILED" if error else "FINISHED")
