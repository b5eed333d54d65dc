"""Figures and tables in the style of Utrera et al. 2021, Fig. 2.

(a) test accuracy against the number of training images, one panel per target, one line per
source: the mean over seeds and a shaded 95 % t-interval; (b) the robust-minus-natural delta
per cell, matched seed by seed, with its interval and a zero line. Figures are built on
``matplotlib.figure.Figure`` (Agg canvas, no pyplot state) and saved as PNG and PDF.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from raysweep.analysis.stats import gap_table, subset_order, summarize
from raysweep.analysis.tables import pivot_markdown
from raysweep.schema import ALL_IMAGES

ACCURACY_LABEL = "test accuracy [%]"
DELTA_LABEL = "robust − natural accuracy [pp]"
SIZE_LABEL = "training images (log scale)"


def source_colors(sources: list[str]) -> dict[str, tuple[float, float, float, float]]:
    """A fixed colour per source (sorted names, tab10 then tab20) so both figures agree."""
    from matplotlib import colormaps

    names = sorted(set(sources))
    cmap = colormaps["tab10" if len(names) <= 10 else "tab20"]
    return {name: cmap(i % cmap.N) for i, name in enumerate(names)}


def _size_label(subset_size: str, n_train: float) -> str:
    """``100``, ``1.6k``, ``25.6k``; ``all (50k)`` shows how many images "all" was."""
    if subset_size == ALL_IMAGES:
        return f"all ({n_train / 1000:.0f}k)" if n_train >= 1000 else f"all ({n_train:.0f})"
    value = int(float(subset_size))
    return f"{value / 1000:g}k" if value >= 1000 else str(value)


def _x_positions(df: pd.DataFrame) -> pd.DataFrame:
    """x per (target, subset_size): the median ``n_train`` of the cell, the nominal size when
    ``n_train`` is missing, so every source of a target shares the same positions."""
    grid = df.groupby(["target", "subset_size"], dropna=False)
    if "n_train" in df:
        pos = grid["n_train"].median().astype(float).reset_index(name="x")
    else:
        pos = grid.size().reset_index()[["target", "subset_size"]]
        pos["x"] = np.nan
    nominal = pos["subset_size"].map(subset_order)
    pos["x"] = pos["x"].fillna(nominal.where(np.isfinite(nominal)))
    return pos


def _panel_grid(n_panels: int, title: str, ncols: int | None = None) -> tuple[Figure, list[Axes]]:
    """A figure with ``n_panels`` axes, ``ncols`` per row (default up to 3), and a title."""
    ncols = ncols or min(3, max(1, n_panels))
    nrows = math.ceil(n_panels / ncols)
    fig = Figure(figsize=(4.3 * ncols, 3.4 * nrows + 0.8), layout="constrained")
    FigureCanvasAgg(fig)
    axes = list(np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel())
    for ax in axes[n_panels:]:
        fig.delaxes(ax)
    fig.suptitle(title)
    return fig, axes[:n_panels]


def _size_axis(ax: Axes, ticks: pd.DataFrame) -> None:
    ticks = ticks.dropna(subset=["x"]).sort_values("x")
    ax.set_xscale("log", base=2)
    labels = [_size_label(str(s), x) for s, x in zip(ticks["subset_size"], ticks["x"], strict=True)]
    ax.set_xticks(ticks["x"].to_numpy(), labels)
    ax.minorticks_off()
    ax.tick_params(axis="x", labelrotation=45, labelsize=7)
    ax.set_xlabel(SIZE_LABEL)
    ax.grid(True, alpha=0.3)


def _band(
    ax: Axes, x: np.ndarray, mean: np.ndarray, half: np.ndarray, color: object, label: str
) -> None:
    order = np.argsort(x)
    x, mean, half = x[order], mean[order], half[order]
    ax.plot(x, mean, marker="o", markersize=3, linewidth=1.4, color=color, label=label)
    # n = 1 cells have a NaN half-width: no band there rather than a fake zero-width one.
    ax.fill_between(x, mean - half, mean + half, color=color, alpha=0.2, linewidth=0)


def _legend(fig: Figure, axes: list[Axes]) -> None:
    handles: dict[str, object] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    if handles:
        ncol = min(4, len(handles))
        fig.legend(list(handles.values()), list(handles), loc="outside lower center", ncol=ncol)


def accuracy_vs_subset_figure(
    df: pd.DataFrame,
    blocks: str,
    value: str = "test_acc",
    colors: Mapping[str, object] | None = None,
) -> Figure:
    """Utrera Fig. 2(a): per target, mean ``value`` over seeds against n_train, per source.

    Band: mean ± t_{0.975, n-1} s / sqrt(n) over the seeds of each (source, target, subset size).
    """
    part = df[df["blocks"] == blocks]
    if part.empty:
        valid = ", ".join(sorted(map(str, df["blocks"].unique())))
        raise ValueError(f"no runs with blocks {blocks!r}; valid: {valid}")
    colors = colors or source_colors(list(part["source"]))
    stats = summarize(part, ["target", "source", "subset_size"], value)
    positions = _x_positions(part)
    stats = stats.merge(positions, on=["target", "subset_size"])
    targets = sorted(stats["target"].unique())
    title = f"Fine-tuning accuracy vs. training-set size (blocks={blocks}, mean ± 95% CI)"
    fig, axes = _panel_grid(len(targets), title)
    for ax, target in zip(axes, targets, strict=True):
        for source, line in stats[stats["target"] == target].groupby("source"):
            x, mean = line["x"].to_numpy(float), line["mean"].to_numpy(float)
            _band(ax, x, mean, line["ci95"].to_numpy(float), colors[source], str(source))
        _size_axis(ax, positions[positions["target"] == target])
        ax.set_ylabel(ACCURACY_LABEL)
        ax.set_title(str(target))
    _legend(fig, axes)
    return fig


def delta_vs_subset_figure(
    gap: pd.DataFrame, blocks: str, colors: Mapping[str, object] | None = None
) -> Figure:
    """Utrera Fig. 2(b): per target, mean robust - natural delta (seed-matched) against n_train,
    one line per robust source, its 95 % t band and a zero line. ``gap`` is :func:`gap_table`."""
    part = gap[(gap["blocks"] == blocks) & gap["delta"].notna()]
    if part.empty:
        raise ValueError(f"no matched robust/natural cells with blocks {blocks!r}")
    colors = colors or source_colors(list(part["robust"]))
    part = part.assign(line=part["robust"] + " − " + part["natural"])
    line_colors = dict(zip(part["line"], part["robust"].map(colors), strict=True))
    title = f"Robust − natural test accuracy (blocks={blocks}, mean ± 95% CI over seeds)"
    return delta_by_target_figure(part, title, DELTA_LABEL, line_colors)


def delta_by_target_figure(
    part: pd.DataFrame, title: str, ylabel: str, colors: Mapping[str, object]
) -> Figure:
    """One panel per target: seed-matched ``delta`` ± ``ci95`` against ``n_train`` (log axis),
    one line per value of the ``line`` column (coloured by ``colors[line]``), a zero line.

    ``part`` has columns target, subset_size, n_train, line, delta, ci95 (one row per cell,
    e.g. from :func:`raysweep.analysis.stats.matched_gaps`); NaN deltas are not drawn.
    """
    positions = part[part["delta"].notna()].rename(columns={"n_train": "x"})
    positions["x"] = positions["x"].astype(float)
    targets = sorted(positions["target"].unique())
    fig, axes = _panel_grid(len(targets), title)
    for ax, target in zip(axes, targets, strict=True):
        here = positions[positions["target"] == target]
        for label, line in here.groupby("line", sort=True):
            x, mean = line["x"].to_numpy(float), line["delta"].to_numpy(float)
            _band(ax, x, mean, line["ci95"].to_numpy(float), colors[label], str(label))
        ax.axhline(0.0, color="black", linewidth=0.8, linestyle="--")
        _size_axis(ax, here[["subset_size", "x"]].drop_duplicates())
        ax.set_ylabel(ylabel)
        ax.set_title(str(target))
    _legend(fig, axes)
    return fig


def save_figure(fig: Figure, out_dir: Path, stem: str) -> list[Path]:
    """Write ``<out_dir>/<stem>.png`` (150 dpi) and ``.pdf``; return both paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{stem}.png", out_dir / f"{stem}.pdf"]
    fig.savefig(paths[0], dpi=150)
    fig.savefig(paths[1])
    return paths


