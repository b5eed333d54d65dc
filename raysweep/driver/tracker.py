"""The MLflow writer of a sweep: its experiment, parent run and one child run per job.

The driver is the only process that writes to MLflow (Ray workers report to it), so a SQLite
file is safe and a crash can never leave two writers disagreeing. The names it writes are those
of :mod:`raysweep.schema`; a FINISHED run means the job is done and is never run again.
"""

from __future__ import annotations

import getpass
import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from importlib import metadata
from pathlib import Path

from mlflow.entities import Metric, Param, Run, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from requests.exceptions import RequestException
from sqlalchemy.exc import SQLAlchemyError

from raysweep.ledger import FAILED, FINISHED, Entry, Ledger
from raysweep.plan import Job, Plan
from raysweep.schema import (
    CONFIG_PARAM,
    CONFIG_PARAM_LIMIT,
    ERROR_TAG,
    ERROR_TAG_LIMIT,
    EXPERIMENT_KIND,
    EXPERIMENT_KIND_TAG,
    GIT_COMMIT_TAG,
    GIT_SHA_TAG,
    HOST_TAG,
    JOB_ROLE,
    KEY_TAG,
    LAUNCH_TAG,
    NODE_TAG,
    PARENT_TAG,
    ROLE_TAG,
    RUN_NAME_TAG,
    SOURCE_NAME_TAG,
    SOURCE_TYPE_TAG,
    STAGE_TAG,
    SWEEP_ROLE,
    SWEEP_TAG,
    USER_TAG,
    VERSION_TAG_PREFIX,
    check_reachable,
    experiment_name,
    iter_runs,
    job_filter,
    recipe_params,
    sqlite_path,
    subset_label,
)

#: What MLflow raises when its store or server refuses a write: a locked or full database, a
#: lost connection, a full disk.
TRACKING_ERRORS = (MlflowException, SQLAlchemyError, RequestException, OSError)
#: MLflow caps params at 100 per log_batch call and 6,000 characters per value.
PARAM_BATCH_LIMIT = 100
PARAM_VALUE_LIMIT = 6000
PACKAGES = ("raysweep", "ray", "torch", "torchvision", "mlflow", "optuna", "numpy", "pot")
#: MLflow caps one log_batch call at 1,000 metrics.
BATCH_LIMIT = 1000

# With an HTTP tracking URI, MLflow prints two "View run … at" lines for every run it closes (and
# fetches the run to do so): thousands of jobs would bury the progress lines.
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")


def package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def user_name() -> str:
    """Who launched the sweep (MLflow's User column)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry in some containers
        return "unknown"


def sweep_params(plan: Plan) -> dict[str, str]:
    """A sweep's axes and sizes, as its parent run's params (``sweep.*``)."""
    spec = plan.spec
    values = {
        "sweep.sources": ", ".join(s.name for s in spec.sources),
        "sweep.targets": ", ".join(
            dict.fromkeys(t for s in spec.sources for t in spec.targets_for(s))
        ),
        "sweep.subset_sizes": ", ".join(subset_label(s) for s in spec.subset_sizes),
        "sweep.blocks": ", ".join(str(b) for b in spec.blocks),
        "sweep.probes": ", ".join(p.name for p in spec.probes),
        "sweep.jobs": str(plan.total),
    }
    values.update({f"sweep.jobs.{stage}": str(len(jobs)) for stage, jobs in plan.jobs.items()})
    if spec.finetune is not None and spec.subset_sizes:
        values["sweep.seeds"] = ", ".join(str(len(spec.seeds_for(s))) for s in spec.subset_sizes)
    return {k: v for k, v in values.items() if v}


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


def create_sqlite_store(tracking_uri: str, artifact_root: Path | None) -> None:
    """Create a missing SQLite store whole or not at all: MLflow builds its tables in a
    temporary file beside it, which is renamed into place only once complete.

    MLflow creating ``mlflow.db`` in place and failing half-way (a full disk) left a database
    that every later launch refused ("table spans already exists"). Its ``Default`` experiment
    gets the sweep's artifact folder instead of ``./mlruns`` in the current directory.
    """
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    path = sqlite_path(tracking_uri)
    if path is None or path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left by a launch that died here
        stale.unlink(missing_ok=True)
    # A fresh name per attempt: MLflow keeps an engine per database URI, and one for a file
    # that a failed attempt removed only answers "readonly database".
    tmp = path.parent / f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp"
    try:
        root = (artifact_root or path.parent / "artifacts").resolve().as_uri()
        store = SqlAlchemyStore(f"sqlite:///{tmp}", root)
        store.engine.dispose()
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def job_params(job: Job) -> dict[str, str]:
    """The params of a job's run: every axis, its resolved recipe flat (``finetune.lr``, …)
    and the whole config as JSON, each cut to MLflow's limit."""
    values = {**job.axes, **recipe_params(job.stage, job.config)}
    values[CONFIG_PARAM] = json.dumps(job.config, sort_keys=True)[:CONFIG_PARAM_LIMIT]
    return {k: v[:PARAM_VALUE_LIMIT] for k, v in values.items()}


