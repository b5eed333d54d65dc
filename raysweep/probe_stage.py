"""The probe stage: information measures of each source as Ray tasks, recorded by the driver.

Each probe job gets its own run (stage ``probe``, so it is skipped once FINISHED), and its
scalar results are also logged on the run of the source it measures, where they are compared.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from raysweep.entrypoints import HOST_KEY, NODE_KEY, WorkerContext, node_identity
from raysweep.plan import Job, Plan
from raysweep.stages import collect_tasks
from raysweep.sweepdir import SweepDir
from raysweep.tracking import KEY_TAG, SweepTracker

if TYPE_CHECKING:
    from raysweep.orchestrator import Outcome

Write = Callable[[str], None]


def probe_task(
    job: dict[str, Any], source: dict[str, Any], ctx: WorkerContext, out_dir: str
) -> dict:
    """Ray task body: run one probe on one stored source checkpoint; say which node ran it."""
    from raysweep.probes import run_probe

    result = run_probe(
        job["probe"],
        str(ctx.store.checkpoint(job["source_key"])),
        source,
        job.get("target"),
        out_dir,
        data_root=ctx.data_root,
        download=ctx.download,
        threads=ctx.threads,
    )
    return {**result, **node_identity()}


def source_description(plan: Plan) -> dict[str, dict[str, Any]]:
    """What a probe needs to know about each source, by source key."""
    return {
        job.key: {
            "name": job.config["source"],
            "architecture": job.config["architecture"],
            "dataset": job.config["dataset"],
            "training": job.config["training"],
        }
        for job in plan.jobs["pretrain"]
    }


def source_run_ids(tracker: SweepTracker, keys: set[str]) -> dict[str, str]:
    runs = tracker.runs("tags.`raysweep.stage` = 'pretrain'", statuses=("FINISHED",))
    return {r.data.tags[KEY_TAG]: r.info.run_id for r in runs if r.data.tags[KEY_TAG] in keys}


def record_probe(
    tracker: SweepTracker, job: Job, result: dict[str, Any], source_run: str | None
) -> None:
    run_id = tracker.start_job(job)
    if NODE_KEY in result:
        tracker.tag_node(run_id, result[NODE_KEY], result.get(HOST_KEY, ""))
    tracker.log_metrics(run_id, result.get("metrics", {}), step=0)
    for name, points in result.get("series", {}).items():
        for step, value in points:
            tracker.log_metrics(run_id, {name: value}, step=int(step))
    for path in result.get("artifacts", []):
        tracker.client.log_artifact(
            run_id, path, artifact_path=f"probe/{job.config['probe']['name']}"
        )
    tracker.end_job(run_id)
    if source_run is not None:
        target = job.config.get("target")
        suffix = f"/{target}" if target else ""
        metrics = {f"{name}{suffix}": v for name, v in result.get("metrics", {}).items()}
        tracker.log_metrics(source_run, metrics, step=0)


def run_probe_stage(
    plan: Plan,
    pending: list[Job],
    tracker: SweepTracker,
    ctx: WorkerContext,
    sweep: SweepDir,
    outcome: Outcome,
    write: Write,
) -> None:
    """Run every pending probe whose source is ready (one CPU each), recording as they finish."""
    import ray

    outcome.ran["probe"], outcome.failed["probe"] = 0, []
    if not pending:
        return
    sources = source_description(plan)
    source_runs = source_run_ids(tracker, {job.config["source_key"] for job in pending})
    context = WorkerContext(**{**asdict(ctx), "threads": 1})
    task = ray.remote(probe_task).options(num_cpus=1, max_retries=1)
    refs = {}
    for job in pending:
        out_dir = Path(sweep.path / "probes" / job.key)
        out_dir.mkdir(parents=True, exist_ok=True)
        ref = task.remote(job.config, sources[job.config["source_key"]], context, str(out_dir))
        refs[ref] = job
    write(f"[probe] {len(refs)} probe(s) as Ray tasks, 1 CPU each")

    def on_result(job: Job, result: dict[str, Any]) -> None:
        record_probe(tracker, job, result, source_runs.get(job.config["source_key"]))
        outcome.ran["probe"] += 1

    for job, reason in collect_tasks("probe", refs, on_result, write):
        tracker.end_job(tracker.start_job(job), error=reason)
        outcome.failed["probe"].append(f"{job.name}: {reason}")