def plot_accuracy_vs_subset(
    df: pd.DataFrame, out_dir: Path, blocks: str | None = None
) -> list[Path]:
    """Fig. 2(a) ``accuracy_vs_subset_blocks-<b>`` and, when a robust and a natural source share
    matched cells, Fig. 2(b) ``delta_vs_subset_blocks-<b>``, as PNG and PDF.

    ``blocks=None`` draws one pair of figures per blocks value in ``df``.
    """
    present = sorted(map(str, df["blocks"].dropna().unique()))
    if blocks is not None and blocks not in present:
        raise ValueError(f"no runs with blocks {blocks!r}; valid: {', '.join(present)}")
    colors = source_colors(list(df["source"]))
    gap = gap_table(df)
    paths: list[Path] = []
    for b in [blocks] if blocks is not None else present:
        fig = accuracy_vs_subset_figure(df, b, colors=colors)
        paths += save_figure(fig, out_dir, f"accuracy_vs_subset_blocks-{b}")
        if ((gap["blocks"] == b) & gap["delta"].notna()).any():
            fig = delta_vs_subset_figure(gap, b, colors=colors)
            paths += save_figure(fig, out_dir, f"delta_vs_subset_blocks-{b}")
    return paths


def gap_markdown(gap: pd.DataFrame, heading: str = "##") -> str:
    """The gap table as Markdown: per blocks value, rows (target, subset size), one column per
    robust − natural pair, ``delta ± ci95 (n)``, largest delta of each row in bold."""
    if gap.empty:
        return "No robust source has a natural partner with matched runs."
    gap = gap.assign(pair=gap["robust"] + " − " + gap["natural"])
    index = ["target", "subset_size"]
    if "epochs" in gap and gap["epochs"].nunique() > 1:
        index.append("epochs")
    sections = []
    for b, part in gap.groupby("blocks", sort=True):
        table = pivot_markdown(part, index, "pair", mean="delta", signed=True)
        sections.append(f"{heading} blocks = {b}\n\n{table}")
    return "\n\n".join(sections)


def write_gap_table(df: pd.DataFrame, out_dir: Path) -> list[Path]:
    """``gap_table.csv`` (long, one row per robust source × cell, NaN where unmatched) and
    ``gap_table.md`` (see :func:`gap_markdown`). Returns both paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    gap = gap_table(df)
    csv_path, md_path = out_dir / "gap_table.csv", out_dir / "gap_table.md"
    gap.to_csv(csv_path, index=False)
    intro = (
        "Robust − natural test accuracy [pp], matched by target, subset size, seed and blocks; "
        "mean ± 95% t half-width (n matched seeds)."
    )
    md_path.write_text(f"# Gap table\n\n{intro}\n\n{gap_markdown(gap)}\n", encoding="utf-8")
    return [csv_path, md_path]
