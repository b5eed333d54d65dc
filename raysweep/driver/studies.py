"""Each search group's Optuna study, kept in ``<sweep>/search/optuna.db`` (SQLite, study name =
group key), and its MLflow record: one child run per finished trial, under the key of its slot.

Persistence (why not ``Tuner.restore``): ``OptunaSearch`` writes each finished trial to the
study at once (``study.tell``), while Tune's experiment snapshot is written only every ≥10 s,
so after a crash finished trials could come back as RUNNING and run twice (REFERENCE.md), and
``Tuner.restore`` cannot change ``num_samples``. On resume a group's trials left RUNNING are
marked FAIL (TPE ignores them) and a new Tune run asks for exactly ``trials − finished`` more.

MLflow: the driver logs each finished study trial as a child run (``raysweep.stage=search``,
the group's axes, ``search.<param>`` params, ``val/acc`` per epoch) under the key of its slot
— a group's i-th finished trial is slot i of the plan — so ``status`` counts them. Runs are
written from the study after each trial, and again after each Tune run (a crash between
``tell`` and the log is repaired on resume).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from raysweep.driver.tracker import SweepTracker
from raysweep.plan import Job
from raysweep.plan.search import SearchGroup, slot_key
from raysweep.schema import search_param
from raysweep.sweepdir import SweepDir

if TYPE_CHECKING:
    import optuna


def storage_url(sweep: SweepDir) -> str:
    folder = sweep.search_dir
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
        values = {search_param(k): format_value(v) for k, v in trial_values(trial).items()}
        axes = {**slot.axes, **values, search_param("optuna_trial"): str(trial.number)}
        run_id = self.tracker.start_job(dataclasses.replace(slot, axes=axes))
        history = epoch_values(trial)
        for step, value in history.items():
            self.tracker.log_metrics(run_id, {"val/acc": value}, step=step)
        final = {"search/value": float(trial.value or 0.0), "search/epochs": float(len(history))}
        self.tracker.log_metrics(run_id, final, step=0)
        self.tracker.end_job(run_id)


def group_best(url: str, group: SearchGroup) -> dict[str, Any] | None:
    """The best trial's values once the group's budget is spent; None before."""
    import optuna

    study = optuna.load_study(study_name=group.key, storage=url)
    trials = finished_trials(study)
    if len(trials) < group.config["search"]["trials"]:
        return None
    best = max(trials, key=lambda t: (t.value if t.value is not None else -1.0, -t.number))
    return trial_values(best)
