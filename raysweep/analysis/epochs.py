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
    GAP_SIGN,
    TICK_SIZE,
    Style,
    draw_band,
    figure_legend,
    n_caption,
    panel_grid,
    save_figure,
    share_y,
    size_label,
    source_styles,
    zero_line,
)
from raysweep.analysis.labels import label_of, pair_column, source_labels
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
    what = "accuracy vs. epoch"
    # Checked on the runs first: an empty sweep must not cost a history query.
    require_columns(data.finetune, [*CELL, "seed"], what)
    history = data.history("finetune", METRIC)
    require_columns(
        history,
        [*CELL, "seed", "step", "value"],
        what,
        "no fine-tuning run logged its test accuracy during training",
    )
    evaluations = history.groupby("run_id")["step"].nunique()
    if evaluations.max() < 2:
        raise NotSupported(
            f"{what}: every fine-tuning run was tested at most once; test at ≥ 2 epochs "
            "(set `eval_every` below the epochs of a fine-tuning rule)"
        )
    return history


def figure_keys(history: pd.DataFrame) -> list[str]:
    """What gets its own figure: blocks, subset size, and the epoch budget when it varies
    (curves of 10- and 20-epoch schedules are not comparable point by point)."""
    keys = ["blocks", "subset_size"]
    if "epochs" in history and history["epochs"].nunique() > 1:
        keys.append("epochs")
    return keys


def _accuracy_panel(
    ax: Axes, curves: pd.DataFrame, styles: dict[str, Style], labels: dict[str, str]
) -> None:
    for source in [s for s in styles if s in set(curves["source"])]:
        line = curves[curves["source"] == source]
        x, mean = line["step"].to_numpy(float), line["mean"].to_numpy(float)
        draw_band(ax, x, mean, line["ci95"].to_numpy(float), styles[source],
                  label_of(labels, source))  # fmt: skip
    ax.set_ylabel(ACCURACY_LABEL)


def _delta_panel(
    ax: Axes, gaps: pd.DataFrame, styles: dict[str, Style], labels: dict[str, str]
) -> None:
    """Robust − natural per pair, in the robust source's style with hollow markers: the same
    colour as its accuracy line above, marked as a difference."""
    pair, order = pair_column(gaps, "robust", "natural", labels)
    gaps = gaps.assign(pair=pair)
    for text in order:
        line = gaps[gaps["pair"] == text]
        x, mean = line["step"].to_numpy(float), line["delta"].to_numpy(float)
        style = styles[str(line["robust"].iloc[0])]
        draw_band(ax, x, mean, line["ci95"].to_numpy(float), style, text, hollow=True)
    zero_line(ax)
    ax.set_ylabel(DELTA_LABEL)


def _epoch_axis(ax: Axes, steps: list[int]) -> None:
    ax.set_xlabel(EPOCH_LABEL)
    # Ticks on the evaluated epochs while they are few enough to read.
    if len(steps) <= 12:
        ax.set_xticks(steps)
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.tick_params(axis="both", labelsize=TICK_SIZE)
    ax.grid(True, alpha=0.3)


def _legend_columns(
    curves: pd.DataFrame, gaps: pd.DataFrame, styles: dict[str, Style], labels: dict[str, str]
) -> list[list[str]]:
    """A legend column per source: its accuracy line, its differences right below."""
    pair, _ = pair_column(gaps, "robust", "natural", labels)
    below: dict[str, list[str]] = {}
    for robust, text in zip(gaps["robust"].astype(str), pair, strict=True):
        if text not in below.setdefault(robust, []):
            below[robust].append(text)
    shown = set(curves["source"].astype(str)) | set(below)
    return [[label_of(labels, s), *below.get(s, [])] for s in styles if s in shown]


def _n_text(curves: pd.DataFrame, gaps: pd.DataFrame) -> str:
    parts = [n_caption(curves["n"], "seeds")]
    if not gaps.empty:
        parts.append("differences: " + n_caption(gaps["n"], "matched seeds"))
    return "; ".join(p for p in parts if p)


