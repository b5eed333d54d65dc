"""Utrera et al. 2021, Fig. 4 and 11: accuracy vs. the number of fine-tuned blocks, and the
delta between block settings.

(a) Per subset size, one panel per target: mean test accuracy over seeds ± its 95 % t-interval
at each fine-tuned-blocks setting present (0, 1, 3, 9 in the paper), one marker style per
source. The settings are categories, not a scale: they sit at evenly spaced positions, and no
line joins them (a line would read as a trend between 3 and 9 blocks that nobody measured).
(b) The paper's "3 − 1" delta, generalised: each blocks value minus the next-smaller one the
source has, delta = acc(b_k) − acc(b_{k-1}), paired seed by seed within one source on (target,
subset size, seed) — the same random subset and head initialisation — drawn against the number
of training images, one line per source, with its 95 % t band and a zero line.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from raysweep.analysis.figures import (
    ACCURACY_LABEL,
    TICK_SIZE,
    Style,
    delta_by_target_figure,
    drawn_in_order,
    figure_legend,
    n_caption,
    panel_grid,
    save_figure,
    size_label,
    source_styles,
)
from raysweep.analysis.labels import label_of, source_labels
from raysweep.analysis.stats import (
    blocks_order,
    matched_gaps,
    pair_on_columns,
    subset_order,
    summarize,
)
from raysweep.analysis.sweepdata import (
    NotSupported,
    Section,
    SweepData,
    compose_section,
    require_columns,
    write_tables,
)
from raysweep.analysis.tables import pivot_markdown

CELL = ["source", "target", "subset_size", "blocks"]
BLOCKS_LABEL = "fine-tuned blocks"
# Sources at one blocks setting sit side by side, this far apart (in category widths), so
# that their error bars do not hide one another; all of them stay within ±0.3 of the tick.
DODGE = 0.12
STEP_SIGN = "positive = fine-tuning more blocks is more accurate"
GAP_COLUMNS = [
    "source",
    "blocks",
    "baseline_blocks",
    "target",
    "subset_size",
    "n_train",
    "blocks_acc",
    "baseline_acc",
    "delta",
    "ci95",
    "n",
]


def block_values(df: pd.DataFrame) -> list[str]:
    """The blocks settings present, in :func:`blocks_order` (numbers numerically)."""
    return sorted(map(str, df["blocks"].dropna().unique()), key=blocks_order)


def blocks_gap_table(df: pd.DataFrame, value: str = "test_acc") -> pd.DataFrame:
    """Per source, each blocks value b_k minus the next-smaller value b_{k-1} that source has.

    Columns: source, ``blocks`` (b_k), ``baseline_blocks`` (b_{k-1}), target, subset_size,
    n_train, ``blocks_acc`` / ``baseline_acc`` (means over matched seeds), ``delta`` (mean of
    the seed-matched differences), ``ci95`` (its t half-width), ``n`` (matched seeds), plus
    ``epochs`` when the frame has it. Runs pair on (target, subset size, seed[, epochs]) within
    one source; cells only one setting has stay with NaN and n = 0.
    """
    pair_on = pair_on_columns(df, base=("target", "subset_size", "seed"))
    parts = []
    for source, runs in df.groupby("source", sort=True):
        values = block_values(runs)
        for lower, upper in zip(values, values[1:], strict=False):
            gaps = matched_gaps(runs, upper, lower, pair_on, value, by="blocks")
            gaps = gaps.rename(
                columns={
                    "robust": "blocks",
                    "natural": "baseline_blocks",
                    "robust_acc": "blocks_acc",
                    "natural_acc": "baseline_acc",
                }
            )
            parts.append(gaps.assign(source=source))
    extra = [c for c in pair_on if c not in ("target", "subset_size", "seed")]
    columns = [*GAP_COLUMNS[:5], *extra, *GAP_COLUMNS[5:]]
    if not parts:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
    out = pd.concat(parts, ignore_index=True)
    if "n_train" not in out:
        out["n_train"] = float("nan")
    return out[columns].reset_index(drop=True)


def _dodge(count: int) -> np.ndarray:
    """Offsets of ``count`` sources around a category's position, within ±0.3."""
    step = min(DODGE, 0.6 / max(1, count))
    return (np.arange(count) - (count - 1) / 2) * step


