"""Figures and tables in the style of Utrera et al. 2021, Fig. 2, and the plotting helpers every
figure family shares.

(a) test accuracy against the number of training images, one panel per target, one line per
source: the mean over seeds and a shaded 95 % t-interval; (b) the robust-minus-natural delta
per cell, matched seed by seed, with its interval and a zero line. Figures are built on
``matplotlib.figure.Figure`` (Agg canvas, no pyplot state) and saved as PNG and PDF.

Shared here: the panel grid (optionally one y-axis for all panels), a :class:`Style` per
source — colour, marker and line style all differ, so that lines and overlapping bands stay
apart in greyscale — and the figure legend. Sources are named by :mod:`labels`. Differences
(robust − natural, block steps, constraint pairs) are drawn with hollow markers in the style
of the source they are about: the same colour means the same source, the hollow marker says
"a difference", never a second meaning of the colour.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from raysweep.analysis.convergence import MARK_NOTE, cell_flags, flag_gaps, hollow_unconverged
from raysweep.analysis.labels import (
    is_natural,
    label_of,
    pair_column,
    relabel,
    sort_sources,
    source_labels,
)
from raysweep.analysis.stats import gap_table, subset_order, summarize
from raysweep.analysis.tables import pivot_markdown
from raysweep.schema import ALL_IMAGES

ACCURACY_LABEL = "test accuracy [%]"
DELTA_LABEL = "robust − natural accuracy [pp]"
SIZE_LABEL = "training images (log scale)"
#: Sign convention of every robust − natural figure and table, said where the numbers are.
GAP_SIGN = "positive = the robust source is more accurate"
# Distinct in greyscale: a marker and a dash pattern per source on top of its colour. Four
# dash patterns against eight markers: the pair repeats only after 8 sources.
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
LINESTYLES = ("-", "--", "-.", ":")
NATURAL_COLORS = ("black", "0.45", "0.65")
# Tick labels of subset sizes: this many fit side by side on a panel at the default size.
MAX_SIZE_LABELS = 6
TICK_SIZE = 9
LEGEND_SIZE = 9
# Legend columns side by side below a figure before the entries are simply wrapped.
MAX_LEGEND_COLUMNS = 5


@dataclass(frozen=True)
class Style:
    """How one source (or one difference) is drawn."""

    color: object
    marker: str
    linestyle: str

    def kwargs(self, hollow: bool = False) -> dict[str, object]:
        """Line keyword arguments; ``hollow`` (white-filled markers) marks a difference."""
        out: dict[str, object] = {
            "color": self.color,
            "marker": self.marker,
            "linestyle": self.linestyle,
            "markersize": 5,
            "linewidth": 1.5,
        }
        if hollow:
            out |= {"markerfacecolor": "white", "markeredgewidth": 1.3}
        return out


def styles_for(keys: Sequence[str], natural: Sequence[str] = ()) -> dict[str, Style]:
    """A :class:`Style` per key in the given order: greys for the ``natural`` keys, tab10 (tab20
    beyond ten) for the others, marker and line style by position."""
    from matplotlib import colormaps

    others = [k for k in keys if k not in set(natural)]
    cmap = colormaps["tab10" if len(others) <= 10 else "tab20"]
    colours = {k: cmap(i % cmap.N) for i, k in enumerate(others)}
    greys = [k for k in keys if k in set(natural)]
    colours |= {k: NATURAL_COLORS[i % len(NATURAL_COLORS)] for i, k in enumerate(greys)}
    return {
        k: Style(colours[k], MARKERS[i % len(MARKERS)], LINESTYLES[i % len(LINESTYLES)])
        for i, k in enumerate(keys)
    }


def source_styles(df: pd.DataFrame) -> dict[str, Style]:
    """A fixed :class:`Style` per source of ``df`` (natural sources first, in greys), so that
    every figure of one family draws a source alike."""
    rows = sort_sources(df.dropna(subset=["source"]).drop_duplicates("source"))
    keys = [str(s) for s in rows["source"]]
    natural = [str(s) for s in rows.loc[is_natural(rows), "source"]]
    return styles_for(keys, natural)


def drawn_in_order(styles: Mapping[str, Style], keys: Iterable[object]) -> dict[str, Style]:
    """The styles of the ``keys`` present, in ``styles``' order; a key ``styles`` lacks (a
    caller's partial mapping) is drawn after them in a style of its own, never dropped."""
    present = {str(k) for k in keys}
    out = {k: v for k, v in styles.items() if k in present}
    missing = sorted(present - set(out))
    if missing:
        extra = styles_for([*out, *missing])
        out |= {k: extra[k] for k in missing}
    return out


