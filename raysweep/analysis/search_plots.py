"""Figure family ``search_plots``: Optuna's optimisation history and importances per group.

The search stage (:mod:`raysweep.driver.studies`) logs each finished trial as a run with
``raysweep.stage=search``, its group (``search_group``), its values (``search.<param>``), its
score (``search/value``, the validation accuracy Optuna was told) and, in its ``config``
param, the group's search space. Per group this family rebuilds the study in memory
(``optuna.create_study`` + ``add_trial(create_trial(...))``) and draws

* the optimisation history: each trial's score by trial number and the best so far;
* the hyperparameter importances from ``optuna.importance.get_param_importances`` — fANOVA
  (Hutter et al. 2014): the share of the score's variance, under a random-forest fit of score
  against values, that each hyperparameter explains alone.

Files: ``search_<group>.png/.pdf`` and ``search_trials.csv`` (one row per trial),
``search_importances.csv``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from raysweep.analysis.results import sweep_runs
from raysweep.analysis.sweepdata import (
    NotSupported,
    Section,
    SweepData,
    figure_links,
    file_links,
)
from raysweep.schema import search_param

if TYPE_CHECKING:
    import optuna

SCORE = "search_value"


def distributions(space: dict[str, Any]) -> dict[str, Any]:
    """Optuna distributions of a group's space as the search section wrote it."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    out: dict[str, Any] = {}
    for p in space["params"]:
        if p["distribution"] == "choice":
            out[p["name"]] = CategoricalDistribution(list(p["values"]))
        elif p["distribution"] == "int":
            out[p["name"]] = IntDistribution(int(p["low"]), int(p["high"]), log=bool(p["log"]))
        else:
            log = p["distribution"] == "loguniform"
            out[p["name"]] = FloatDistribution(p["low"], p["high"], log=log)
    return out


def param_value(raw: str, distribution: Any) -> Any:
    """A logged value (string) back in its distribution's type; choices match by value."""
    from optuna.distributions import CategoricalDistribution, IntDistribution

    if isinstance(distribution, CategoricalDistribution):
        return min(distribution.choices, key=lambda c: abs(float(c) - float(raw)))
    if isinstance(distribution, IntDistribution):
        return int(float(raw))
    # Logged with 6 significant digits: clip into the bounds it was drawn from.
    return min(max(float(raw), distribution.low), distribution.high)


def rebuild_study(runs: pd.DataFrame) -> optuna.Study:
    """One group's finished trials as an in-memory study (values in ``search.<name>``)."""
    import optuna

    space = json.loads(runs["config"].iloc[0])["space"]
    dists = distributions(space)
    study = optuna.create_study(direction="maximize")
    for _, row in runs.sort_values("search_trial_number").iterrows():
        params = {name: param_value(row[search_param(name)], d) for name, d in dists.items()}
        study.add_trial(
            optuna.trial.create_trial(params=params, distributions=dists, value=float(row[SCORE]))
        )
    return study


def importances(study: optuna.Study) -> dict[str, float]:
    """fANOVA importances; a single hyperparameter explains everything, no fit needed."""
    import optuna

    names = list(study.trials[0].distributions)
    if len(names) == 1:
        return {names[0]: 1.0}
    if len(study.trials) < 2:
        return {}
    return dict(optuna.importance.get_param_importances(study, normalize=True))


def plot_group(
    study: optuna.Study, weights: dict[str, float], title: str, path: Path
) -> list[Path]:
    """History (score and best so far by trial) beside the importance bars; PNG and PDF."""
    fig = Figure(figsize=(9.0, 3.4))
    FigureCanvasAgg(fig)
    history, bars = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
    numbers = [t.number for t in study.trials]
    scores = [float(t.value) for t in study.trials]
    best = pd.Series(scores).cummax()
    history.scatter(numbers, scores, s=18, color="tab:blue", label="trial")
    history.step(numbers, best, where="post", color="tab:red", label="best so far")
    history.set(xlabel="trial", ylabel="validation accuracy [%]", title="optimisation history")
    history.legend(loc="lower right", fontsize=8)
    names = sorted(weights, key=weights.get)
    bars.barh(names, [weights[n] for n in names], color="tab:gray")
    bars.set(xlabel="importance (fANOVA)", xlim=(0, 1), title="hyperparameter importance")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    paths = [path.with_suffix(".png"), path.with_suffix(".pdf")]
    for p in paths:
        fig.savefig(p, dpi=120)
    return paths


def search_runs(data: SweepData) -> pd.DataFrame:
    runs = sweep_runs(data.tracking_uri, data.sweep, stage="search")
    needed = ["search_group", SCORE, "config"]
    if runs.empty or any(c not in runs.columns for c in needed):
        raise NotSupported("search plots: the sweep has no finished search trials")
    runs = runs.dropna(subset=needed).copy()
    trial = runs[search_param("optuna_trial")]
    runs["search_trial_number"] = pd.to_numeric(trial, errors="coerce")
    return runs


def search_plots(data: SweepData, out_dir: Path) -> Section:
    """Per search group: optimisation history and fANOVA importances (Optuna), plus tables."""
    runs = search_runs(data)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows, weights_rows, figures, parts = [], [], [], []
    for group, part in runs.groupby("search_group", sort=True):
        study = rebuild_study(part)
        weights = importances(study)
        first = part.iloc[0]
        title = f"{first['source']} → {first['target']} (n={first['subset_size']}, "
        title += f"blocks={first['blocks']})"
        figures += plot_group(study, weights, title, out_dir / f"search_{group}")
        best = study.best_trial
        values = ", ".join(f"{k} = {v:.4g}" for k, v in best.params.items())
        parts.append(
            f"- **{title}**: {len(study.trials)} trials, best validation accuracy "
            f"{best.value:.1f} % with {values}"
        )
        for t in study.trials:
            rows.append({"group": group, "trial": t.number, "value": t.value, **t.params})
        weights_rows += [{"group": group, "param": k, "importance": v} for k, v in weights.items()]
    trials_csv, weights_csv = out_dir / "search_trials.csv", out_dir / "search_importances.csv"
    pd.DataFrame(rows).to_csv(trials_csv, index=False)
    pd.DataFrame(weights_rows, columns=["group", "param", "importance"]).to_csv(
        weights_csv, index=False
    )

    paths = [trials_csv, weights_csv, *figures]
    body = (
        "Per group, Optuna's TPE search on a validation split of the training subset: each "
        "trial's validation accuracy with the best so far, and fANOVA importances (the share "
        "of the score's variance each hyperparameter explains). The grid ran with each "
        f"group's best values. Tables: {file_links(paths, out_dir)}.\n\n"
        + "\n".join(parts)
        + "\n\n"
        + figure_links(figures, out_dir)
    )
    return Section("Hyperparameter search (Optuna)", body, paths)
