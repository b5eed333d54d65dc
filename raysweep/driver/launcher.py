"""``raysweep launch`` / ``resume``: the stage graph on Ray, skip-if-done.

    pretrain (Ray tasks) → probe (Ray tasks) → search (Tune + Optuna) → finetune (Tune) → report

A job whose key has a FINISHED run is skipped, so launching the same spec again, or resuming
after a crash, only does what is missing; which keys are done is read from the sweep's job
ledger (:mod:`raysweep.ledger`), caught up with MLflow first, not by listing every run. One
launch runs a sweep at a time (:mod:`raysweep.driver.lock`); every run it writes carries its
launch id.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from raysweep.driver.cluster import check_cluster_reachable, check_resources, ensure_ray
from raysweep.driver.context import Outcome, StageContext, worker_context
from raysweep.driver.finetune import run_finetune_stage
from raysweep.driver.ledger_sync import catch_up
from raysweep.driver.lock import launch_lock, new_launch_id
from raysweep.driver.pretrain import run_pretrain_stage
from raysweep.driver.probe import run_probe_stage
from raysweep.driver.progress import Write, writer
from raysweep.driver.report import report_sweep
from raysweep.driver.search import run_search_stage, with_search_values
from raysweep.driver.shared_root import check_shared_root
from raysweep.driver.tracker import SweepTracker
from raysweep.ledger import FAILED, FINISHED, Ledger, LedgerError
from raysweep.plan import MAX_JOBS, Job, Plan, make_plan
from raysweep.schema import check_reachable
from raysweep.spec import SweepSpec, load_spec, resolved_yaml
from raysweep.store import write_text_atomic
from raysweep.sweepdir import SweepDir, SweepDirError, resolve_root

# Tune's own CSV/JSON/TensorBoard loggers duplicate what MLflow records (REFERENCE.md).
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")


def check_same_plan(sweep: SweepDir, plan: Plan, extend: bool) -> None:
    """Relaunching a name with another spec would mix two sweeps in one record: refuse."""
    if not sweep.spec_copy.is_file():
        return
    old = make_plan(load_spec(sweep.spec_copy), max_jobs=None)  # accepted when launched
    added, removed = plan.keys() - old.keys(), old.keys() - plan.keys()
    if removed or (added and not extend):
        raise SweepDirError(
            f"sweep '{sweep.name}' exists with a different spec ({len(added)} jobs added, "
            f"{len(removed)} removed vs {sweep.spec_copy}); use another --name"
            + ("" if removed else ", or --extend to add the new jobs")
        )


def check_same_store(sweep: SweepDir, tracking_uri: str | None, switch: bool) -> None:
    """A relaunch on another tracking store would not see the sweep's runs and would silently
    start over there: refuse unless the user asks for it."""
    recorded = sweep.recorded_tracking_uri()
    if tracking_uri and recorded and tracking_uri != recorded and not switch:
        raise SweepDirError(
            f"sweep '{sweep.name}' records to {recorded}, not {tracking_uri}; drop "
            "--tracking-uri to continue it, or add --switch-tracking-uri to record it in the "
            "new store from now on (its finished jobs there run again)"
        )


def open_tracker(sweep: SweepDir, uri: str, launch_id: str, ledger: Ledger) -> SweepTracker:
    """The sweep's MLflow writer for this launch, writing each job's state to ``ledger`` too."""
    artifact_root = sweep.artifact_root if uri.startswith("sqlite") else None
    return SweepTracker(uri, sweep.name, artifact_root, launch_id, ledger)


def prepare_sweep(
    spec_path: Path, overrides: Sequence[str], sweep: SweepDir, tracker: SweepTracker
) -> None:
    """The sweep folder's spec copy — the spec as resolved (extends merged, overrides applied),
    so a resume runs exactly what was launched — and ``sweep.json``, and its MLflow parent run
    (overrides also as its tag ``sweep.overrides``)."""
    if Path(spec_path).resolve() != sweep.spec_copy.resolve() or overrides:
        write_text_atomic(sweep.spec_copy, resolved_yaml(spec_path, overrides))
    parent = tracker.open_parent(sweep.spec_copy, overrides)
    sweep.write_state({"name": sweep.name, "tracking_uri": tracker.uri, "parent_run_id": parent})


def pending_jobs(
    plan: Plan, tracker: SweepTracker, ledger: Ledger, outcome: Outcome, retry_failed: bool
) -> dict[str, list[Job]]:
    """Per stage, the jobs without a FINISHED run (nor a FAILED one, unless retried), read from
    the ledger once it caught up with MLflow; their stale runs are retired so that each job ends
    with exactly one run."""
    catch_up(ledger, tracker.client, tracker.uri, tracker.experiment_id)
    finished = ledger.keys(FINISHED)
    failed = set() if retry_failed else ledger.keys(FAILED)
    pending = {
        stage: [job for job in jobs if job.key not in finished and job.key not in failed]
        for stage, jobs in plan.jobs.items()
    }
    retired = tracker.retire_unfinished({job.key for jobs in pending.values() for job in jobs})
    ledger.forget(retired)
    ledger.set_planned({stage: len(jobs) for stage, jobs in plan.jobs.items()})
    for stage, jobs in plan.jobs.items():
        outcome.skipped[stage] = len(jobs) - len(pending[stage])
    return pending


def run_stages(ctx: StageContext, pending: dict[str, list[Job]]) -> None:
    """Each stage on the jobs whose sources are ready, in data-flow order."""
    sources = run_pretrain_stage(ctx, pending["pretrain"])
    run_probe_stage(ctx, [job for job in pending["probe"] if job.config["source_key"] in sources])
    ready = [job for job in pending["finetune"] if job.config["source_key"] in sources]
    if ctx.spec.search is not None:  # each group's best values go into its grid jobs
        best = run_search_stage(ctx, pending["search"], sources)
        ready = with_search_values(ready, best, ctx.write)
    run_finetune_stage(ctx, ready)


def open_ledger(sweep: SweepDir, write: Write) -> Ledger:
    """The sweep's job ledger; one that SQLite cannot read (a damaged file) is set aside as
    ``ledger.db.damaged`` and rebuilt from MLflow by the catch-up, with a line saying so."""
    try:
        return Ledger(sweep.ledger_file)
    except LedgerError as error:
        aside = sweep.ledger_file.with_name("ledger.db.damaged")
        sweep.ledger_file.replace(aside)
        write(f"{error}: moved to {aside.name}, rebuilding it from MLflow")
        return Ledger(sweep.ledger_file)


def start_ray(address: str | None, spec: SweepSpec) -> None:
    """Ray started (or attached), and able to host the spec's tasks and trials."""
    ensure_ray(address)
    check_resources(spec)


