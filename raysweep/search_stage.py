"""The search stage on the driver: one Ray Tune run per group, ``OptunaSearch`` + ASHA.

Persistence (why not ``Tuner.restore``): every group's study lives in an Optuna RDB study,
``<sweep>/search/optuna.db`` (SQLite), named by the group key. ``OptunaSearch`` writes each
finished trial there at once (``study.tell``) — Tune's own experiment snapshot is written only
every ≥10 s, so after a crash finished trials can come back as RUNNING and be run twice
(REFERENCE.md), and ``Tuner.restore`` cannot change ``num_samples``. On resume a group's
trials left RUNNING are marked FAIL (TPE ignores them), and a *new* Tune run asks for exactly
``trials − finished`` more, sampling with seed ``seed + finished`` so that a resumed TPE does
not replay the random start-up draws it already made. The finished trials count is the
study's: no trial is lost or repeated, the total is the budget.

MLflow: the driver logs each finished study trial as a child run (``raysweep.stage=search``,
the group's axes, ``search.<param>`` params, ``val/acc`` per epoch) under the key of its slot
— a group's i-th finished trial is slot i of the plan — so ``status`` counts them. Runs are
written from the study after each trial, and again after each Tune run (a crash between
``tell`` and the log is repaired on resume).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from raysweep.entrypoints import ERROR_KEY, WorkerContext
from raysweep.plan import Job, Plan, pretrain_jobs
from raysweep.search import SearchGroup, apply_values, max_epochs, search_groups, slot_key
from raysweep.sweepdir import SweepDir
from raysweep.tracking import SweepTracker

if TYPE_CHECKING:
    import optuna

    from raysweep.orchestrator import Outcome

Write = Callable[[str], None]
#: Optuna's TPE default start-up, capped at half the budget so small budgets still use TPE.
MAX_STARTUP_TRIALS = 10


def validation_split(
    indices: Any, labels: Any, fraction: float, seed: int, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split a training subset into (fit, validation) rows, both sorted.

    ``n_val = max(1, round(fraction · n))`` rows go to validation, drawn from a PCG64(seed)
    permutation of the subset after one row of every class present is kept for training, so
    the fit part still holds every label. Only training images are involved: the test split is
    never read while searching.
    """
    from raysweep.search import validation_count

    indices = np.asarray(indices, dtype=np.int64)
    y = np.asarray(labels)[indices]
    n_val = validation_count(len(indices), fraction)
    if len(indices) - n_val < len(np.unique(y)):
        raise ValueError(
            f"a validation split of {n_val} of {len(indices)} images leaves a class of the "
            f"{num_classes} without a training image; lower search.validation_fraction"
        )
    perm = np.random.Generator(np.random.PCG64(seed)).permutation(len(indices))
    _, first = np.unique(y[perm], return_index=True)
    keep = np.zeros(len(indices), dtype=bool)
    keep[perm[first]] = True
    held = perm[~keep[perm]][:n_val]
    fit = np.setdiff1d(np.arange(len(indices)), held)
    return np.sort(indices[fit]), np.sort(indices[held])


def search_trainable(config: dict[str, Any]) -> None:
    """Tune trainable: the group's base job with the sampled values, scored on validation.

    A trial that fails as a job (a non-finite loss from too large a learning rate) scores 0 %
    validation accuracy, the worst possible, so that TPE learns to avoid that region.
    """
    from ray import tune

    from raysweep.finetune_worker import finetune_job  # torch: on the worker, never in the driver

    job = apply_values(config["job"], config["params"])
    job["key"] = f"search-{config['job']['group']}-{tune.get_context().get_trial_id()}"

    def report(row: dict[str, Any]) -> None:
        if ERROR_KEY in row:
            row = {**row, "val/acc": 0.0}
        tune.report(row)

    finetune_job(job, WorkerContext(**config["context"]), report)


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


def storage_url(sweep: SweepDir) -> str:
    folder = sweep.path / "search"
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'optuna.db'}"


