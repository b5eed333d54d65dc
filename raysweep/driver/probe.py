"""The probe stage on the driver: information measures of each source as Ray tasks.

Each probe job gets its own run (stage ``probe``, so it is skipped once FINISHED), and its
scalar results are also logged on the run of the source it measures, where they are compared.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from raysweep.driver.context import StageContext
from raysweep.driver.entrypoints import probe_task
from raysweep.driver.live import Inbox, LiveRuns
from raysweep.driver.scheduling import collect_tasks
from raysweep.driver.tracker import SweepTracker
from raysweep.plan import Job, Plan
from raysweep.schema import KEY_TAG


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
    runs = tracker.job_runs("pretrain", statuses=("FINISHED",))
    return {r.data.tags[KEY_TAG]: r.info.run_id for r in runs if r.data.tags[KEY_TAG] in keys}


def record_probe(
    runs: LiveRuns, job: Job, result: dict[str, Any], source_run: str | None
) -> None:
    """Log a probe's metrics, curves and files on its run (opened when the task started) in
    batched calls, close it, and copy its scalars onto the run of the source it measured."""
    tracker = runs.tracker
    run_id = runs.run_of(job.key)
    runs.tag_node(job.key, run_id, result)
    steps: dict[int, dict[str, float]] = {0: dict(result.get("metrics", {}))}
    for name, points in result.get("series", {}).items():
        for step, value in points:
            steps.setdefault(int(step), {})[name] = value
    tracker.log_steps(run_id, sorted(steps.items()))
    folder = f"probe/{job.config['probe']['name']}"
    for path in result.get("artifacts", []):
        tracker.client.log_artifact(run_id, path, artifact_path=folder)
    tracker.end_job(run_id)
    # A per-subset probe (linear_probe) has one run per grid cell: too many to copy onto the source.
    if source_run is not None and "subset_size" not in job.config:
        target = job.config.get("target")
        suffix = f"/{target}" if target else ""
        metrics = {f"{name}{suffix}": v for name, v in result.get("metrics", {}).items()}
        tracker.log_metrics(source_run, metrics, step=0)


def run_probe_stage(ctx: StageContext, pending: list[Job]) -> None:
    """Run each pending probe on its (ready) source as a one-CPU Ray task; its run opens when
    the task starts and is recorded when its result arrives."""
    import ray

    ctx.outcome.start("probe")
    if not pending:
        return
    sources = source_description(ctx.plan)
    source_runs = source_run_ids(ctx.tracker, {job.config["source_key"] for job in pending})
    context = replace(ctx.worker, threads=1)
    task = ray.remote(probe_task).options(num_cpus=1, max_retries=1)
    inbox, runs = Inbox(), LiveRuns(ctx.tracker, {job.key: job for job in pending})
    refs = {}
    for job in pending:
        out_dir = ctx.sweep.probe_dir(job.key)
        out_dir.mkdir(parents=True, exist_ok=True)
        source = sources[job.config["source_key"]]
        refs[task.remote(job.key, job.config, source, context, str(out_dir), inbox.queue)] = job
    ctx.write(f"[probe] {len(refs)} probe(s) as Ray tasks, 1 CPU each")

    def on_result(job: Job, result: dict[str, Any]) -> None:
        record_probe(runs, job, result, source_runs.get(job.config["source_key"]))
        ctx.outcome.ran["probe"] += 1

    try:
        progress = ctx.progress("probe", len(refs), every_s=0.0)
        for job, reason in collect_tasks(progress, refs, on_result, runs, inbox):
            ctx.tracker.end_job(runs.run_of(job.key), error=reason)
            ctx.outcome.failed["probe"].append(f"{job.name}: {reason}")
    finally:
        inbox.shutdown()