def n_caption(ns: Sequence[int] | pd.Series, unit: str) -> str:
    """``n = 3 seeds per point`` or ``n = 2–3 seeds per point`` (cells with none left out)."""
    values = sorted({int(n) for n in ns if not pd.isna(n) and int(n) > 0})
    if not values:
        return ""
    span = str(values[0]) if len(values) == 1 else f"{values[0]}–{values[-1]}"
    return f"n = {span} {unit} per point"


def size_label(subset_size: str, n_train: float) -> str:
    """``100``, ``1.6k``, ``25.6k``; ``all (50k)`` shows how many images "all" was."""
    if subset_size == ALL_IMAGES:
        if math.isnan(n_train):
            return "all"
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


def share_y(axes: Sequence[Axes]) -> None:
    """One y-axis for ``axes`` (limits and ticks follow all of them); call before drawing."""
    for ax in axes[1:]:
        ax.sharey(axes[0])


def panel_grid(
    n_panels: int, title: str, ncols: int | None = None, sharey: bool = False
) -> tuple[Figure, list[Axes]]:
    """A figure with ``n_panels`` axes, ``ncols`` per row (default up to 3), and a title;
    ``sharey`` gives all panels one y-axis (for panels of one quantity only)."""
    ncols = ncols or min(3, max(1, n_panels))
    nrows = math.ceil(n_panels / ncols)
    fig = Figure(figsize=(4.6 * ncols, 3.6 * nrows + 0.9), layout="constrained")
    FigureCanvasAgg(fig)
    axes = list(np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel())
    for ax in axes[n_panels:]:
        fig.delaxes(ax)
    fig.suptitle(title)
    if sharey:
        share_y(axes[:n_panels])
    return fig, axes[:n_panels]


def _thin(labels: list[str], keep: int = MAX_SIZE_LABELS) -> list[str]:
    """Every k-th label (counted from the last, so "all" always shows), blanks between: the
    ticks stay on every size, the labels stay horizontal and apart."""
    step = math.ceil(len(labels) / keep)
    last = len(labels) - 1
    return [text if (last - i) % step == 0 else "" for i, text in enumerate(labels)]


def size_axis(ax: Axes, ticks: pd.DataFrame) -> None:
    """Log-2 x axis of training images with a tick per subset size, readable labels."""
    ticks = ticks.dropna(subset=["x"]).sort_values("x")
    ax.set_xscale("log", base=2)
    labels = [
        size_label(str(s), x).replace(" (", "\n(")  # "all\n(50k)": wrapped, not rotated
        for s, x in zip(ticks["subset_size"], ticks["x"], strict=True)
    ]
    ax.set_xticks(ticks["x"].to_numpy(), _thin(labels))
    ax.minorticks_off()
    ax.tick_params(axis="both", labelsize=TICK_SIZE)
    ax.set_xlabel(SIZE_LABEL)
    ax.grid(True, alpha=0.3)


def draw_band(
    ax: Axes,
    x: np.ndarray,
    mean: np.ndarray,
    half: np.ndarray,
    style: Style,
    label: str,
    hollow: bool = False,
) -> None:
    """The mean as a line with markers and mean ± ``half`` as a light band of its colour."""
    order = np.argsort(x)
    x, mean, half = x[order], mean[order], half[order]
    ax.plot(x, mean, label=label, **style.kwargs(hollow))
    # n = 1 cells have a NaN half-width: no band there rather than a fake zero-width one.
    ax.fill_between(x, mean - half, mean + half, color=style.color, alpha=0.15, linewidth=0)