class SweepTracker:
    """The MLflow side of one sweep, for one launch (``launch_id`` tags every run it writes)."""

    def __init__(
        self,
        tracking_uri: str,
        sweep: str,
        artifact_root: Path | None = None,
        launch_id: str = "",
        ledger: Ledger | None = None,
    ) -> None:
        check_reachable(tracking_uri)
        create_sqlite_store(tracking_uri, artifact_root)
        self.uri = tracking_uri
        self.sweep = sweep
        self.launch_id = launch_id
        self.client = MlflowClient(tracking_uri=tracking_uri)
        self.experiment_id = self._experiment(artifact_root)
        self.parent_id: str | None = None
        #: Where each job's state is also written, after MLflow (raysweep.ledger).
        self.ledger = ledger
        #: The job of each run this launch opened and has not closed yet.
        self.open_jobs: dict[str, Job] = {}
        #: MLflow's Source / User / Version columns, the same on every run of this launch.
        self.system_tags = {
            SOURCE_NAME_TAG: "raysweep",
            SOURCE_TYPE_TAG: "LOCAL",
            GIT_COMMIT_TAG: git_sha(),
            USER_TAG: user_name(),
        }

    def _experiment(self, artifact_root: Path | None) -> str:
        """The sweep's experiment (restored if deleted), opening on its training runs."""
        name = experiment_name(self.sweep)
        found = self.client.get_experiment_by_name(name)
        if found is None:
            location = artifact_root.resolve().as_uri() if artifact_root else None
            experiment_id = self.client.create_experiment(name, artifact_location=location)
        else:
            experiment_id = found.experiment_id
            if found.lifecycle_stage == "deleted":
                self.client.restore_experiment(experiment_id)
        self.client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        return experiment_id

    def runs(self, filter_string: str, statuses: Iterable[str] | None = None) -> list[Run]:
        """All active runs of this sweep's experiment matching the filter (paginated)."""
        found = list(iter_runs(self.client, [self.experiment_id], filter_string, page_size=5000))
        if statuses is not None:
            wanted = set(statuses)
            found = [run for run in found if run.info.status in wanted]
        return found

    def job_runs(
        self, stage: str | None = None, statuses: Iterable[str] | None = None
    ) -> list[Run]:
        """The sweep's job runs (of one stage, with one of ``statuses``, if given). The store
        filters on the status where it can, so asking for the few unfinished runs of a large
        sweep does not list the finished ones."""
        wanted = None if statuses is None else set(statuses)
        condition = None
        if wanted == {FINISHED}:
            condition = f"= '{FINISHED}'"
        elif wanted is not None and FINISHED not in wanted:
            condition = f"!= '{FINISHED}'"
        return self.runs(job_filter(stage, status=condition), wanted)

    def open_parent(self, spec_path: Path, overrides: Sequence[str] = ()) -> str:
        """Reuse the sweep's parent run or create it, with spec, git SHA, versions and this
        launch's overrides (tag ``sweep.overrides``: they may differ between launches)."""
        existing = self.runs(f"tags.`{ROLE_TAG}` = '{SWEEP_ROLE}'")
        if existing:
            self.parent_id = existing[0].info.run_id
            self.client.update_run(self.parent_id, status="RUNNING")
        else:
            tags = {SWEEP_TAG: self.sweep, ROLE_TAG: SWEEP_ROLE, RUN_NAME_TAG: self.sweep}
            run = self.client.create_run(self.experiment_id, tags=tags)
            self.parent_id = run.info.run_id
        versions = package_versions()
        tags = {
            **self.system_tags,
            GIT_SHA_TAG: git_sha(),
            LAUNCH_TAG: self.launch_id,
            **{VERSION_TAG_PREFIX + k: v for k, v in versions.items()},
        }
        if overrides:
            tags["sweep.overrides"] = " ".join(overrides)[:PARAM_VALUE_LIMIT]
        self.client.log_batch(self.parent_id, tags=[RunTag(k, v) for k, v in tags.items()])
        self.client.log_artifact(self.parent_id, str(spec_path), artifact_path="spec")
        return self.parent_id

    def finish_parent(self, status: str, summary: Mapping[str, float] | None = None) -> None:
        """Close the parent run, with this launch's summary metrics (``sweep/*``)."""
        if self.parent_id is None:
            return
        if summary:
            self.log_metrics(self.parent_id, summary, step=0)
        self.client.set_terminated(self.parent_id, status=status)

    def retire_unfinished(self, keys: set[str]) -> set[str]:
        """Mark runs of unfinished jobs KILLED and delete them, so each job keeps one run.

        A run left RUNNING by a crashed driver (or FAILED earlier) would otherwise sit beside
        the run that the retry creates. Only runs of other launches are touched: this launch
        holds the sweep's lock, so they are dead. Deleted runs stay restorable in MLflow's trash.
        Returns the keys whose runs were retired.
        """
        stale = self.job_runs(statuses=("RUNNING", "SCHEDULED", "FAILED", "KILLED"))
        retired: set[str] = set()
        for run in stale:
            theirs = run.data.tags.get(LAUNCH_TAG) != self.launch_id
            key = run.data.tags.get(KEY_TAG)
            if key in keys and theirs:
                if run.info.status in ("RUNNING", "SCHEDULED"):
                    self.client.set_terminated(run.info.run_id, status="KILLED")
                self.client.delete_run(run.info.run_id)
                retired.add(key)
        return retired

    def job_tags(self, job: Job) -> dict[str, str]:
        """The tags of a job's run: every axis, its key, stage, sweep, parent and launch."""
        assert self.parent_id is not None, "open_parent() first"
        return {
            **self.system_tags,
            **job.axes,
            PARENT_TAG: self.parent_id,
            SWEEP_TAG: self.sweep,
            ROLE_TAG: JOB_ROLE,
            STAGE_TAG: job.stage,
            KEY_TAG: job.key,
            LAUNCH_TAG: self.launch_id,
            RUN_NAME_TAG: job.name,
        }

    def start_job(self, job: Job) -> str:
        """Create the child run of a job when its work starts: every axis as a param and a
        tag, its resolved recipe as flat params (``finetune.lr``, …), the whole config as JSON."""
        run = self.client.create_run(self.experiment_id, tags=self.job_tags(job), run_name=job.name)
        params = [Param(k, v) for k, v in job_params(job).items()]
        for start in range(0, len(params), PARAM_BATCH_LIMIT):
            chunk = params[start : start + PARAM_BATCH_LIMIT]
            self.client.log_batch(run.info.run_id, params=chunk)
        self.open_jobs[run.info.run_id] = job
        if self.ledger is not None:
            self.ledger.started(job.key, job.stage, job.name, run.info.run_id)
        return run.info.run_id

    def log_metrics(self, run_id: str, metrics: Mapping[str, float], step: int) -> None:
        self.log_steps(run_id, [(step, metrics)])

    def log_steps(self, run_id: str, steps: Iterable[tuple[int, Mapping[str, float]]]) -> None:
        """Metrics of several steps in as few calls as MLflow allows (1,000 a call): one call
        per metric cost 69× more on SQL stores (mlflow#3010; bench/recording.py measures it)."""
        now = int(time.time() * 1000)
        batch = [
            Metric(k, float(v), now, step) for step, metrics in steps for k, v in metrics.items()
        ]
        for start in range(0, len(batch), BATCH_LIMIT):
            self.client.log_batch(run_id, metrics=batch[start : start + BATCH_LIMIT])

    def tag_node(self, run_id: str, node_id: str, hostname: str) -> None:
        """Record where a job ran; workers report it, the driver (sole MLflow writer) tags it."""
        tags = [RunTag(NODE_TAG, node_id), RunTag(HOST_TAG, hostname)]
        self.client.log_batch(run_id, tags=tags)

    def end_job(self, run_id: str, error: str | None = None) -> None:
        """Close a job's run, FINISHED or FAILED with ``error``; then its ledger entry."""
        reason = None if error is None else error[:ERROR_TAG_LIMIT]
        if reason is not None:
            self.client.set_tag(run_id, ERROR_TAG, reason)
        status = FINISHED if reason is None else FAILED
        ended = int(time.time() * 1000)
        self.client.set_terminated(run_id, status=status, end_time=ended)
        job = self.open_jobs.pop(run_id, None)
        if self.ledger is not None and job is not None:
            entry = Entry(job.key, job.stage, job.name, status, run_id, reason, ended)
            self.ledger.write([entry])

    def log_sweep(self, plan: Plan) -> None:
        """The sweep's own params on its parent run: its axes and sizes (``sweep.*``). A param
        logged by an earlier launch keeps its value (MLflow params never change): a changed
        value (``--extend``) goes to the tag of the same name."""
        assert self.parent_id is not None, "open_parent() first"
        logged = self.client.get_run(self.parent_id).data.params
        values = sweep_params(plan)
        new = [Param(k, v) for k, v in values.items() if k not in logged]
        changed = [RunTag(k, v) for k, v in values.items() if k in logged and logged[k] != v]
        for start in range(0, len(new), PARAM_BATCH_LIMIT):
            self.client.log_batch(self.parent_id, params=new[start : start + PARAM_BATCH_LIMIT])
        if changed:
            self.client.log_batch(self.parent_id, tags=changed)
