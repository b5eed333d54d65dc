"""The stage graph on Ray: pretrain sources and probe them (Ray tasks) → fine-tune grid (Ray
Tune) → report.

MLflow is the ledger: a job whose key has a FINISHED run is skipped, so launching the same spec
again, or resuming after a crash, only does what is missing.
"""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from raysweep.plan import STAGES, Plan, make_plan
from raysweep.shared_storage import check_shared_root
from raysweep.spec import load_spec
from raysweep.sweepdir import SweepDir, SweepDirError, resolve_root
from raysweep.tracking import SweepTracker, check_reachable

# Tune's own CSV/JSON/TensorBoard loggers duplicate what MLflow records (REFERENCE.md).
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
#: Trials per Tuner: Tune's driver rewrites every trial at each snapshot (REFERENCE.md).
TRIALS_PER_EXPERIMENT = 1000

Write = Callable[[str], None]


@dataclass
class Outcome:
    """What a launch did, per stage: run now, skipped as already done, failed."""

    sweep: str
    tracking_uri: str
    ran: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    failed: dict[str, list[str]] = field(default_factory=dict)
    report: list[Path] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(self.failed.values())


class ClusterError(RuntimeError):
    """The Ray cluster named by --address does not answer; the message says what to do."""


def check_cluster_reachable(address: str | None, timeout_s: float = 5.0) -> None:
    """Fail in seconds, before anything is recorded: ray.init waits minutes for a dead head."""
    if address and address.startswith("ray://"):
        # Under Ray Client, Tuner.fit runs as an actor on the head (ray/tune/tuner.py), so the
        # recorder callback, the only MLflow writer, would run there and report nothing back.
        raise ClusterError(
            f"Ray Client addresses ({address}) are not supported: Tune would run raysweep's "
            "recorder on the cluster, not in this process; run raysweep on the head instead "
            "(`ray exec cluster.yaml 'raysweep launch SPEC --address auto'` or "
            "`ray job submit -- raysweep launch SPEC --address auto`)"
        )
    if not address or address == "auto" or "://" in address:
        return
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout_s):
            return
    except (OSError, ValueError) as error:
        raise ClusterError(
            f"Ray cluster {address} is unreachable ({error}); start it (`ray start --head`) "
            "or pass the head's host:port or auto"
        ) from None


def ensure_ray(address: str | None) -> None:
    import ray

    if ray.is_initialized():
        return
    if address:
        try:
            ray.init(address=address, log_to_driver=False)
        except ConnectionError as error:  # `auto` with no RAY_ADDRESS and no local cluster
            raise ClusterError(
                f"no Ray cluster at --address {address} ({error}); start one or pass host:port"
            ) from None
    else:
        ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False, log_to_driver=False)


def check_same_plan(sweep: SweepDir, plan: Plan, extend: bool) -> None:
    """Relaunching a name with another spec would mix two sweeps in one record: refuse."""
    if not sweep.spec_copy.is_file():
        return
    old = make_plan(load_spec(sweep.spec_copy))
    added, removed = plan.keys() - old.keys(), old.keys() - plan.keys()
    if removed or (added and not extend):
        raise SweepDirError(
            f"sweep '{sweep.name}' exists with a different spec ({len(added)} jobs added, "
            f"{len(removed)} removed vs {sweep.spec_copy}); use another --name"
            + ("" if removed else ", or --extend to add the new jobs")
        )


def prepare_sweep(
    spec_path: Path, plan: Plan, sweep: SweepDir, tracking_uri: str | None, extend: bool
) -> tuple[SweepTracker, str]:
    state = sweep.read_state() if sweep.exists() else {}
    if state:
        check_same_plan(sweep, plan, extend)
    uri = tracking_uri or state.get("tracking_uri") or sweep.default_tracking_uri()
    check_reachable(uri)
    sweep.create()
    if Path(spec_path).resolve() != sweep.spec_copy.resolve():
        shutil.copyfile(spec_path, sweep.spec_copy)
    artifact_root = sweep.artifact_root if uri.startswith("sqlite") else None
    tracker = SweepTracker(uri, sweep.name, artifact_root)
    parent = tracker.open_parent(sweep.spec_copy)
    sweep.write_state({"name": sweep.name, "tracking_uri": uri, "parent_run_id": parent})
    return tracker, uri


def launch(
    spec_path: str | Path,
    *,
    name: str | None = None,
    address: str | None = None,
    tracking_uri: str | None = None,
    root: str | Path | None = None,
    retry_failed: bool = False,
    extend: bool = False,
    write: Write = print,
) -> Outcome:
    """Run every job of the spec that has no FINISHED run yet; return what happened."""
    from raysweep.probe_stage import run_probe_stage
    from raysweep.stages import run_finetune_stage, run_pretrain_stage, worker_context
    from raysweep.summary import report_sweep

    spec = load_spec(spec_path)
    plan = make_plan(spec)
    check_cluster_reachable(address)
    sweep = SweepDir(resolve_root(root), name or spec.name)
    if address:  # attach first: every node must see the root before anything is recorded
        ensure_ray(address)
        check_shared_root(sweep.root)
    tracker, uri = prepare_sweep(Path(spec_path), plan, sweep, tracking_uri, extend)
    outcome = Outcome(sweep=sweep.name, tracking_uri=uri)
    finished = tracker.finished_keys()
    failed = set() if retry_failed else tracker.failed_keys()
    pending = {
        stage: [job for job in jobs if job.key not in finished and job.key not in failed]
        for stage, jobs in plan.jobs.items()
    }
    tracker.retire_unfinished({job.key for jobs in pending.values() for job in jobs})
    for stage, jobs in plan.jobs.items():
        outcome.skipped[stage] = len(jobs) - len(pending[stage])
    write(f"sweep '{sweep.name}': {sweep.path}  (tracking: {uri})")
    ensure_ray(address)
    ctx = worker_context(spec, sweep)
    try:
        sources = run_pretrain_stage(plan, pending["pretrain"], tracker, ctx, outcome, write)
        probes = [job for job in pending["probe"] if job.config["source_key"] in sources]
        run_probe_stage(plan, probes, tracker, ctx, sweep, outcome, write)
        ready = [job for job in pending["finetune"] if job.config["source_key"] in sources]
        if spec.search is not None:  # each group's best values go into its grid jobs
            from raysweep.search_stage import run_search_stage, with_search_values

            searched = pending["search"]
            best = run_search_stage(plan, searched, tracker, ctx, sweep, sources, outcome, write)
            ready = with_search_values(ready, best, write)
        run_finetune_stage(ready, spec, sweep, tracker, ctx, outcome, write)
    except KeyboardInterrupt:
        tracker.finish_parent("KILLED")
        raise
    outcome.report = report_sweep(tracker, sweep, write)
    tracker.finish_parent("FINISHED" if outcome.ok else "FAILED")
    return outcome


def summarize(outcome: Outcome, stages: Sequence[str] = STAGES) -> str:
    lines = []
    for stage in stages:
        if stage == "search" and stage not in outcome.skipped:
            continue  # grid-only sweeps have no search stage
        failed = outcome.failed.get(stage, [])
        lines.append(
            f"  {stage:<9} ran {outcome.ran.get(stage, 0):>6}  skipped (done) "
            f"{outcome.skipped.get(stage, 0):>6}  failed {len(failed):>4}"
        )
    return "\n".join(lines)


__all__ = ["launch", "Outcome", "summarize"]