def zero_line(ax: Axes) -> None:
    """The dashed y = 0 reference of a difference panel."""
    ax.axhline(0.0, color="black", linewidth=0.8, linestyle="--", zorder=1)


def _columns(
    handles: dict[str, object], columns: Sequence[Sequence[str]]
) -> tuple[list[object], list[str]]:
    """Handles and labels laid out column by column (matplotlib fills a legend's columns in
    turn), each column padded with invisible entries to the tallest one."""
    from matplotlib.lines import Line2D

    depth = max(len(c) for c in columns)
    out_handles, out_labels = [], []
    for column in columns:
        shown = [label for label in column if label in handles]
        for i in range(depth):
            label = shown[i] if i < len(shown) else ""
            out_handles.append(handles[label] if label else Line2D([], [], linestyle="none"))
            out_labels.append(label)
    return out_handles, out_labels


def figure_legend(
    fig: Figure,
    axes: Sequence[Axes],
    title: str | None = None,
    columns: Sequence[Sequence[str]] | None = None,
) -> None:
    """One legend below the panels with every labelled line once, ``title`` above it (e.g.
    what n counts). ``columns`` groups labels into legend columns (a source above its
    difference); labels in no column follow in their own columns."""
    handles: dict[str, object] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    if not handles:
        return
    grouped = [list(c) for c in columns or [] if any(label in handles for label in c)]
    rest = [label for label in handles if not any(label in c for c in grouped)]
    if grouped and len(grouped) + len(rest) <= MAX_LEGEND_COLUMNS:
        shown, labels = _columns(handles, [*grouped, *([r] for r in rest)])
        ncol = len(grouped) + len(rest)
    else:
        shown, labels, ncol = list(handles.values()), list(handles), min(4, len(handles))
    fig.legend(
        shown,
        labels,
        loc="outside lower center",
        ncol=ncol,
        fontsize=LEGEND_SIZE,
        title=title or None,
        title_fontsize=LEGEND_SIZE,
    )


def accuracy_vs_subset_figure(
    df: pd.DataFrame,
    blocks: str,
    value: str = "test_acc",
    styles: Mapping[str, Style] | None = None,
    labels: Mapping[str, str] | None = None,
    sharey: bool = False,
) -> Figure:
    """Utrera Fig. 2(a): per target, mean ``value`` over seeds against n_train, per source.

    Band: mean ± t_{0.975, n-1} s / sqrt(n) over the seeds of each (source, target, subset
    size); n per point is in the legend's title. A point with a non-converged run is hollow.
    ``sharey`` puts every target on one y-axis.
    """
    part = df[df["blocks"] == blocks]
    if part.empty:
        valid = ", ".join(sorted(map(str, df["blocks"].unique())))
        raise ValueError(f"no runs with blocks {blocks!r}; valid: {valid}")
    styles = styles or source_styles(part)
    labels = labels or source_labels(part)
    stats = summarize(part, ["target", "source", "subset_size"], value)
    positions = _x_positions(part)
    stats = stats.merge(positions, on=["target", "subset_size"])
    flags = cell_flags(part).drop(columns=["blocks", "runs"])
    stats = stats.merge(flags, on=["source", "target", "subset_size"], how="left")
    targets = sorted(stats["target"].unique())
    title = f"Fine-tuning accuracy vs. training-set size (blocks={blocks}, mean ± 95% CI)"
    fig, axes = panel_grid(len(targets), title, sharey=sharey)
    for ax, target in zip(axes, targets, strict=True):
        here = stats[stats["target"] == target]
        for source, style in drawn_in_order(styles, here["source"]).items():
            line = here[here["source"] == source]
            x, mean = line["x"].to_numpy(float), line["mean"].to_numpy(float)
            draw_band(ax, x, mean, line["ci95"].to_numpy(float), style, label_of(labels, source))
            flagged = line["unconverged"].fillna(0).to_numpy()
            hollow_unconverged(ax, x, mean, flagged, style.color, style.marker)
        size_axis(ax, positions[positions["target"] == target])
        ax.set_ylabel(ACCURACY_LABEL)
        ax.set_title(str(target))
    figure_legend(fig, axes, n_caption(stats["n"], "seeds"))
    return fig


