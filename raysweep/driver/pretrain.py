"""The pretrain stage on the driver: each source trained or imported by one Ray task, recorded
as its run — opened when the task starts, fed each epoch's metrics as training goes, closed with
a reference to the stored checkpoint (and, with ``log_models: true``, the checkpoint itself)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from raysweep.driver.cluster import alive_nodes, largest_node_cpus, total_cpus
from raysweep.driver.context import StageContext
from raysweep.driver.cores import CoreSharing
from raysweep.driver.entrypoints import pretrain_task
from raysweep.driver.live import Inbox, LiveRuns
from raysweep.driver.scheduling import collect_tasks
from raysweep.plan import Job
from raysweep.schema import REUSED_TAG


def finish_source_run(ctx: StageContext, runs: LiveRuns, job: Job, record: dict[str, Any]) -> None:
    """Close a source's run: the epochs it did not stream (a source already in the store), where
    it ran, whether it was reused, its time and its checkpoint reference."""
    run_id = runs.run_of(job.key)
    runs.tag_node(job.key, run_id, record)
    runs.log_epochs(job.key, record.get("history", []))
    client = ctx.tracker.client
    client.set_tag(run_id, REUSED_TAG, str(record["reused"]).lower())
    ctx.tracker.log_metrics(run_id, {"time/seconds": float(record.get("seconds", 0.0))}, step=0)
    checkpoint = ctx.worker.store.checkpoint(job.key)
    reference = {"key": job.key, "path": str(checkpoint), "sha256": record.get("sha256")}
    client.log_dict(run_id, reference, "source/checkpoint.json")
    if ctx.spec.log_models:
        client.log_artifact(run_id, str(checkpoint), artifact_path="source")
    ctx.tracker.end_job(run_id)


def run_pretrain_stage(ctx: StageContext, pending: list[Job]) -> set[str]:
    """Train (or load) each pending source as a Ray task; return the keys of usable sources.

    A source whose MLflow run is FINISHED is still checked against the store: if its checkpoint
    is missing (a new --root), the task rebuilds it without recording a second run.
    """
    import ray

    sources = ctx.plan.jobs["pretrain"]
    pending_keys = {job.key for job in pending}
    stored = {job.key for job in sources if ctx.worker.store.read_record(job.key) is not None}
    to_run = sorted(
        (job for job in sources if job.key in pending_keys or job.key not in stored),
        key=attack_cost,
        reverse=True,
    )
    ready = {job.key for job in sources} - {job.key for job in to_run}
    ctx.outcome.start("pretrain")
    if not to_run:
        return ready
    cpus = cpus_per_source(len(to_run))
    task = ray.remote(pretrain_task).options(num_cpus=cpus, max_retries=2)
    context = replace(ctx.worker, threads=max(1, int(cpus)))
    inbox = Inbox()
    cores = CoreSharing((job.key for job in to_run), cpus, ctx.sweep.trials_dir)
    runs = LiveRuns(ctx.tracker, {job.key: job for job in pending}, epoch_line(ctx))
    refs = {
        task.remote(job.key, job.config, context, inbox.queue, True): job for job in to_run
    }
    reused = sum(job.key in stored for job in to_run)
    reuse = f" ({reused} already in the store: recorded, not retrained)" if reused else ""
    ctx.write(
        f"[pretrain] {len(to_run)} source(s) as Ray tasks, {cpus:.3g} CPU each{reuse}: "
        + ", ".join(job.name for job in to_run)
    )

    def on_result(job: Job, record: dict[str, Any]) -> None:
        if job.key in pending_keys:
            finish_source_run(ctx, runs, job, record)
            ctx.outcome.ran["pretrain"] += 1
        ready.add(job.key)

    try:
        progress = ctx.progress("pretrain", len(refs), every_s=0.0)
        ended = collect_tasks(
            progress, refs, on_result, runs, inbox, cores.finished, on_poll=cores.refresh
        )
        for job, reason in ended:
            if job.key in pending_keys:
                ctx.tracker.end_job(runs.run_of(job.key), error=reason)
            ctx.outcome.failed["pretrain"].append(f"{job.name}: {reason}")
    finally:
        inbox.shutdown()
        cores.shutdown()
    return ready


def cpus_per_source(sources: int) -> float:
    """CPUs each source task asks for: an equal share of the cluster (whole CPUs, at most one
    node's) — or, on one node with more sources than cores but at most twice as many, a
    fraction, so that all of them train at once, the OS sharing the cores to the end.

    Three sources on two cores at one CPU each ran two, then the third alone on one core while
    the other idled; threads granted to it afterwards (raysweep.driver.cores) recovered only
    part of that (small models scale poorly over intra-op threads). Time-sharing loses nothing:
    the quickstart's pretraining took 8:28 with all three at once, against 9:22 two at a time
    and then the third alone with both cores granted.
    """
    cpus, nodes = total_cpus(), alive_nodes()
    if nodes == 1 and cpus < sources <= 2 * cpus:
        return cpus / sources
    return float(max(1, min(largest_node_cpus(), cpus // sources)))


def epoch_line(ctx: StageContext) -> Callable[[Job, dict[str, Any]], None]:
    """Prints ``[pretrain] natural: epoch 3/10 · loss 1.234 · test 45.2% · adv 20.1%``."""

    def show(job: Job, row: dict[str, Any]) -> None:
        epochs = job.config.get("pretrain", {}).get("epochs", "?")
        parts = [f"epoch {row['epoch']}/{epochs}"]
        for metric, label, unit in EPOCH_FIELDS:
            if metric in row:
                parts.append(f"{label} {row[metric]:.{3 if unit == '' else 1}f}{unit}")
        ctx.write(f"[pretrain] {job.config['source']}: " + " · ".join(parts))

    return show


#: (metric, label, unit) of the per-epoch pretraining line.
EPOCH_FIELDS = (
    ("train/loss", "loss", ""),
    ("test/acc", "test", "%"),
    ("adv/acc", "adv", "%"),
    ("adv/acc_cw", "cw", "%"),
)


def attack_cost(job: Job) -> int:
    """Forward-backward passes per batch: adversarial sources go first, they take longest."""
    attack = job.config["training"].get("attack")
    return 1 + (attack["steps"] if attack else 0)
