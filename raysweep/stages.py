"""The two compute stages of a sweep, as seen from the driver."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from raysweep.entrypoints import (
    HOST_KEY,
    NODE_KEY,
    WorkerContext,
    finetune_trainable,
    pretrain_task,
)
from raysweep.plan import Job, Plan
from raysweep.progress import Progress
from raysweep.spec import SweepSpec
from raysweep.sweepdir import SweepDir
from raysweep.tracking import SweepTracker
from raysweep.trials import clear_done

if TYPE_CHECKING:
    from raysweep.orchestrator import Outcome

Write = Callable[[str], None]

#: Packing (see :func:`bundle_jobs`): an experiment of at least this many jobs runs them in
#: bundles, several per Tune trial; $RAYSWEEP_PACK_MIN overrides it (tests force packing).
PACK_MIN_TRIALS = 100
PACK_MIN_ENV = "RAYSWEEP_PACK_MIN"
#: At most this many jobs per bundle, and at least this many bundles per trial slot.
MAX_BUNDLE = 16
BUNDLES_PER_SLOT = 4


def worker_context(spec: SweepSpec, sweep: SweepDir) -> WorkerContext:
    return WorkerContext(
        store_root=str(sweep.store.root),
        data_root=spec.data_root,
        download=spec.download,
        threads=max(1, math.floor(spec.resources.cpu)),
        trials_root=str(sweep.path / "trials"),
        gpu=spec.resources.gpu > 0,
        bf16=spec.resources.bf16,
        channels_last=spec.resources.channels_last,
    )


def record_pretrain(tracker: SweepTracker, job: Job, record: dict[str, Any]) -> None:
    """Log a source's training history on its run, one step per epoch."""
    run_id = tracker.start_job(job)
    if NODE_KEY in record:
        tracker.tag_node(run_id, record[NODE_KEY], record[HOST_KEY])
    for row in record.get("history", []):
        metrics = {k: v for k, v in row.items() if k != "epoch"}
        tracker.log_metrics(run_id, metrics, step=int(row["epoch"]))
    tracker.client.set_tag(run_id, "raysweep.reused_checkpoint", str(record["reused"]).lower())
    tracker.log_metrics(run_id, {"time/seconds": float(record.get("seconds", 0.0))}, step=0)
    tracker.end_job(run_id)