def delta_vs_subset_figure(
    gap: pd.DataFrame,
    blocks: str,
    styles: Mapping[str, Style] | None = None,
    labels: Mapping[str, str] | None = None,
    sharey: bool = False,
) -> Figure:
    """Utrera Fig. 2(b): per target, mean robust - natural delta (seed-matched) against n_train,
    one line per robust source (its style, hollow markers), its 95 % t band and a zero line.
    ``gap`` is :func:`gap_table`; ``styles`` and ``labels`` are keyed by source name."""
    part = gap[(gap["blocks"] == blocks) & gap["delta"].notna()]
    if part.empty:
        raise ValueError(f"no matched robust/natural cells with blocks {blocks!r}")
    if styles is None:
        styles = styles_for(sorted(set(part["robust"])))
    line, order = pair_column(part, "robust", "natural", labels or {})
    part = part.assign(line=line)
    robust_of = dict(zip(part["line"], part["robust"], strict=True))
    # In source order; a robust source the caller's styles lack gets one of its own.
    line_styles = {k: styles[robust_of[k]] for k in order if robust_of[k] in styles}
    title = f"Robust − natural test accuracy (blocks={blocks}, mean ± 95% CI over seeds)"
    return delta_by_target_figure(part, title, DELTA_LABEL, line_styles, sharey=sharey)


def delta_by_target_figure(
    part: pd.DataFrame,
    title: str,
    ylabel: str,
    styles: Mapping[str, Style],
    sharey: bool = False,
    unit: str = "matched seeds",
) -> Figure:
    """One panel per target: seed-matched ``delta`` ± ``ci95`` against ``n_train`` (log axis),
    one line per value of the ``line`` column (drawn in ``styles[line]``, hollow markers: a
    difference), a zero line, n per point in the legend's title.

    ``part`` has columns target, subset_size, n_train, line, delta, ci95, n (one row per cell,
    e.g. from :func:`raysweep.analysis.stats.matched_gaps`); NaN deltas are not drawn.
    """
    positions = part[part["delta"].notna()].rename(columns={"n_train": "x"})
    positions["x"] = positions["x"].astype(float)
    targets = sorted(positions["target"].unique())
    fig, axes = panel_grid(len(targets), title, sharey=sharey)
    for ax, target in zip(axes, targets, strict=True):
        here = positions[positions["target"] == target]
        for label, style in drawn_in_order(styles, here["line"]).items():
            line = here[here["line"] == label]
            x, mean = line["x"].to_numpy(float), line["delta"].to_numpy(float)
            draw_band(ax, x, mean, line["ci95"].to_numpy(float), style, label, hollow=True)
        zero_line(ax)
        size_axis(ax, here[["subset_size", "x"]].drop_duplicates())
        ax.set_ylabel(ylabel)
        ax.set_title(str(target))
    figure_legend(fig, axes, n_caption(positions["n"], unit))
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
    df: pd.DataFrame, out_dir: Path, blocks: str | None = None, sharey: bool = False
) -> list[Path]:
    """Fig. 2(a) ``accuracy_vs_subset_blocks-<b>`` and, when a robust and a natural source share
    matched cells, Fig. 2(b) ``delta_vs_subset_blocks-<b>``, as PNG and PDF.

    ``blocks=None`` draws one pair of figures per blocks value in ``df``; ``sharey`` gives the
    panels of each figure one y-axis.
    """
    present = sorted(map(str, df["blocks"].dropna().unique()))
    if blocks is not None and blocks not in present:
        raise ValueError(f"no runs with blocks {blocks!r}; valid: {', '.join(present)}")
    styles, labels = source_styles(df), source_labels(df)
    gap = gap_table(df)
    paths: list[Path] = []
    for b in [blocks] if blocks is not None else present:
        fig = accuracy_vs_subset_figure(df, b, styles=styles, labels=labels, sharey=sharey)
        paths += save_figure(fig, out_dir, f"accuracy_vs_subset_blocks-{b}")
        if ((gap["blocks"] == b) & gap["delta"].notna()).any():
            fig = delta_vs_subset_figure(gap, b, styles=styles, labels=labels, sharey=sharey)
            paths += save_figure(fig, out_dir, f"delta_vs_subset_blocks-{b}")
    return paths


