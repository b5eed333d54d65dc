"""Figure family ``search_plots``: Optuna's optimisation history and importances per group.

The search stage (:mod:`raysweep.driver.studies`) logs each finished trial as a run with
``raysweep.stage=search``, its group (``search_group``), its values (``search.<param>``), its
score (``search/value``, the validation accuracy Optuna was told) and, in its ``config``
param, the group's search space. Per group this family rebuilds the study in memory
(``optuna.create_study`` + ``add_trial(create_trial(...))``) and draws, with Optuna's own
matplotlib plots (``optuna.visualization.matplotlib``):

* the optimisation history (``plot_optimization_history``): each trial's score by trial number
  and the best so far;
* the hyperparameter importances (``plot_param_importances``) — fANOVA (Hutter et al. 2014):
  the share of the score's variance, under a random-forest fit of score against values, that
  each hyperparameter explains alone. Drawn from two hyperparameters and two trials on: one
  hyperparameter explains everything by definition, and one trial explains nothing.

Optuna's plotting functions are experimental (an ``ExperimentalWarning`` per call, silenced
here) and draw through pyplot with its ggplot style sheet, which they apply process-wide: both
stay inside :func:`_optuna_pyplot`, every figure is closed in pyplot once saved, and the files
are written through an Agg canvas whatever backend pyplot picked (none is needed headless).

Files: ``search_<group>.png/.pdf`` (history), ``search_<group>_importances.png/.pdf``,
``search_trials.csv`` (one row per trial) and ``search_importances.csv``.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg

from raysweep.analysis.labels import label_of, source_labels
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
SCORE_LABEL = "validation accuracy [%]"
# Seeded: the importances in the CSV and in the figure are the same numbers, run after run.
FANOVA_SEED = 0


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


def _evaluator() -> Any:
    from optuna.importance import FanovaImportanceEvaluator

    return FanovaImportanceEvaluator(seed=FANOVA_SEED)


def importances(study: optuna.Study) -> dict[str, float]:
    """fANOVA importances; a single hyperparameter explains everything, no fit needed; a single
    trial explains nothing (Optuna would split the share evenly), so none."""
    import optuna

    names = list(study.trials[0].distributions)
    if len(names) == 1:
        return {names[0]: 1.0}
    if len(study.trials) < 2:
        return {}
    weights = optuna.importance.get_param_importances(study, evaluator=_evaluator())
    return {k: float(v) for k, v in weights.items()}


@contextmanager
def _quiet_optuna() -> Iterator[None]:
    """Optuna without its chatter: no INFO line per study rebuilt in memory, no
    ExperimentalWarning per plot (the matplotlib API is documented, only marked experimental);
    the caller's verbosity and warning filters come back on exit."""
    import optuna
    from optuna.exceptions import ExperimentalWarning

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            yield
    finally:
        optuna.logging.set_verbosity(verbosity)


@contextmanager
def _optuna_pyplot() -> Iterator[None]:
    """Optuna's matplotlib plots without side effects: its style sheet (``plt.style.use``, which
    changes the process-wide rcParams) is undone on exit."""
    import matplotlib

    with matplotlib.rc_context(), _quiet_optuna():
        yield


def _save(ax: Axes, path: Path) -> list[Path]:
    """Save Optuna's figure as ``path`` .png (150 dpi) and .pdf and drop it from pyplot."""
    from matplotlib import pyplot as plt

    fig = ax.figure  # Optuna's own figure (plt.subplots), never a subfigure
    plt.close(fig)  # pyplot keeps every figure it made until closed: a leak per group
    FigureCanvasAgg(fig)  # the files never depend on pyplot's (possibly GUI) backend
    paths = [path.with_suffix(".png"), path.with_suffix(".pdf")]
    # "tight": Optuna lays out for its own short titles; long hyperparameter names and the
    # group's title must not be cut at the edge.
    fig.savefig(paths[0], dpi=150, bbox_inches="tight")
    fig.savefig(paths[1], bbox_inches="tight")
    return paths


def plot_group(
    study: optuna.Study, weights: dict[str, float], title: str, path: Path
) -> list[Path]:
    """Optuna's optimisation history as ``<path>.png/.pdf`` and, with ≥ 2 hyperparameters
    weighed, its importance bars as ``<path>_importances.png/.pdf``."""
    from optuna.visualization.matplotlib import (
        plot_optimization_history,
        plot_param_importances,
    )

    paths: list[Path] = []
    with _optuna_pyplot():
        ax = plot_optimization_history(study, target_name=SCORE_LABEL)
        ax.set_title(f"{title}\noptimisation history", fontsize=10)
        ax.legend(loc="best", fontsize=9)  # inside, off the points: the panel keeps its width
        ax.figure.set_size_inches(6.4, 4.4)
        paths += _save(ax, path)
        if len(weights) >= 2:
            ax = plot_param_importances(study, evaluator=_evaluator(), target_name=SCORE_LABEL)
            what = "hyperparameter importance (fANOVA)"
            ax.set_title(f"{title}\n{what}", fontsize=10, loc="left")
            ax.get_legend().remove()  # one objective: its name is the title's business
            ax.figure.set_size_inches(6.4, 1.6 + 0.5 * len(weights))
            paths += _save(ax, path.with_name(f"{path.name}_importances"))
    return paths


def search_runs(data: SweepData) -> pd.DataFrame:
    runs = sweep_runs(data.tracking_uri, data.sweep, stage="search")
    needed = ["search_group", SCORE, "config"]
    if runs.empty or any(c not in runs.columns for c in needed):
        raise NotSupported(
            "search plots: the sweep has no finished search trials; add a `search:` section "
            "to the spec"
        )
    runs = runs.dropna(subset=needed).copy()
    trial = runs[search_param("optuna_trial")]
    runs["search_trial_number"] = pd.to_numeric(trial, errors="coerce")
    return runs


def search_plots(data: SweepData, out_dir: Path) -> Section:
    """Per search group: optimisation history and fANOVA importances (Optuna), plus tables."""
    runs = search_runs(data)
    out_dir.mkdir(parents=True, exist_ok=True)
    labels = source_labels(runs)
    rows, weights_rows, figures, parts = [], [], [], []
    for group, part in runs.groupby("search_group", sort=True):
        with _quiet_optuna():
            study = rebuild_study(part)
            weights = importances(study)
        first = part.iloc[0]
        title = f"{label_of(labels, first['source'])} → {first['target']} "
        title += f"({first['subset_size']} images, blocks={first['blocks']})"
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
        "Per group, Optuna's TPE search on a validation split of the training subset, drawn "
        "with Optuna's plots: each trial's validation accuracy with the best so far, and, for "
        "groups searching two or more hyperparameters, fANOVA importances (the share of the "
        "score's variance each hyperparameter explains). The grid ran with each "
        f"group's best values. Tables: {file_links(paths, out_dir)}.\n\n"
        + "\n".join(parts)
        + "\n\n"
        + figure_links(figures, out_dir)
    )
    return Section("Hyperparameter search (Optuna)", body, paths)
