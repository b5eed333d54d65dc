"""Utrera et al. 2021, Fig. 4 and 11: accuracy vs. the number of fine-tuned blocks, and the
delta between block settings.

(a) Per subset size, one panel per target: mean test accuracy over seeds (± 95 % t band) at
each fine-tuned-blocks setting present (0, 1, 3, 9 in the paper), one line per source.
(b) The paper's "3 − 1" delta, generalised: each blocks value minus the next-smaller one the
source has, delta = acc(b_k) − acc(b_{k-1}), paired seed by seed within one source on (target,
subset size, seed) — the same random subset and head initialisation — drawn against the number
of training images, one line per source, with its 95 % t band and a zero line.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from raysweep.analysis.figures import (
    ACCURACY_LABEL,
    _band,
    _legend,
    _panel_grid,
    _size_label,
    delta_by_target_figure,
    save_figure,
    source_colors,
)
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


def accuracy_vs_blocks_figure(
    summary: pd.DataFrame, order: list[str], title: str, colors: dict[str, object]
) -> Figure:
    """Fig. 4(a): per target, mean accuracy ± 95 % t band at each blocks setting of ``order``
    (evenly spaced, since 0/1/3/9 are settings rather than a scale), one line per source."""
    targets = sorted(summary["target"].unique())
    fig, axes = _panel_grid(len(targets), title)
    position = {b: i for i, b in enumerate(order)}
    for ax, target in zip(axes, targets, strict=True):
        for source, line in summary[summary["target"] == target].groupby("source", sort=True):
            x = line["blocks"].map(position).to_numpy(float)
            mean, half = line["mean"].to_numpy(float), line["ci95"].to_numpy(float)
            _band(ax, x, mean, half, colors[source], str(source))
        ax.set_xticks(range(len(order)), order)
        ax.set_xlabel(BLOCKS_LABEL)
        ax.set_ylabel(ACCURACY_LABEL)
        ax.set_title(str(target))
        ax.grid(True, alpha=0.3)
    _legend(fig, axes)
    return fig


def plot_accuracy_vs_blocks(df: pd.DataFrame, out_dir: Path) -> list[Path]:
    """``accuracy_vs_blocks_size-<s>`` per subset size (and per epoch budget when it varies)."""
    keys = ["subset_size"]
    if "epochs" in df and df["epochs"].nunique() > 1:
        keys.append("epochs")
    colors = source_colors(list(df["source"]))
    order = block_values(df)
    paths: list[Path] = []
    for values, runs in sorted(df.groupby(keys), key=lambda g: subset_order(g[0][0])):
        key = dict(zip(keys, values, strict=True))
        summary = summarize(runs, ["target", "source", "blocks"])
        n_train = float(runs["n_train"].median()) if "n_train" in runs else float("nan")
        size = _size_label(str(key["subset_size"]), n_train)
        budget = f", {key['epochs']} epochs" if "epochs" in key else ""
        title = (
            f"Test accuracy vs. fine-tuned blocks ({size} training images{budget}; mean ± 95% CI)"
        )
        stem = "accuracy_vs_blocks_" + "_".join(
            f"{'size' if k == 'subset_size' else k}-{v}" for k, v in key.items()
        )
        paths += save_figure(
            accuracy_vs_blocks_figure(summary, order, title, colors), out_dir, stem
        )
    return paths


def plot_blocks_delta(gaps: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Fig. 4(b) / 11(b): ``blocks_delta_<b_k>-minus-<b_{k-1}>`` per pair of settings."""
    colors = source_colors(list(gaps["source"]))
    paths: list[Path] = []
    steps = gaps[["blocks", "baseline_blocks"]].drop_duplicates()
    for upper, lower in sorted(steps.itertuples(index=False), key=lambda s: blocks_order(s[0])):
        part = gaps[(gaps["blocks"] == upper) & (gaps["baseline_blocks"] == lower)]
        if part["delta"].notna().sum() == 0:
            continue
        line = part["source"].astype(str)
        if "epochs" in part and part["epochs"].nunique() > 1:
            line = line + " (" + part["epochs"].astype(str) + " epochs)"
        part = part.assign(line=line)
        line_colors = dict(zip(part["line"], part["source"].map(colors), strict=True))
        title = f"{upper} − {lower} fine-tuned blocks: seed-matched test accuracy delta (95% CI)"
        ylabel = f"acc({upper} blocks) − acc({lower} blocks) [pp]"
        fig = delta_by_target_figure(part, title, ylabel, line_colors)
        paths += save_figure(fig, out_dir, f"blocks_delta_{upper}-minus-{lower}")
    return paths


def blocks_markdown(summary: pd.DataFrame, gaps: pd.DataFrame) -> str:
    """Per source: accuracy table (rows target × subset size, one column per blocks value,
    best in bold) and the delta table (one column per "b_k − b_{k-1}")."""
    gaps = gaps.assign(step=gaps["blocks"] + " − " + gaps["baseline_blocks"])
    pairs = gaps[["blocks", "step"]].drop_duplicates("step")
    steps = [s for _, s in sorted(pairs.itertuples(index=False), key=lambda p: blocks_order(p[0]))]
    index = ["target", "subset_size", *(["epochs"] if "epochs" in summary else [])]
    sections = []
    for source, part in summary.groupby("source", sort=True):
        table = pivot_markdown(part, index, "blocks")
        sections.append(f"### {source}: test accuracy [%] per fine-tuned blocks\n\n{table}")
        deltas = gaps[gaps["source"] == source]
        if deltas["delta"].notna().any():
            present = [s for s in steps if s in set(deltas["step"])]
            table = pivot_markdown(
                deltas,
                index,
                "step",
                mean="delta",
                signed=True,
                bold_best=False,
                column_values=present,
            )
            sections.append(f"### {source}: blocks delta [pp], seed-matched\n\n{table}")
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
        raise NotSupported(f"accuracy vs. blocks: the sweep has one blocks value ({values})")
    summary_keys = [*CELL, *(["epochs"] if "epochs" in df and df["epochs"].nunique() > 1 else [])]
    summary = summarize(df, summary_keys)
    gaps = blocks_gap_table(df)
    tables = blocks_markdown(summary, gaps)
    files = write_tables(
        out_dir,
        {"blocks_summary.csv": summary, "blocks_gap.csv": gaps},
        {"blocks_gap.md": f"# Accuracy vs. fine-tuned blocks\n\n{tables}"},
    )
    figures = plot_accuracy_vs_blocks(df, out_dir) + plot_blocks_delta(gaps, out_dir)
    text = (
        "Mean test accuracy over seeds with its 95% t-interval per fine-tuned-blocks setting; "
        "the delta figures subtract, seed by seed within one source (same target, subset size "
        "and seed), the accuracy of the next-smaller blocks setting."
    )
    title = "Accuracy vs. fine-tuned blocks (Utrera et al. 2021, Fig. 4 and 11)"
    return compose_section(title, text, files, figures, tables, out_dir)
