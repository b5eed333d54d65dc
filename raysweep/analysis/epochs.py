"""Utrera et al. 2021, Fig. 3 and 10: test accuracy during fine-tuning and its robust − natural
delta ("robust models transfer faster").

Per (source, target, subset size, blocks) and evaluated epoch: the mean test accuracy over seeds
with its 95 % t-interval, mean ± t_{0.975, n-1} s / sqrt(n). The delta is robust − natural
accuracy paired seed by seed at the same epoch: runs match on (target, subset size, seed,
blocks, epoch) — the same random subset and head initialisation for both sources — never
across them. The paper draws one figure per subset size (3,200 images in Fig. 3; 800 and 12,800
in Fig. 10): here one figure per (blocks, subset size), accuracy panels on top (one per target,
one line per source), delta panels below.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from raysweep.analysis.figures import (
    ACCURACY_LABEL,
    DELTA_LABEL,
    _band,
    _legend,
    _panel_grid,
    _size_label,
    save_figure,
    source_colors,
)
from raysweep.analysis.stats import gap_table, summarize
from raysweep.analysis.sweepdata import (
    NotSupported,
    Section,
    SweepData,
    compose_section,
    require_columns,
    write_tables,
)
from raysweep.analysis.tables import SORT_KEYS, pivot_markdown

EPOCH_LABEL = "fine-tuning epoch"
METRIC = "test/acc"
CELL = ["source", "target", "subset_size", "blocks"]


def epoch_history(data: SweepData) -> pd.DataFrame:
    """Every evaluation of test accuracy of the sweep's fine-tuning runs (``step`` = epoch).

    Raises :class:`NotSupported` when no run was evaluated at two or more epochs: a curve
    needs at least two points.
    """
    # Checked on the runs first: an empty sweep must not cost a history query.
    require_columns(data.finetune, [*CELL, "seed"], "accuracy vs. epoch")
    history = data.history("finetune", METRIC)
    require_columns(history, [*CELL, "seed", "step", "value"], "accuracy vs. epoch")
    evaluations = history.groupby("run_id")["step"].nunique()
    if evaluations.max() < 2:
        raise NotSupported(
            f"accuracy vs. epoch: every run logged {METRIC} at most once (needs >= 2 epochs)"
        )
    return history


def figure_keys(history: pd.DataFrame) -> list[str]:
    """What gets its own figure: blocks, subset size, and the epoch budget when it varies
    (curves of 10- and 20-epoch schedules are not comparable point by point)."""
    keys = ["blocks", "subset_size"]
    if "epochs" in history and history["epochs"].nunique() > 1:
        keys.append("epochs")
    return keys


def _accuracy_panel(ax: Axes, curves: pd.DataFrame, colors: dict[str, object]) -> None:
    for source, line in curves.groupby("source", sort=True):
        x, mean = line["step"].to_numpy(float), line["mean"].to_numpy(float)
        _band(ax, x, mean, line["ci95"].to_numpy(float), colors[source], str(source))
    ax.set_ylabel(ACCURACY_LABEL)


def _delta_panel(ax: Axes, gaps: pd.DataFrame, colors: dict[str, object]) -> None:
    for (robust, natural), line in gaps.groupby(["robust", "natural"], sort=True):
        x, mean = line["step"].to_numpy(float), line["delta"].to_numpy(float)
        _band(ax, x, mean, line["ci95"].to_numpy(float), colors[robust], f"{robust} − {natural}")
    ax.axhline(0.0, color="black", linewidth=0.8, linestyle="--")
    ax.set_ylabel(DELTA_LABEL)


def accuracy_vs_epoch_figure(
    curves: pd.DataFrame, gaps: pd.DataFrame, title: str, colors: dict[str, object]
) -> Figure:
    """Fig. 3(a) on top — per target, mean accuracy ± 95 % t band against the epoch, one line
    per source — and Fig. 3(b) below: the seed-matched robust − natural delta per target.

    ``curves`` is :func:`summarize` output with a ``step`` column, ``gaps`` the
    :func:`gap_table` of the history (may be empty: then only the accuracy row is drawn).
    """
    targets = sorted(set(curves["target"]) | set(gaps["target"]))
    n = len(targets)
    ncols = min(3, n)
    # The delta row starts on a fresh row so that each delta sits under its accuracy panel.
    slots = math.ceil(n / ncols) * ncols
    gaps = gaps[gaps["delta"].notna()]
    fig, axes = _panel_grid(slots + n if not gaps.empty else n, title, ncols)
    for ax in axes[n:slots] if not gaps.empty else []:
        fig.delaxes(ax)
    for i, target in enumerate(targets):
        _accuracy_panel(axes[i], curves[curves["target"] == target], colors)
        axes[i].set_title(str(target))
        if not gaps.empty:
            _delta_panel(axes[slots + i], gaps[gaps["target"] == target], colors)
            axes[slots + i].set_title(f"{target}: robust − natural")
    drawn = axes[:n] + (axes[slots:] if not gaps.empty else [])
    steps = sorted(set(curves["step"]))
    for ax in drawn:
        ax.set_xlabel(EPOCH_LABEL)
        # Ticks on the evaluated epochs while they are few enough to read.
        if len(steps) <= 12:
            ax.set_xticks(steps)
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
    _legend(fig, drawn)
    return fig


def _order(key: dict[str, object]) -> tuple[object, ...]:
    return tuple(SORT_KEYS[k](v) if k in SORT_KEYS else v for k, v in key.items())


def _title(key: dict[str, object], n_train: float) -> str:
    size = _size_label(str(key["subset_size"]), n_train)
    budget = f", {key['epochs']} epochs" if "epochs" in key else ""
    return (
        f"Test accuracy during fine-tuning (blocks={key['blocks']}, {size} training images"
        f"{budget}; mean ± 95% CI over seeds)"
    )


def plot_accuracy_vs_epoch(
    history: pd.DataFrame, summary: pd.DataFrame, gaps: pd.DataFrame, out_dir: Path
) -> list[Path]:
    """One figure per :func:`figure_keys` value: ``accuracy_vs_epoch_blocks-<b>_size-<s>``."""
    keys = figure_keys(history)
    colors = source_colors(list(history["source"]))
    paths: list[Path] = []
    groups = sorted(summary.groupby(keys), key=lambda g: _order(dict(zip(keys, g[0], strict=True))))
    for values, curves in groups:
        key = dict(zip(keys, values, strict=True))
        mask = pd.Series(True, index=gaps.index)
        for column, value in key.items():
            mask &= gaps[column] == value
        runs = history[(history[keys] == pd.Series(key)).all(axis=1)]
        n_train = float(runs["n_train"].median()) if "n_train" in runs else math.nan
        fig = accuracy_vs_epoch_figure(curves, gaps[mask], _title(key, n_train), colors)
        stem = "accuracy_vs_epoch_" + "_".join(
            f"{'size' if k == 'subset_size' else k}-{v}" for k, v in key.items()
        )
        paths += save_figure(fig, out_dir, stem)
    return paths


def gap_by_epoch_markdown(gaps: pd.DataFrame) -> str:
    """Per (pair, blocks): rows (target, subset size), one column per epoch, cells
    ``delta ± ci95 (n)`` of the seed-matched robust − natural accuracy [pp]."""
    if gaps.empty:
        return "No robust source has a natural partner with matched runs."
    sections = []
    for (robust, natural, blocks), part in gaps.groupby(["robust", "natural", "blocks"]):
        index = ["target", "subset_size"]
        if "epochs" in part and part["epochs"].nunique() > 1:
            index.append("epochs")
        table = pivot_markdown(part, index, "step", mean="delta", signed=True, bold_best=False)
        sections.append(f"### {robust} − {natural}, blocks = {blocks} (columns: epoch)\n\n{table}")
    return "\n\n".join(sections)


def accuracy_vs_epoch(data: SweepData, out_dir: Path) -> Section:
    """Utrera et al. 2021, Fig. 3 / 10: accuracy and robust − natural delta vs. fine-tuning epoch.

    Writes ``accuracy_vs_epoch_summary.csv`` (mean, ci95, n per source × cell × epoch),
    ``epoch_gap.csv`` / ``.md`` (seed-matched deltas per epoch) and one figure per
    (blocks, subset size).
    """

    history = epoch_history(data)
    keys = figure_keys(history)
    summary = summarize(history, [*keys, "target", "source", "step"], value="value")
    gaps = gap_table(history, value="value")
    table = gap_by_epoch_markdown(gaps)
    files = write_tables(
        out_dir,
        {"accuracy_vs_epoch_summary.csv": summary, "epoch_gap.csv": gaps},
        {"epoch_gap.md": f"# Robust − natural accuracy by epoch [pp]\n\n{table}"},
    )
    figures = plot_accuracy_vs_epoch(history, summary, gaps, out_dir)
    text = (
        "Test accuracy at each evaluated fine-tuning epoch: mean over seeds with its 95% "
        "t-interval (band); the lower panels subtract the natural source's accuracy seed by "
        "seed at the same epoch (same target, subset size, seed and blocks)."
    )
    title = "Accuracy vs. fine-tuning epoch (Utrera et al. 2021, Fig. 3)"
    return compose_section(title, text, files, figures, table, out_dir)
