"""The search stage on the driver: per search group, one Ray Tune run of ``OptunaSearch`` (TPE,
seeded) with ASHA, over the group's missing trials; then each complete group's best values go
into its grid jobs. Studies and their MLflow runs: :mod:`raysweep.driver.studies`.

A resumed group samples with seed ``seed + finished`` so that TPE does not replay the random
start-up draws it already made; the number of finished trials always equals the budget.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from raysweep.driver.cluster import node_capacities
from raysweep.driver.context import StageContext
from raysweep.driver.entrypoints import search_trainable
from raysweep.driver.gpu_packing import unpacked_share
from raysweep.driver.progress import Write
from raysweep.driver.scheduling import quiet_result_loading
from raysweep.driver.studies import (
    StudyLogger,
    finished_trials,
    format_value,
    group_best,
    open_study,
    storage_url,
)
from raysweep.plan import Job, pretrain_jobs
from raysweep.plan.search import SearchGroup, apply_values, max_epochs, search_groups
from raysweep.schema import search_param

#: Optuna's TPE default start-up, capped at half the budget so small budgets still use TPE.
MAX_STARTUP_TRIALS = 10


def tune_space(group: SearchGroup) -> dict[str, Any]:
    """The group's search space in Ray Tune's domains (OptunaSearch converts them)."""
    from ray import tune

    space: dict[str, Any] = {}
    for p in group.config["search"]["params"]:
        if p["distribution"] == "choice":
            space[p["name"]] = tune.choice(list(p["values"]))
        elif p["distribution"] == "int":
            low, high = int(p["low"]), int(p["high"])
            space[p["name"]] = (
                tune.lograndint(low, high + 1) if p["log"] else tune.randint(low, high + 1)
            )
        elif p["distribution"] == "loguniform":
            space[p["name"]] = tune.loguniform(p["low"], p["high"])
        else:
            space[p["name"]] = tune.uniform(p["low"], p["high"])
    return space


def make_recorder(logger: StudyLogger, url: str) -> Any:
    """A Tune callback that syncs the study into MLflow after every finished trial."""
    from ray import tune

    class SearchRecorder(tune.Callback):
        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            logger.sync(url)

    return SearchRecorder()


def make_searcher(group: SearchGroup, url: str, done: int) -> tuple[Any, Any]:
    """OptunaSearch (TPE seeded with ``seed + done``, on the group's RDB study) and ASHA."""
    import optuna
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    search = group.config["search"]
    startup = max(1, min(MAX_STARTUP_TRIALS, search["trials"] // 2))
    sampler = optuna.samplers.TPESampler(seed=group.config["seed"] + done, n_startup_trials=startup)
    searcher = OptunaSearch(
        metric=search["metric"],
        mode="max",
        sampler=sampler,
        study_name=group.key,
        storage=optuna.storages.RDBStorage(url),
    )
    sched = search["scheduler"]
    scheduler = (
        ASHAScheduler(
            time_attr="training_iteration",
            max_t=max_epochs(group.config),
            grace_period=sched["grace_period"],
            reduction_factor=sched["reduction_factor"],
        )
        if sched["name"] == "asha"
        else FIFOScheduler()
    )
    return ConcurrencyLimiter(searcher, max_concurrent=search["max_concurrent"]), scheduler


def fit_group(ctx: StageContext, group: SearchGroup, url: str, logger: StudyLogger) -> None:
    """Ask Tune for the group's missing trials, in a Tune experiment of their own."""
    from ray import tune

    search, resources, write = group.config["search"], ctx.spec.resources, ctx.write
    done = len(finished_trials(open_study(url, group)))
    remaining = search["trials"] - done
    if remaining <= 0:
        return
    write(f"[search] {group.name}: {remaining} of {search['trials']} trials to run")
    searcher, scheduler = make_searcher(group, url, done)
    gpu = unpacked_share(resources, sum(node["GPU"] for node in node_capacities()))
    trainable = tune.with_resources(search_trainable, {"cpu": resources.cpu, "gpu": gpu})
    job = {**{k: v for k, v in group.config.items() if k != "search"}, "group": group.key}
    tuner = tune.Tuner(
        trainable,
        param_space={
            "job": job,
            "context": dataclasses.asdict(ctx.worker),
            "params": tune_space(group),
        },
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            scheduler=scheduler,
            num_samples=remaining,
            metric=search["metric"],
            mode="max",
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=f"search-{group.key}-{done}",
            storage_path=str(ctx.sweep.tune_dir),
            callbacks=[make_recorder(logger, url)],
            verbose=0,
            failure_config=tune.FailureConfig(max_failures=2),
        ),
    )
    with quiet_result_loading():
        tuner.fit()


def with_search_values(
    jobs: list[Job], best: Mapping[str, Mapping[str, Any]], write: Write
) -> list[Job]:
    """Grid jobs with their group's best values in config and as ``search.<name>`` axes.

    Jobs of a group whose search is not complete are held back: they would run with other
    values than their key promises. Jobs without a search entry pass unchanged.
    """
    out, held = [], 0
    for job in jobs:
        group = job.config.get("search")
        if group is None:
            out.append(job)
        elif group in best:
            values = best[group]
            axes = {**job.axes, **{search_param(k): format_value(v) for k, v in values.items()}}
            out.append(dataclasses.replace(job, config=apply_values(job.config, values), axes=axes))
        else:
            held += 1
    if held:
        write(f"[search] {held} fine-tune jobs wait for their group's search to complete")
    return out


def run_search_stage(
    ctx: StageContext, pending: list[Job], ready_sources: set[str]
) -> dict[str, dict[str, Any]]:
    """Run every group's missing trials; return each complete group's best values by key."""
    ctx.outcome.start("search")
    spec = ctx.spec
    if spec.search is None:
        return {}
    url = storage_url(ctx.sweep)
    slots = {job.key: job for job in ctx.plan.jobs["search"]}
    logged = set(slots) - {job.key for job in pending}
    groups = list(search_groups(spec, pretrain_jobs(spec)).values())
    best: dict[str, dict[str, Any]] = {}
    if pending:
        ctx.write(f"[search] {len(pending)} trials to run in {len(groups)} group(s)")
    for group in groups:
        logger = StudyLogger(ctx.tracker, group, slots, logged)
        if group.config["source_key"] in ready_sources:
            fit_group(ctx, group, url, logger)
        logger.sync(url)
        ctx.outcome.ran["search"] += logger.count
        values = group_best(url, group)
        if values is None:
            budget = group.config["search"]["trials"]
            ctx.outcome.failed["search"].append(
                f"{group.name}: {len(logger.logged_of_group())} of {budget} trials finished"
            )
        else:
            best[group.key] = values
    return best