def accuracy_vs_blocks_figure(
    summary: pd.DataFrame,
    order: list[str],
    title: str,
    styles: dict[str, Style],
    labels: dict[str, str] | None = None,
    sharey: bool = False,
) -> Figure:
    """Fig. 4(a): per target, mean accuracy ± 95 % t half-width (error bars) at each blocks
    setting of ``order``, at categorical positions 0..k-1 (0/1/3/9 are settings, not a scale),
    one marker per source, side by side and not joined by lines; n per point in the legend."""
    labels = labels or {}
    targets = sorted(summary["target"].unique())
    fig, axes = panel_grid(len(targets), title, sharey=sharey)
    position = {b: i for i, b in enumerate(order)}
    shown = drawn_in_order(styles, summary["source"])
    for ax, target in zip(axes, targets, strict=True):
        here = summary[summary["target"] == target]
        for (source, style), shift in zip(shown.items(), _dodge(len(shown)), strict=True):
            line = here[here["source"] == source]
            line = line.assign(_x=line["blocks"].map(position)).sort_values("_x")
            x = line["_x"].to_numpy(float) + shift
            # No line between settings; n = 1 has a NaN half-width: a point without a bar.
            kwargs = style.kwargs() | {"linestyle": "none", "markersize": 6}
            ax.errorbar(x, line["mean"].to_numpy(float), yerr=line["ci95"].to_numpy(float),
                        capsize=3, label=label_of(labels, source), **kwargs)  # fmt: skip
        ax.set_xticks(range(len(order)), order)
        ax.set_xlim(-0.5, len(order) - 0.5)
        ax.tick_params(axis="both", labelsize=TICK_SIZE)
        ax.set_xlabel(BLOCKS_LABEL)
        ax.set_ylabel(ACCURACY_LABEL)
        ax.set_title(str(target))
        ax.grid(True, axis="y", alpha=0.3)
    figure_legend(fig, axes, n_caption(summary["n"], "seeds"))
    return fig


def plot_accuracy_vs_blocks(df: pd.DataFrame, out_dir: Path, sharey: bool = False) -> list[Path]:
    """``accuracy_vs_blocks_size-<s>`` per subset size (and per epoch budget when it varies)."""
    keys = ["subset_size"]
    if "epochs" in df and df["epochs"].nunique() > 1:
        keys.append("epochs")
    styles, labels = source_styles(df), source_labels(df)
    order = block_values(df)
    paths: list[Path] = []
    for values, runs in sorted(df.groupby(keys), key=lambda g: subset_order(g[0][0])):
        key = dict(zip(keys, values, strict=True))
        summary = summarize(runs, ["target", "source", "blocks"])
        n_train = float(runs["n_train"].median()) if "n_train" in runs else float("nan")
        size = size_label(str(key["subset_size"]), n_train)
        budget = f", {key['epochs']} epochs" if "epochs" in key else ""
        title = (
            f"Test accuracy vs. fine-tuned blocks ({size} training images{budget}; mean ± 95% CI)"
        )
        stem = "accuracy_vs_blocks_" + "_".join(
            f"{'size' if k == 'subset_size' else k}-{v}" for k, v in key.items()
        )
        fig = accuracy_vs_blocks_figure(summary, order, title, styles, labels, sharey)
        paths += save_figure(fig, out_dir, stem)
    return paths


def plot_blocks_delta(
    gaps: pd.DataFrame, out_dir: Path, runs: pd.DataFrame, sharey: bool = False
) -> list[Path]:
    """Fig. 4(b) / 11(b): ``blocks_delta_<b_k>-minus-<b_{k-1}>`` per pair of settings; one line
    per source in its style (hollow markers: a difference). ``runs`` names and styles sources."""
    styles, labels = source_styles(runs), source_labels(runs)
    paths: list[Path] = []
    steps = gaps[["blocks", "baseline_blocks"]].drop_duplicates()
    for upper, lower in sorted(steps.itertuples(index=False), key=lambda s: blocks_order(s[0])):
        part = gaps[(gaps["blocks"] == upper) & (gaps["baseline_blocks"] == lower)]
        if part["delta"].notna().sum() == 0:
            continue
        budgets = "epochs" in part and part["epochs"].nunique() > 1
        lines = [
            label_of(labels, r["source"]) + (f" ({r['epochs']} epochs)" if budgets else "")
            for r in part.to_dict("records")
        ]
        part = part.assign(line=lines)
        # In source order (natural first), as every other figure lists them.
        line_styles = {
            text: style
            for source, style in styles.items()
            for text in dict.fromkeys(part.loc[part["source"] == source, "line"])
        }
        title = f"{upper} − {lower} fine-tuned blocks: seed-matched test accuracy delta (95% CI)"
        ylabel = f"acc({upper} blocks) − acc({lower} blocks) [pp]"
        fig = delta_by_target_figure(part, title, ylabel, line_styles, sharey=sharey)
        paths += save_figure(fig, out_dir, f"blocks_delta_{upper}-minus-{lower}")
    return paths