def launch(
    spec_path: str | Path,
    *,
    name: str | None = None,
    address: str | None = None,
    tracking_uri: str | None = None,
    root: str | Path | None = None,
    retry_failed: bool = False,
    extend: bool = False,
    switch_tracking_uri: bool = False,
    max_jobs: int | None = MAX_JOBS,
    overrides: Sequence[str] = (),
    write: Write | None = None,
) -> Outcome:
    """Run every job of the spec that has no FINISHED run yet; return what happened.

    Refused with one line, before anything is recorded: a sweep another launch is running, an
    unreachable cluster or tracking server, resources no node can give, another tracking store
    than the sweep's (unless ``switch_tracking_uri``), more than ``max_jobs`` jobs (None: no
    limit). ``overrides`` (``key.path=value``) change the spec as on ``raysweep plan``; the
    sweep folder keeps the resolved spec. With nothing left to do, Ray is not started.
    ``write`` None is the console, with live bars on a terminal.
    """
    spec = load_spec(spec_path, overrides)
    plan = make_plan(spec, max_jobs=max_jobs)
    check_cluster_reachable(address)
    sweep = SweepDir(resolve_root(root), name or spec.name)
    uri = sweep.tracking_uri(tracking_uri, new=True)
    check_reachable(uri)  # before writing anything
    if address:  # every node must see the root before anything is written there
        ensure_ray(address)
        check_shared_root(sweep.root)
    launch_id = new_launch_id()
    with launch_lock(sweep, launch_id):
        check_same_store(sweep, tracking_uri, switch_tracking_uri)
        if sweep.exists():
            check_same_plan(sweep, plan, extend)
        else:  # a new sweep has work: refuse a cluster that cannot host it before recording
            start_ray(address, spec)
        with open_ledger(sweep, writer(write)) as ledger:
            tracker = open_tracker(sweep, uri, launch_id, ledger)
            outcome = Outcome(sweep=sweep.name, tracking_uri=tracker.uri)
            pending = pending_jobs(plan, tracker, ledger, outcome, retry_failed)
            if any(pending.values()):
                start_ray(address, spec)
            prepare_sweep(Path(spec_path), overrides, sweep, tracker)
            bars = write is None and sys.stdout.isatty()
            return run_launch(plan, tracker, sweep, pending, outcome, writer(write), bars)


def run_launch(
    plan: Plan,
    tracker: SweepTracker,
    sweep: SweepDir,
    pending: dict[str, list[Job]],
    outcome: Outcome,
    write: Write,
    bars: bool = False,
) -> Outcome:
    """The stages and the report, under the sweep's lock, with the parent run's status kept."""
    started = time.monotonic()
    tracker.log_sweep(plan)
    write(f"sweep '{sweep.name}': {sweep.path}  (tracking: {tracker.uri})")
    if any(pending.values()):
        context = worker_context(plan.spec, sweep)
        ctx = StageContext(plan, tracker, context, sweep, outcome, write, bars)
        try:
            run_stages(ctx, pending)
        except KeyboardInterrupt:
            tracker.finish_parent("KILLED")
            raise
    else:
        for stage in plan.jobs:
            outcome.start(stage)  # nothing ran, nothing failed, in every stage
        write(f"nothing to do: all {plan.total:,} jobs are done or failed (--retry-failed)")
    outcome.report = report_sweep(tracker, sweep, write)
    summary = outcome.metrics(plan, time.monotonic() - started)
    tracker.finish_parent("FINISHED" if outcome.ok else "FAILED", summary)
    return outcome


def resume(
    name: str,
    *,
    address: str | None = None,
    root: str | Path | None = None,
    retry_failed: bool = False,
    write: Write | None = None,
) -> Outcome:
    """Finish a launched sweep from the spec copy in its folder, on its own tracking store (its
    size was accepted when it was launched: no job limit applies)."""
    sweep = SweepDir(resolve_root(root), name)
    return launch(
        sweep.spec_copy,
        name=name,
        address=address,
        tracking_uri=sweep.tracking_uri(),
        root=root,
        retry_failed=retry_failed,
        max_jobs=None,
        write=write,
    )