def run_pretrain_stage(
    plan: Plan,
    pending: list[Job],
    tracker: SweepTracker,
    ctx: WorkerContext,
    outcome: Outcome,
    write: Write,
) -> set[str]:
    """Train (or load) each pending source as a Ray task; return the keys of usable sources.

    A source whose MLflow run is FINISHED is still checked against the store: if its checkpoint
    is missing (a new --root), the task rebuilds it without recording a second run.
    """
    import ray

    pending_keys = {job.key for job in pending}
    stored = {
        job.key for job in plan.jobs["pretrain"] if ctx.store.read_record(job.key) is not None
    }
    to_run = sorted(
        (job for job in plan.jobs["pretrain"] if job.key in pending_keys or job.key not in stored),
        key=attack_cost,
        reverse=True,
    )
    ready = {job.key for job in plan.jobs["pretrain"]} - {job.key for job in to_run}
    outcome.ran["pretrain"], outcome.failed["pretrain"] = 0, []
    if not to_run:
        return ready
    cpus = max(1, min(largest_node_cpus(), total_cpus() // len(to_run)))
    task = ray.remote(pretrain_task).options(num_cpus=cpus, max_retries=2)
    context = WorkerContext(**{**asdict(ctx), "threads": cpus})
    refs = {task.remote(job.key, job.config, context): job for job in to_run}
    reused = sum(job.key in stored for job in to_run)
    reuse = f" ({reused} already in the store: recorded, not retrained)" if reused else ""
    write(
        f"[pretrain] {len(to_run)} source(s) as Ray tasks, {cpus} CPU each{reuse}: "
        + ", ".join(job.name for job in to_run)
    )

    def on_result(job: Job, record: dict[str, Any]) -> None:
        if job.key in pending_keys:
            record_pretrain(tracker, job, record)
            outcome.ran["pretrain"] += 1
        ready.add(job.key)

    for job, reason in collect_tasks("pretrain", refs, on_result, write):
        if job.key in pending_keys:
            tracker.end_job(tracker.start_job(job), error=reason)
        outcome.failed["pretrain"].append(f"{job.name}: {reason}")
    return ready


def collect_tasks(
    stage: str,
    refs: dict[Any, Job],
    on_result: Callable[[Job, Any], None],
    write: Write,
) -> list[tuple[Job, str]]:
    """Hand each task's result to ``on_result`` as it finishes; return the failed jobs.

    A failed task is reported (with its innermost cause), never raised: the sweep goes on.
    """
    import ray

    progress = Progress(stage, len(refs), write=write, every_s=0.0)
    failures: list[tuple[Job, str]] = []
    while refs:
        done, _ = ray.wait(list(refs), num_returns=1)
        job = refs.pop(done[0])
        try:
            result = ray.get(done[0])
        except Exception as error:
            failures.append((job, one_line(error)))
            progress.tick(failed=True)
            continue
        on_result(job, result)
        progress.tick()
    return failures


def attack_cost(job: Job) -> int:
    """Forward-backward passes per batch: adversarial sources go first, they take longest."""
    attack = job.config["training"].get("attack")
    return 1 + (attack["steps"] if attack else 0)


def one_line(error: BaseException) -> str:
    """The innermost cause of a (possibly Ray-wrapped) exception, on one line."""
    cause = getattr(error, "cause", None) or error
    text = f"{type(cause).__name__}: {cause}"
    return " ".join(text.split())[:500]


def total_cpus() -> int:
    import ray

    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def largest_node_cpus() -> int:
    """A task runs on one node: asking for more CPUs than any node has never schedules."""
    import ray

    alive = [int(node["Resources"].get("CPU", 0)) for node in ray.nodes() if node["Alive"]]
    return max(1, max(alive, default=1))


@contextlib.contextmanager
def quiet_result_loading() -> Iterator[None]:
    """Tune's result grid warns for every trial without result.json, and Tune logs where it
    saved its state after every experiment: MLflow and our progress lines are the record."""
    loggers = [
        (logging.getLogger("ray.tune.analysis.experiment_analysis"), logging.ERROR),
        (logging.getLogger("ray.tune.tune"), logging.WARNING),
    ]
    levels = [logger.level for logger, _ in loggers]
    for logger, level in loggers:
        logger.setLevel(level)
    try:
        yield
    finally:
        for (logger, _), level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def experiment_name(jobs: list[Job]) -> str:
    digest = hashlib.sha256("".join(sorted(j.key for j in jobs)).encode()).hexdigest()[:10]
    return f"finetune-{digest}"


def bundle_jobs(chunk: list[Job], slots: int) -> list[list[Job]] | None:
    """Split an experiment's jobs into bundles that one Tune trial each runs in sequence, or
    None (one trial per job) below ``PACK_MIN_TRIALS`` jobs.

    Why: Tune and the trial round trip cost ≈0.04 s per trial on the driver's cores, a large
    share of a 0.3–1 s fine-tune (issue #7). A bundle pays it once for up to ``MAX_BUNDLE``
    jobs. Bundle count b = max(``BUNDLES_PER_SLOT`` × slots, ⌈n / MAX_BUNDLE⌉), rounded up to
    a multiple of the slots (trials running at once) and at most n; job i goes to bundle
    i mod b, so bundle sizes differ by at most one and each mixes the plan's cheap and costly
    jobs. Several bundles per slot let Tune even out uneven bundles (other load, blocks > 0);
    a multiple of the slots leaves no slot idle in the last round of equal bundles.
    """
    minimum = int(os.environ.get(PACK_MIN_ENV, PACK_MIN_TRIALS))
    if len(chunk) < max(2, minimum):
        return None
    count = max(BUNDLES_PER_SLOT * slots, math.ceil(len(chunk) / MAX_BUNDLE))
    count = min(len(chunk), math.ceil(count / slots) * slots)
    return [chunk[i::count] for i in range(count)]


def trial_space(
    chunk: list[Job], ctx: WorkerContext, slots: int
) -> tuple[dict[str, Any], Callable[[Any], str]]:
    """Tune's param_space for an experiment (a grid over jobs or over bundles) and the trial
    names. A bundle's jobs lose their done markers: on a relaunch the MLflow runs decide what
    is pending, and a killed driver may have missed a job that its worker marked done."""
    from ray import tune

    bundles = bundle_jobs(chunk, slots)
    if bundles is None:
        jobs = [{**j.config, "key": j.key} for j in chunk]
        return {"job": tune.grid_search(jobs), "context": asdict(ctx)}, job_trial_name
    for job in chunk:
        clear_done(ctx.trial_dir(job.key))
    grid = [
        {
            "name": f"bundle{i:04d}-{experiment_name(bundle)[-10:]}",
            "jobs": [{**j.config, "key": j.key} for j in bundle],
        }
        for i, bundle in enumerate(bundles)
    ]
    return {"bundle": tune.grid_search(grid), "context": asdict(ctx)}, bundle_trial_name


def run_config(name: str, sweep: SweepDir, recorder: Any) -> Any:
    """Tune's RunConfig of a fine-tune experiment: the recorder is its only output; a trial
    (one job or a bundle) is retried twice when its worker dies (node loss), never more."""
    from ray import tune

    return tune.RunConfig(
        name=name,
        storage_path=str(sweep.tune_dir),
        callbacks=[recorder],
        verbose=0,
        failure_config=tune.FailureConfig(max_failures=2),
    )


def job_trial_name(trial: Any) -> str:
    return trial.config["job"]["key"]


def bundle_trial_name(trial: Any) -> str:
    return trial.config["bundle"]["name"]


def run_finetune_stage(
    jobs: list[Job],
    spec: SweepSpec,
    sweep: SweepDir,
    tracker: SweepTracker,
    ctx: WorkerContext,
    outcome: Outcome,
    write: Write,
) -> None:
    """Run the pending fine-tune jobs as Ray Tune trials, in experiments of bounded size."""
    from ray import tune

    from raysweep.orchestrator import TRIALS_PER_EXPERIMENT
    from raysweep.recorder import JobRecorder

    outcome.ran["finetune"], outcome.failed["finetune"] = 0, []
    if not jobs:
        return
    progress = Progress("finetune", len(jobs), write=write)
    resources = {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu}
    write(
        f"[finetune] {len(jobs)} trials on Ray Tune, {resources['cpu']:g} CPU / "
        f"{resources['gpu']:g} GPU each"
    )
    trainable = tune.with_resources(finetune_trainable, resources)
    slots = max(1, int(total_cpus() // max(spec.resources.cpu, 1e-9)))
    for start in range(0, len(jobs), TRIALS_PER_EXPERIMENT):
        chunk = jobs[start : start + TRIALS_PER_EXPERIMENT]
        recorder = JobRecorder(tracker, {j.key: j for j in chunk}, sweep.store, progress)
        space, trial_name = trial_space(chunk, ctx, slots)
        if "bundle" in space:
            bundles = len(space["bundle"]["grid_search"])
            write(f"[finetune] {len(chunk)} jobs packed into {bundles} trials (bundles)")
        tuner = tune.Tuner(
            trainable,
            param_space=space,
            tune_config=tune.TuneConfig(
                reuse_actors=True,
                trial_name_creator=trial_name,
                trial_dirname_creator=trial_name,
            ),
            run_config=run_config(experiment_name(chunk), sweep, recorder),
        )
        with quiet_result_loading():
            tuner.fit()
        outcome.failed["finetune"].extend(
            f"{recorder.jobs[k].name}: {reason}" for k, reason in recorder.failures.items()
        )
        outcome.ran["finetune"] += len(recorder.finished)
        missing = len(chunk) - len(recorder.finished) - len(recorder.failures)
        if missing:
            # Tune swallows Ctrl-C and returns; trials it stopped are neither done nor failed.
            raise KeyboardInterrupt(f"{missing} fine-tune trials were stopped before the end")
