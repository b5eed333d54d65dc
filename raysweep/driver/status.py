"""`raysweep status`: done / running / failed / pending per stage, read from MLflow."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from mlflow import MlflowClient
from mlflow.entities import Run

from raysweep.plan import make_plan
from raysweep.schema import (
    ERROR_TAG,
    KEY_TAG,
    check_reachable,
    iter_runs,
    job_filter,
    store_exists,
    sweep_experiment,
)
from raysweep.spec import load_spec
from raysweep.sweepdir import SweepDir

STATES = ("done", "running", "failed", "pending")
STATE_OF_STATUS = {
    "FINISHED": "done",
    "RUNNING": "running",
    "SCHEDULED": "running",
    "FAILED": "failed",
}


@dataclass
class SweepStatus:
    name: str
    counts: dict[str, Counter] = field(default_factory=dict)
    failures: list[tuple[str, str, str]] = field(default_factory=list)  # stage, job, reason

    def totals(self) -> dict[str, int]:
        """Jobs per state over every stage."""
        return {s: sum(c.get(s, 0) for c in self.counts.values()) for s in STATES}

    @property
    def finished(self) -> bool:
        """Nothing pending or running: what a watch waits for."""
        totals = self.totals()
        return totals["pending"] == 0 and totals["running"] == 0

    @property
    def ok(self) -> bool:
        """No job failed (pending or running jobs are not failures)."""
        return not self.failures

    def render(self) -> str:
        lines = [
            f"sweep '{self.name}'",
            f"  {'stage':<9}" + "".join(f"{s:>9}" for s in STATES) + f"{'total':>9}",
        ]
        for stage, counts in self.counts.items():
            cells = "".join(f"{counts.get(s, 0):>9,}" for s in STATES)
            lines.append(f"  {stage:<9}{cells}{sum(counts.values()):>9,}")
        for stage, job, reason in self.failures:
            lines.append(f"  FAILED {stage} {job}: {reason}")
        return "\n".join(lines)


def job_runs_by_key(tracking_uri: str, sweep: str) -> dict[str, Run]:
    """The sweep's job runs by key; of several runs of one key, the newest."""
    client = MlflowClient(tracking_uri)
    found = iter_runs(client, sweep_experiment(client, sweep), job_filter(), page_size=5000)
    return {run.data.tags[KEY_TAG]: run for run in found if KEY_TAG in run.data.tags}


def sweep_status(sweep: SweepDir) -> SweepStatus:
    """Match every planned job with its run by key; a job without a run is pending."""
    uri = sweep.tracking_uri()  # first: names a sweep that does not exist
    plan = make_plan(load_spec(sweep.spec_copy), max_jobs=None)  # accepted when launched
    check_reachable(uri)
    runs = job_runs_by_key(uri, sweep.name) if store_exists(uri) else {}
    status = SweepStatus(name=sweep.name)
    for stage, jobs in plan.jobs.items():
        counts: Counter = Counter()
        for job in jobs:
            run = runs.get(job.key)
            label = STATE_OF_STATUS.get(run.info.status, "pending") if run else "pending"
            counts[label] += 1
            if label == "failed":
                reason = run.data.tags.get(ERROR_TAG, "no reason recorded")
                status.failures.append((stage, job.name, reason))
        status.counts[stage] = counts
    return status
