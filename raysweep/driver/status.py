"""`raysweep status`: done / running / failed / pending per stage.

Read from the sweep's job ledger (:mod:`raysweep.ledger`): SQLite counts its entries per stage
and state, and what MLflow knows that it may not (:func:`~raysweep.driver.ledger_sync.news`: a
launch's last few runs, or none) is folded in without writing; the planned jobs per stage are
the ledger's, as of the latest launch. So its cost does not grow with the sweep
(bench/scale.py). A job whose entry is RUNNING counts as running only while a launch holds the
sweep; otherwise its launch died and the job is pending. A sweep without a usable ledger
(launched by an older raysweep, the file lost, or recorded elsewhere since) is read the old
way: its plan, and every one of its runs.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from mlflow import MlflowClient
from mlflow.entities import Run

from raysweep.driver.ledger_sync import news, store_identity
from raysweep.driver.lock import launch_running
from raysweep.ledger import FAILED, FINISHED, RUNNING, Entry, Ledger, LedgerError, outranks
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
STATE_OF_STATUS = {FINISHED: "done", RUNNING: "running", "SCHEDULED": "running", FAILED: "failed"}


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


def sweep_status(sweep: SweepDir) -> SweepStatus:
    """The sweep's jobs per stage and state, from its ledger when it has a usable one."""
    uri = sweep.tracking_uri()  # first: names a sweep that does not exist
    check_reachable(uri)
    client = MlflowClient(uri) if store_exists(uri) else None
    experiment = sweep_experiment(client, sweep.name) if client is not None else []
    if sweep.ledger_file.is_file():
        try:
            with Ledger(sweep.ledger_file, readonly=True) as ledger:
                planned = ledger.planned()
                mirrors = bool(experiment) and ledger.mirrors(store_identity(uri, experiment[0]))
                if planned is not None and mirrors:
                    return ledger_status(sweep, ledger, planned, client, experiment[0])
        except LedgerError:
            pass  # unreadable: the slow way below still answers
    return listed_status(sweep, uri)


def ledger_status(
    sweep: SweepDir, ledger: Ledger, planned: dict[str, int], client: MlflowClient, experiment: str
) -> SweepStatus:
    """Counts from the ledger, with the runs MLflow closed after its newest entry folded in."""
    counts = ledger.counts()
    failures = {entry.key: entry for entry in ledger.failures()}
    newer = news(ledger, client, experiment)
    known = ledger.lookup(entry.key for entry in newer)
    for entry in newer:
        old = known.get(entry.key)
        if not outranks(entry, old):
            continue
        if old is not None:
            counts[old.stage][old.status] -= 1
            failures.pop(old.key, None)
        counts.setdefault(entry.stage, Counter())[entry.status] += 1
        if entry.status == FAILED:
            failures[entry.key] = entry
        known[entry.key] = entry
    live = launch_running(sweep)
    status = SweepStatus(name=sweep.name)
    for stage, total in planned.items():
        found = counts.get(stage, Counter())
        done, failed = found[FINISHED], found[FAILED]
        running = found[RUNNING] if live else 0
        pending = max(total - done - failed - running, 0)
        status.counts[stage] = Counter(done=done, running=running, failed=failed, pending=pending)
    status.failures = [
        (entry.stage, entry.name, entry.reason or "no reason recorded")
        for entry in sorted(failures.values(), key=failure_order(planned))
    ]
    return status


def failure_order(planned: dict[str, int]) -> Callable[[Entry], tuple[int, str]]:
    """Failures listed by stage, in plan order, then by job name."""
    stages = list(planned)
    return lambda e: (stages.index(e.stage) if e.stage in stages else len(stages), e.name)


def job_runs_by_key(tracking_uri: str, sweep: str) -> dict[str, Run]:
    """The sweep's job runs by key; of several runs of one key, the newest."""
    client = MlflowClient(tracking_uri)
    found = iter_runs(client, sweep_experiment(client, sweep), job_filter(), page_size=5000)
    return {run.data.tags[KEY_TAG]: run for run in found if KEY_TAG in run.data.tags}


def listed_status(sweep: SweepDir, uri: str) -> SweepStatus:
    """Every planned job matched with its run by key (a job without a run is pending): what a
    sweep without a ledger costs, a listing of all its runs."""
    plan = make_plan(load_spec(sweep.spec_copy), max_jobs=None)  # accepted when launched
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

