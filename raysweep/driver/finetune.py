"""The fine-tune stage on the driver: the grid's pending jobs as Ray Tune trials, in experiments
of bounded size, each recorded by a :class:`~raysweep.driver.recorder.JobRecorder`."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from raysweep.driver.cluster import total_cpus
from raysweep.driver.context import TRIALS_PER_EXPERIMENT, StageContext
from raysweep.driver.entrypoints import finetune_trainable
from raysweep.driver.packing import bundle_jobs
from raysweep.driver.recorder import JobRecorder
from raysweep.driver.scheduling import quiet_result_loading
from raysweep.plan import Job
from raysweep.protocol import WorkerContext, clear_done
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
    """Run the pending fine-tune jobs as Ray Tune trials, in experiments of bounded size."""
    from ray import tune

    ctx.outcome.start("finetune")
    if not jobs:
        return
    spec, write = ctx.spec, ctx.write
    progress = ctx.progress("finetune", len(jobs))
    resources = {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu}
    write(
        f"[finetune] {len(jobs)} trials on Ray Tune, {resources['cpu']:g} CPU / "
        f"{resources['gpu']:g} GPU each"
    )
    trainable = tune.with_resources(finetune_trainable, resources)
    slots = max(1, int(total_cpus() // max(spec.resources.cpu, 1e-9)))
    for start in range(0, len(jobs), TRIALS_PER_EXPERIMENT):
        chunk = jobs[start : start + TRIALS_PER_EXPERIMENT]
        recorder = JobRecorder(ctx.tracker, {j.key: j for j in chunk}, ctx.sweep.store, progress)
        space, trial_name = trial_space(chunk, ctx.worker, slots)
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
            run_config=run_config(tune_experiment_name(chunk), ctx.sweep, recorder),
        )
        with quiet_result_loading():
            tuner.fit()
        ctx.outcome.failed["finetune"].extend(
            f"{recorder.jobs[k].name}: {reason}" for k, reason in recorder.failures.items()
        )
        ctx.outcome.ran["finetune"] += len(recorder.finished)
        missing = len(chunk) - len(recorder.finished) - len(recorder.failures)
        if missing:
            # Tune swallows Ctrl-C and returns; trials it stopped are neither done nor failed.
            raise KeyboardInterrupt(f"{missing} fine-tune trials were stopped before the end")
