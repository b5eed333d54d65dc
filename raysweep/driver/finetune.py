"""The fine-tune stage on the driver: the grid's pending jobs as Ray Tune trials, in experiments
of bounded size, each recorded by a :class:`~raysweep.driver.recorder.JobRecorder`."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from raysweep.driver.cluster import node_capacities, total_cpus
from raysweep.driver.context import TRIALS_PER_EXPERIMENT, StageContext
from raysweep.driver.entrypoints import finetune_trainable
from raysweep.driver.gpu_packing import lower_packing, plan_packing
from raysweep.driver.packing import bundle_jobs
from raysweep.driver.progress import Progress
from raysweep.driver.recorder import JobRecorder
from raysweep.driver.scheduling import quiet_result_loading
from raysweep.plan import Job
from raysweep.protocol import WorkerContext, clear_done, fold_finished_trials
from raysweep.sweepdir import SweepDir


def tune_experiment_name(jobs: list[Job]) -> str:
    digest = hashlib.sha256("".join(sorted(j.key for j in jobs)).encode()).hexdigest()[:10]
    return f"finetune-{digest}"


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
            "name": f"bundle{i:04d}-{tune_experiment_name(bundle)[-10:]}",
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


def run_finetune_stage(ctx: StageContext, jobs: list[Job]) -> None:
    """Run the pending fine-tune jobs as Ray Tune trials, in experiments of bounded size.

    ``resources.gpu: auto``: experiments per packing level, most trials per GPU first; jobs
    that ran out of GPU memory run again at a lower level (:mod:`raysweep.driver.gpu_packing`).
    """
    ctx.outcome.start("finetune")
    if not jobs:
        return
    progress = ctx.progress("finetune", len(jobs))
    resources = ctx.spec.resources
    per_gpu = None
    if resources.gpu_auto:
        gpus = sum(node["GPU"] for node in node_capacities())
        per_gpu = plan_packing(ctx.plan, jobs, ctx.worker, ctx.write, gpus)
    if per_gpu is None:
        run_trials(ctx, jobs, 0.0 if resources.gpu_auto else float(resources.gpu), progress)
        return
    levels: dict[int, list[Job]] = {}
    for job in jobs:
        levels.setdefault(per_gpu[job.key], []).append(job)
    earlier: dict[str, JobRecorder] = {}
    while levels:
        k = max(levels)
        recorders = run_trials(ctx, levels.pop(k), 1.0 / k, progress, k > 1, earlier)
        for recorder in recorders:
            retry = [recorder.jobs[key] for key in sorted(recorder.out_of_memory)]
            earlier.update({job.key: recorder for job in retry})
            if retry:
                ctx.write(
                    f"[finetune] {len(retry)} jobs ran out of GPU memory at {k} per GPU: "
                    f"running them again at {lower_packing(k)} per GPU"
                )
                levels.setdefault(lower_packing(k), []).extend(retry)


def run_trials(
    ctx: StageContext,
    jobs: list[Job],
    gpu: float,
    progress: Progress,
    retry_oom: bool = False,
    earlier: dict[str, JobRecorder] | None = None,
) -> list[JobRecorder]:
    """``jobs`` as Tune trials of ``gpu`` GPUs each, in experiments of bounded size; the
    recorder of each experiment (``earlier``: the recorders whose open runs retries continue)."""
    from ray import tune

    spec, write, earlier = ctx.spec, ctx.write, earlier or {}
    resources = {"cpu": spec.resources.cpu, "gpu": gpu}
    write(f"[finetune] {len(jobs)} trials on Ray Tune, {resources['cpu']:g} CPU / {gpu:g} GPU each")
    trainable = tune.with_resources(finetune_trainable, resources)
    slots = max(1, int(total_cpus() // max(spec.resources.cpu, 1e-9)))
    recorders = []
    for start in range(0, len(jobs), TRIALS_PER_EXPERIMENT):
        chunk = jobs[start : start + TRIALS_PER_EXPERIMENT]
        chunk_jobs = {j.key: j for j in chunk}
        recorder = JobRecorder(ctx.tracker, chunk_jobs, ctx.sweep.store, progress, retry_oom)
        for key in chunk_jobs.keys() & earlier.keys():
            recorder.carry(earlier[key], {key})
        run_experiment(ctx, chunk, trainable, recorder, slots)
        recorders.append(recorder)
    return recorders


def run_experiment(
    ctx: StageContext, chunk: list[Job], trainable: Any, recorder: JobRecorder, slots: int
) -> None:
    """One Tuner over ``chunk``; its outcome goes to ``ctx.outcome``."""
    from ray import tune

    space, trial_name = trial_space(chunk, ctx.worker, slots)
    if "bundle" in space:
        bundles = len(space["bundle"]["grid_search"])
        ctx.write(f"[finetune] {len(chunk)} jobs packed into {bundles} trials (bundles)")
    tuner = tune.Tuner(
        trainable,
        param_space=space,
        tune_config=tune.TuneConfig(
            reuse_actors=True,
            trial_name_creator=trial_name,
            trial_dirname_creator=trial_name,
        ),
        run_config=run_config(tune_experiment_name(chunk), ctx.sweep, recorder),
    )
    with quiet_result_loading():
        tuner.fit()
    ctx.outcome.failed["finetune"].extend(
        f"{recorder.jobs[k].name}: {reason}" for k, reason in recorder.failures.items()
    )
    ctx.outcome.ran["finetune"] += len(recorder.finished)
    fold_finished_trials(ctx.sweep.trials_dir, recorder.finished)
    ended = len(recorder.finished) + len(recorder.failures) + len(recorder.out_of_memory)
    missing = len(chunk) - ended
    if missing:
        # Tune swallows Ctrl-C and returns; trials it stopped are neither done nor failed.
        raise KeyboardInterrupt(f"{missing} fine-tune trials were stopped before the end")