def blocks_markdown(
    summary: pd.DataFrame, gaps: pd.DataFrame, labels: dict[str, str] | None = None
) -> str:
    """Per source (named by ``labels``): accuracy table (rows target × subset size, one column
    per blocks value, best accuracy in bold) and the delta table (one column per "b_k −
    b_{k-1}", signed, no bold)."""
    labels = labels or {}
    gaps = gaps.assign(step=gaps["blocks"] + " − " + gaps["baseline_blocks"])
    pairs = gaps[["blocks", "step"]].drop_duplicates("step")
    steps = [s for _, s in sorted(pairs.itertuples(index=False), key=lambda p: blocks_order(p[0]))]
    index = ["target", "subset_size", *(["epochs"] if "epochs" in summary else [])]
    sections = []
    present = set(map(str, summary["source"]))
    for source in [s for s in labels if s in present] + sorted(present - set(labels)):
        name = label_of(labels, source)
        table = pivot_markdown(summary[summary["source"] == source], index, "blocks",
                               bold_best=True)  # fmt: skip
        sections.append(f"### {name}: test accuracy [%] per fine-tuned blocks\n\n{table}")
        deltas = gaps[gaps["source"] == source]
        if deltas["delta"].notna().any():
            present = [s for s in steps if s in set(deltas["step"])]
            table = pivot_markdown(
                deltas, index, "step", mean="delta", signed=True, column_values=present
            )
            sections.append(f"### {name}: blocks delta [pp], seed-matched ({STEP_SIGN})\n\n{table}")
    return "\n\n".join(sections)


def accuracy_vs_blocks(data: SweepData, out_dir: Path) -> Section:
    """Utrera et al. 2021, Fig. 4 / 11: accuracy per fine-tuned blocks and the block-step delta.

    Writes ``blocks_summary.csv`` (mean, ci95, n per source × cell), ``blocks_gap.csv`` /
    ``.md`` (:func:`blocks_gap_table`) and the figures; NotSupported with < 2 blocks values.
    """

    df = data.finetune
    require_columns(df, [*CELL, "seed"], "accuracy vs. blocks")
    values = block_values(df)
    if len(values) < 2:
        raise NotSupported(
            "accuracy vs. blocks: needs ≥ 2 `blocks` values in the fine-tuning grid; this "
            f"sweep has only blocks = {', '.join(values)}"
        )
    summary_keys = [*CELL, *(["epochs"] if "epochs" in df and df["epochs"].nunique() > 1 else [])]
    summary = summarize(df, summary_keys)
    gaps = blocks_gap_table(df)
    tables = blocks_markdown(summary, gaps, source_labels(df))
    files = write_tables(
        out_dir,
        {"blocks_summary.csv": summary, "blocks_gap.csv": gaps},
        {"blocks_gap.md": f"# Accuracy vs. fine-tuned blocks\n\n{tables}"},
    )
    sharey = data.options.sharey
    figures = plot_accuracy_vs_blocks(df, out_dir, sharey) + plot_blocks_delta(
        gaps, out_dir, df, sharey
    )
    text = (
        "Mean test accuracy over seeds with its 95% t-interval per fine-tuned-blocks setting "
        "(the settings are categories: evenly spaced, not joined; n seeds per point in the "
        "legend); the delta figures subtract, seed by seed within one source (same target, "
        "subset size and seed), the accuracy of the next-smaller blocks setting "
        f"({STEP_SIGN})."
    )
    title = "Accuracy vs. fine-tuned blocks (Utrera et al. 2021, Fig. 4 and 11)"
    return compose_section(title, text, files, figures, tables, out_dir)