def gap_markdown(
    gap: pd.DataFrame, heading: str = "##", labels: Mapping[str, str] | None = None
) -> str:
    """The gap table as Markdown: per blocks value, rows (target, subset size), one column per
    robust − natural pair (named by ``labels``), ``delta ± ci95 (n)`` with its sign and no
    bold (a difference has no "best"). A gap flagged by
    :func:`~raysweep.analysis.convergence.flag_gaps` marks its cells with non-converged runs
    (†) and, where the linear probe ran, has a ``… (linear probe)`` column beside each pair."""
    if gap.empty:
        return "No robust source has a natural partner with matched runs."
    pair, order = pair_column(gap, "robust", "natural", labels or {})
    gap = gap.assign(pair=pair, flagged=gap.get("unconverged", 0) > 0)
    gap, order = with_probe_columns(gap, order)
    index = ["target", "subset_size"]
    if "epochs" in gap and gap["epochs"].nunique() > 1:
        index.append("epochs")
    sections = []
    for b, part in gap.groupby("blocks", sort=True):
        columns = [text for text in order if text in set(part["pair"])]
        table = pivot_markdown(part, index, "pair", mean="delta", signed=True,
                               column_values=columns, marked="flagged")  # fmt: skip
        sections.append(f"{heading} blocks = {b}\n\n{table}")
    return "\n\n".join(sections)


def with_probe_columns(gap: pd.DataFrame, order: list[str]) -> tuple[pd.DataFrame, list[str]]:
    """``gap`` plus, per pair with linear-probe gaps, rows of a ``<pair> (linear probe)``
    column holding them, placed right after the pair's own column."""
    if "probe_delta" not in gap or gap["probe_delta"].isna().all():
        return gap, order
    probe = gap.dropna(subset=["probe_delta"]).drop(columns=["delta", "ci95", "n"])
    probe = probe.rename(columns={"probe_delta": "delta", "probe_ci95": "ci95", "probe_n": "n"})
    probe = probe.assign(pair=probe["pair"] + " (linear probe)", flagged=False)
    columns = [c for text in order for c in (text, f"{text} (linear probe)")]
    return pd.concat([gap, probe], ignore_index=True), columns


def accuracy_markdown(summary: pd.DataFrame, labels: Mapping[str, str], index: list[str]) -> str:
    """An accuracy summary (one row per source × cell) pivoted to one column per source, named
    by its label in source order, the best accuracy of each row in bold."""
    shown, columns = relabel(summary, "source", labels)
    return pivot_markdown(shown, index, "source", bold_best=True, column_values=columns)


def write_gap_table(df: pd.DataFrame, out_dir: Path) -> list[Path]:
    """``gap_table.csv`` (long, one row per robust source × cell, NaN where unmatched; sources
    by name) and ``gap_table.md`` (see :func:`gap_markdown`). Returns both paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    gap = flag_gaps(gap_table(df), df)
    csv_path, md_path = out_dir / "gap_table.csv", out_dir / "gap_table.md"
    gap.to_csv(csv_path, index=False)
    intro = (
        "Robust − natural test accuracy [pp], matched by target, subset size, seed and blocks; "
        f"mean ± 95% t half-width (n matched seeds); {GAP_SIGN}. {MARK_NOTE}; the linear probe "
        "column gives the gap of the convex reference on the same subsets."
    )
    body = gap_markdown(gap, labels=source_labels(df))
    md_path.write_text(f"# Gap table\n\n{intro}\n\n{body}\n", encoding="utf-8")
    return [csv_path, md_path]