def accuracy_vs_epoch_figure(
    curves: pd.DataFrame,
    gaps: pd.DataFrame,
    title: str,
    styles: dict[str, Style],
    labels: dict[str, str] | None = None,
    sharey: bool = False,
) -> Figure:
    """Fig. 3(a) on top — per target, mean accuracy ± 95 % t band against the epoch, one line
    per source — and Fig. 3(b) below: the seed-matched robust − natural delta per target.

    ``curves`` is :func:`summarize` output with a ``step`` column, ``gaps`` the
    :func:`gap_table` of the history (may be empty: then only the accuracy row is drawn).
    ``sharey`` gives the accuracy panels one y-axis and the delta panels another.
    """
    labels = labels or {}
    targets = sorted(set(curves["target"]) | set(gaps["target"]))
    n = len(targets)
    ncols = min(3, n)
    # The delta row starts on a fresh row so that each delta sits under its accuracy panel.
    slots = math.ceil(n / ncols) * ncols
    gaps = gaps[gaps["delta"].notna()]
    fig, axes = panel_grid(slots + n if not gaps.empty else n, title, ncols)
    for ax in axes[n:slots] if not gaps.empty else []:
        fig.delaxes(ax)
    deltas = axes[slots:] if not gaps.empty else []
    if sharey:  # accuracy and delta are different quantities: one shared axis per row kind
        share_y(axes[:n])
        share_y(deltas)
    for i, target in enumerate(targets):
        _accuracy_panel(axes[i], curves[curves["target"] == target], styles, labels)
        axes[i].set_title(str(target))
        if deltas:
            _delta_panel(deltas[i], gaps[gaps["target"] == target], styles, labels)
            deltas[i].set_title(f"{target}: robust − natural")
    drawn = axes[:n] + deltas
    steps = sorted(set(curves["step"]))
    for ax in drawn:
        _epoch_axis(ax, steps)
    columns = _legend_columns(curves, gaps, styles, labels)
    figure_legend(fig, drawn, _n_text(curves, gaps), columns)
    return fig


def _order(key: dict[str, object]) -> tuple[object, ...]:
    return tuple(SORT_KEYS[k](v) if k in SORT_KEYS else v for k, v in key.items())


def _title(key: dict[str, object], n_train: float) -> str:
    size = size_label(str(key["subset_size"]), n_train)
    budget = f", {key['epochs']} epochs" if "epochs" in key else ""
    return (
        f"Test accuracy during fine-tuning (blocks={key['blocks']}, {size} training images"
        f"{budget}; mean ± 95% CI over seeds)"
    )


def plot_accuracy_vs_epoch(
    history: pd.DataFrame,
    summary: pd.DataFrame,
    gaps: pd.DataFrame,
    out_dir: Path,
    sharey: bool = False,
) -> list[Path]:
    """One figure per :func:`figure_keys` value: ``accuracy_vs_epoch_blocks-<b>_size-<s>``."""
    keys = figure_keys(history)
    styles, labels = source_styles(history), source_labels(history)
    paths: list[Path] = []
    groups = sorted(summary.groupby(keys), key=lambda g: _order(dict(zip(keys, g[0], strict=True))))
    for values, curves in groups:
        key = dict(zip(keys, values, strict=True))
        mask = pd.Series(True, index=gaps.index)
        for column, value in key.items():
            mask &= gaps[column] == value
        runs = history[(history[keys] == pd.Series(key)).all(axis=1)]
        n_train = float(runs["n_train"].median()) if "n_train" in runs else math.nan
        title = _title(key, n_train)
        fig = accuracy_vs_epoch_figure(curves, gaps[mask], title, styles, labels, sharey)
        stem = "accuracy_vs_epoch_" + "_".join(
            f"{'size' if k == 'subset_size' else k}-{v}" for k, v in key.items()
        )
        paths += save_figure(fig, out_dir, stem)
    return paths


def gap_by_epoch_markdown(gaps: pd.DataFrame, labels: dict[str, str] | None = None) -> str:
    """Per (pair, blocks): rows (target, subset size), one column per epoch, cells
    ``delta ± ci95 (n)`` of the seed-matched robust − natural accuracy [pp], signed."""
    if gaps.empty:
        return "No robust source has a natural partner with matched runs."
    labels = labels or {}
    sections = []
    for (robust, natural, blocks), part in gaps.groupby(["robust", "natural", "blocks"]):
        index = ["target", "subset_size"]
        if "epochs" in part and part["epochs"].nunique() > 1:
            index.append("epochs")
        table = pivot_markdown(part, index, "step", mean="delta", signed=True)
        pair = f"{label_of(labels, robust)} − {label_of(labels, natural)}"
        sections.append(f"### {pair}, blocks = {blocks} (columns: epoch)\n\n{table}")
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
    table = gap_by_epoch_markdown(gaps, source_labels(history))
    sign = f"Seed-matched, mean ± 95% t half-width (n matched seeds); {GAP_SIGN}."
    files = write_tables(
        out_dir,
        {"accuracy_vs_epoch_summary.csv": summary, "epoch_gap.csv": gaps},
        {"epoch_gap.md": f"# Robust − natural accuracy by epoch [pp]\n\n{sign}\n\n{table}"},
    )
    figures = plot_accuracy_vs_epoch(history, summary, gaps, out_dir, data.options.sharey)
    text = (
        "Test accuracy at each evaluated fine-tuning epoch: mean over seeds with its 95% "
        "t-interval (band; n per point in the legend); the lower panels subtract the natural "
        "source's accuracy seed by seed at the same epoch (same target, subset size, seed and "
        f"blocks; hollow markers, in the robust source's colour; {GAP_SIGN})."
    )
    title = "Accuracy vs. fine-tuning epoch (Utrera et al. 2021, Fig. 3)"
    return compose_section(title, text, files, figures, table, out_dir)