def open_study(url: str, group: SearchGroup) -> optuna.Study:
    """The group's study; trials an interrupted driver left RUNNING become FAIL."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        storage=url, study_name=group.key, direction="maximize", load_if_exists=True
    )
    for trial in study.get_trials(deepcopy=False):
        if trial.state in (optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING):
            study._storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
    return study


def finished_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """COMPLETE and PRUNED trials in the order they were asked (Optuna's trial number)."""
    import optuna

    done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return sorted(study.get_trials(deepcopy=False, states=done), key=lambda t: t.number)


def trial_values(trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    """A trial's values by hyperparameter name (Tune flattens ``params.lr`` to ``params/lr``)."""
    return {name.rsplit("/", 1)[-1]: value for name, value in trial.params.items()}


def epoch_values(trial: optuna.trial.FrozenTrial) -> dict[int, float]:
    """``val/acc`` per epoch. Tune hands a trial's last result to the searcher as its final
    value, not as an intermediate one; trials report every epoch, so it is the next epoch."""
    history = {int(k): float(v) for k, v in sorted(trial.intermediate_values.items())}
    if trial.value is not None:
        history[max(history, default=0) + 1] = float(trial.value)
    return history


def format_value(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


class StudyLogger:
    """Logs each finished trial of one group's study as its slot's MLflow run (driver only)."""

    def __init__(
        self, tracker: SweepTracker, group: SearchGroup, slots: Mapping[str, Job], logged: set[str]
    ) -> None:
        self.tracker, self.group, self.slots, self.logged = tracker, group, slots, logged
        self.count = 0

    def logged_of_group(self) -> set[str]:
        return {key for key in self.logged if self.slots[key].config["group"] == self.group.key}

    def sync(self, url: str) -> None:
        import optuna

        study = optuna.load_study(study_name=self.group.key, storage=url)
        for index, trial in enumerate(finished_trials(study)):
            key = slot_key(self.group.key, index)
            if key in self.logged or key not in self.slots:
                continue
            self.log_trial(self.slots[key], trial)
            self.logged.add(key)
            self.count += 1

    def log_trial(self, slot: Job, trial: optuna.trial.FrozenTrial) -> None:
        values = {f"search.{k}": format_value(v) for k, v in trial_values(trial).items()}
        axes = {**slot.axes, **values, "search.optuna_trial": str(trial.number)}
        run_id = self.tracker.start_job(dataclasses.replace(slot, axes=axes))
        history = epoch_values(trial)
        for step, value in history.items():
            self.tracker.log_metrics(run_id, {"val/acc": value}, step=step)
        final = {"search/value": float(trial.value or 0.0), "search/epochs": float(len(history))}
        self.tracker.log_metrics(run_id, final, step=0)
        self.tracker.end_job(run_id)


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


def fit_group(
    group: SearchGroup,
    url: str,
    ctx: WorkerContext,
    sweep: SweepDir,
    logger: StudyLogger,
    resources: Any,
    write: Write,
) -> None:
    """Ask Tune for the group's missing trials, in a Tune experiment of their own."""
    from ray import tune

    from raysweep.stages import quiet_result_loading

    search = group.config["search"]
    done = len(finished_trials(open_study(url, group)))
    remaining = search["trials"] - done
    if remaining <= 0:
        return
    write(f"[search] {group.name}: {remaining} of {search['trials']} trials to run")
    searcher, scheduler = make_searcher(group, url, done)
    trainable = tune.with_resources(search_trainable, {"cpu": resources.cpu, "gpu": resources.gpu})
    job = {**{k: v for k, v in group.config.items() if k != "search"}, "group": group.key}
    tuner = tune.Tuner(
        trainable,
        param_space={"job": job, "context": dataclasses.asdict(ctx), "params": tune_space(group)},
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
            storage_path=str(sweep.tune_dir),
            callbacks=[make_recorder(logger, url)],
            verbose=0,
            failure_config=tune.FailureConfig(max_failures=2),
        ),
    )
    with quiet_result_loading():
        tuner.fit()


def group_best(url: str, group: SearchGroup) -> dict[str, Any] | None:
    """The best trial's values once the group's budget is spent; None before."""
    import optuna

    study = optuna.load_study(study_name=group.key, storage=url)
    trials = finished_trials(study)
    if len(trials) < group.config["search"]["trials"]:
        return None
    best = max(trials, key=lambda t: (t.value if t.value is not None else -1.0, -t.number))
    return trial_values(best)


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
            axes = {**job.axes, **{f"search.{k}": format_value(v) for k, v in values.items()}}
            out.append(dataclasses.replace(job, config=apply_values(job.config, values), axes=axes))
        else:
            held += 1
    if held:
        write(f"[search] {held} fine-tune jobs wait for their group's search to complete")
    return out


def run_search_stage(
    plan: Plan,
    pending: list[Job],
    tracker: SweepTracker,
    ctx: WorkerContext,
    sweep: SweepDir,
    ready_sources: set[str],
    outcome: Outcome,
    write: Write,
) -> dict[str, dict[str, Any]]:
    """Run every group's missing trials; return each complete group's best values by key."""
    outcome.ran["search"], outcome.failed["search"] = 0, []
    spec = plan.spec
    if spec.search is None:
        return {}
    url = storage_url(sweep)
    slots = {job.key: job for job in plan.jobs["search"]}
    logged = {job.key for job in plan.jobs["search"]} - {job.key for job in pending}
    groups = list(search_groups(spec, pretrain_jobs(spec)).values())
    best: dict[str, dict[str, Any]] = {}
    if pending:
        write(f"[search] {len(pending)} trials to run in {len(groups)} group(s)")
    for group in groups:
        logger = StudyLogger(tracker, group, slots, logged)
        if group.config["source_key"] in ready_sources:
            fit_group(group, url, ctx, sweep, logger, spec.resources, write)
        logger.sync(url)
        outcome.ran["search"] += logger.count
        values = group_best(url, group)
        if values is None:
            budget = group.config["search"]["trials"]
            outcome.failed["search"].append(
                f"{group.name}: {len(logger.logged_of_group())} of {budget} trials finished"
            )
        else:
            best[group.key] = values
    return best
