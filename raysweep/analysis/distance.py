"""Robust-minus-natural gap against source-target dataset distance (Terzi et al. 2021, Fig. 3,
7, 8).

Terzi et al. fine-tune a natural and an adversarially trained backbone on many targets and plot
the accuracy gap (robust - natural) against the Earth Mover's Distance between source and target
(Cui et al. 2018: EMD between class-mean penultimate features, weights = class frequencies);
the farther the target, the larger the gap in favour of the robust model. They only trust the
*order* of the distances, so the figure reports Spearman's rho next to Pearson's r.

The unit of the correlation is the target: one point per target, its gap averaged over the
subset sizes and seeds first. Subset sizes of one target are repeated measurements of it, not
independent points, and are never counted as such. Below :data:`MIN_CI_POINTS` targets the
correlation is shown without an interval (Fisher's z has n − 3 degrees of freedom: at n = 3
the "interval" is [−1, +1], which says nothing) and the figure says so.

Distances come from the sweep's ``distance`` probe runs (``raysweep.stage=probe``, tag
``probe=distance``, metrics ``probe/emd`` and ``probe/similarity``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from scipy import stats as scipy_stats

from raysweep.analysis.convergence import MARK_NOTE, target_extras
from raysweep.analysis.figures import (
    DELTA_LABEL,
    GAP_SIGN,
    LEGEND_SIZE,
    Style,
    panel_grid,
    save_figure,
    source_styles,
    zero_line,
)
from raysweep.analysis.labels import MARK, label_of, pair_column, source_labels
from raysweep.analysis.results import sweep_runs
from raysweep.analysis.stats import (
    OPTIONAL_PAIR_ON,
    PAIR_ON,
    natural_partners,
    paired_delta,
    t_interval,
)
from raysweep.analysis.tables import format_cell, markdown_table

DISTANCE_PROBE = "distance"
EMD_LABEL = "EMD source → target (feature-space distance)"
STEM = "gap_vs_distance"
DISTANCE_COLUMNS = ["source", "target", "emd", "similarity"]
GAP_COLUMNS = ["robust", "natural", "blocks", "target", "gap", "ci95", "n", "n_sizes", "n_cells"]
GAP_COLUMNS += ["emd", "emd_from", "unconverged", "probe_gap"]
# Fewer points than this: r and ρ without an interval (Fisher z needs n − 3 > 0 and at n = 3
# gives [−1, +1]).
MIN_CI_POINTS = 4
# |r| from here on is a perfect correlation: its Fisher-z interval degenerates to [±1, ±1].
PERFECT = 1.0 - 1e-9
DISTANCE_CAPTION = (
    "Robust − natural gap per target against the natural source's EMD to the target. One "
    "point per target: its gap averaged per seed over the subset sizes, then mean ± 95% t "
    "half-width over the n seeds; the correlations count targets, not runs, and have no "
    f"interval below {MIN_CI_POINTS} targets; {GAP_SIGN}. {MARK_NOTE}; the linear probe gap, "
    "pooled alike, is the convex reference on the same subsets."
)
# Side-by-side offset of the robust sources at one target, as a share of the EMD range: the
# sources share the natural partner's EMD, and stacked error bars would hide one another.
DODGE = 0.012
# Up to this many targets Spearman's p is exact (all n! pairings, 40 320 at 8): scipy's
# t approximation gives p = 0 for rho = +/-1 at n = 3, where the exact p is 1/3.
EXACT_SPEARMAN_MAX_N = 8


class Correlation(NamedTuple):
    """Pearson and Spearman correlation of gap with EMD over targets, with 95 % CIs."""

    n: int
    pearson_r: float
    pearson_low: float
    pearson_high: float
    pearson_p: float
    spearman_rho: float
    spearman_low: float
    spearman_high: float
    spearman_p: float


def distance_table(tracking_uri: str, sweep: str) -> pd.DataFrame:
    """``source, target, emd, similarity`` from the sweep's FINISHED ``distance`` probe runs.

    similarity = exp(-gamma * emd) as logged by the probe (Cui et al. 2018). Should one
    (source, target) have several distance runs (probe params changed between launches), the
    one that ended last is kept. A sweep without distance runs gives an empty frame.
    """
    runs = sweep_runs(tracking_uri, sweep, stage="probe")
    empty = pd.DataFrame({c: pd.Series(dtype=object) for c in DISTANCE_COLUMNS})
    needed = ["probe", "source", "target", "probe_emd"]
    if runs.empty or any(c not in runs.columns for c in needed):
        return empty
    runs = runs[(runs["probe"] == DISTANCE_PROBE) & runs["probe_emd"].notna()]
    runs = runs.dropna(subset=["source", "target"])
    if runs.empty:
        return empty
    if "probe_similarity" not in runs:
        runs = runs.assign(probe_similarity=np.nan)
    runs = runs.sort_values(["end_time", "run_id"]).drop_duplicates(
        ["source", "target"], keep="last"
    )
    out = runs.rename(columns={"probe_emd": "emd", "probe_similarity": "similarity"})
    out = out[DISTANCE_COLUMNS].sort_values(["source", "target"]).reset_index(drop=True)
    return out.astype({"emd": "float64", "similarity": "float64"})


def _pair_emd(
    lookup: dict[tuple[str, str], float], robust: str, natural: str, target: str
) -> tuple[float, str | None]:
    """The natural partner's EMD to ``target``; the robust source's when the natural one is
    missing (the mean over the pair's available values); NaN when neither measured it."""
    if (natural, target) in lookup:
        return lookup[(natural, target)], "natural"
    if (robust, target) in lookup:
        return lookup[(robust, target)], "robust"
    return math.nan, None


def _target_gap(group: pd.DataFrame) -> tuple[float, float, int, int, int]:
    """(gap, ci95, n seeds, n subset sizes, n cells) of one target's matched deltas: each
    seed's deltas are averaged over its subset sizes first, so that the interval counts seeds,
    the independent repetitions, and not subset sizes, which are settings of one target."""
    per_seed = group.groupby("seed")["delta"].mean()
    gap, half, n = t_interval(per_seed.to_numpy(dtype=float))
    return gap, half, n, int(group["subset_size"].nunique()), len(group)


def gap_vs_distance(finetune_df: pd.DataFrame, distances: pd.DataFrame) -> pd.DataFrame:
    """Per (robust source, natural partner, blocks, target): the mean robust - natural gap, its
    95 % t half-width over seeds, n seeds, the subset sizes and cells pooled, and the distance.

    Deltas (acc_robust - acc_natural) [pp] are matched by target, subset size, seed and blocks
    (and epochs when present, see :func:`paired_delta`). Terzi et al. report one gap per
    target, so the subset sizes are pooled — but as what they are, settings of one target:
    each seed's deltas are averaged over the sizes, and gap = mean over seeds, ci95 =
    t_{0.975, n-1} s / sqrt(n) over those n seed means (:func:`t_interval`). ``n_sizes`` and
    ``n_cells`` say how many subset sizes and matched cells went in.

    EMD: Terzi et al. measure every target's distance with one reference network. Here each
    source measures its own distance, so the pair is placed at the NATURAL partner's EMD (the
    standard network is the reference, the same x for every robust source of that natural
    source); when the natural source has no distance run, the pair's remaining measurement
    (the robust source's) is used; ``emd_from`` says which ("natural", "robust", or missing
    when neither source measured the target, EMD NaN).
    """
    df = finetune_df
    pair_on = [*PAIR_ON, *(c for c in OPTIONAL_PAIR_ON if c in df.columns)]
    lookup = {(str(r.source), str(r.target)): float(r.emd) for r in distances.itertuples()}
    rows = []
    for robust, natural in natural_partners(df):
        deltas = paired_delta(df, robust=robust, natural=natural, pair_on=pair_on)
        extras = target_extras(df, robust, natural, pair_on).set_index(["blocks", "target"])
        for (blocks, target), group in deltas.groupby(["blocks", "target"], sort=True):
            emd, emd_from = _pair_emd(lookup, robust, natural, str(target))
            more = extras.loc[(blocks, target)]
            rows.append((robust, natural, blocks, target, *_target_gap(group), emd, emd_from,
                         int(more["unconverged"]), float(more["probe_gap"])))  # fmt: skip
    out = pd.DataFrame(rows, columns=GAP_COLUMNS)
    types = {"gap": "float64", "ci95": "float64", "n": "int64", "emd": "float64"}
    types |= {"n_sizes": "int64", "n_cells": "int64", "unconverged": "int64"}
    types |= {"probe_gap": "float64"}
    return out.astype(types).reset_index(drop=True)


def _fisher_ci(r: float, se: float, confidence: float) -> tuple[float, float]:
    """tanh(atanh(r) -/+ z_{(1+c)/2} se); NaN at |r| = 1, where atanh is infinite and the
    interval would collapse to [±1, ±1], a certainty a handful of points cannot give."""
    if abs(r) >= PERFECT:
        return math.nan, math.nan
    z = math.atanh(float(r))
    crit = float(scipy_stats.norm.ppf((1.0 + confidence) / 2.0))
    return math.tanh(z - crit * se), math.tanh(z + crit * se)


def _exact_spearman_p(xs: np.ndarray, ys: np.ndarray) -> float:
    """Two-sided permutation p of Spearman's rho over every pairing of xs with ys."""

    def rho(y: np.ndarray) -> float:
        return float(scipy_stats.spearmanr(xs, y).statistic)

    test = scipy_stats.permutation_test(
        (ys,), rho, permutation_type="pairings", n_resamples=np.inf, vectorized=False
    )
    return float(test.pvalue)


def correlations(
    df: pd.DataFrame, x: str = "emd", y: str = "gap", confidence: float = 0.95
) -> Correlation:
    """Pearson r and Spearman rho of ``y`` against ``x`` over the rows with both values.

    Each row is one point: the caller decides the unit (a target, a source, an epoch) and
    averages repeated measurements of it beforehand. Pearson CI: Fisher z, tanh(atanh(r) +/-
    z_c / sqrt(n - 3)). Spearman CI: Fisher z with the Bonett & Wright (2000) standard error
    sqrt((1 + rho^2 / 2) / (n - 3)). p-values: scipy's ``pearsonr`` (two-sided) and
    ``spearmanr``'s t approximation, replaced by scipy's exact ``permutation_test`` over all
    pairings for n <= 8 points. Below :data:`MIN_CI_POINTS` points the CIs are NaN (at n = 3
    Fisher z has no degree of freedom left: the interval would be (-1, 1) whatever the data),
    and so is the CI of a perfect correlation (|r| = 1, see :func:`_fisher_ci`).
    With fewer than 3 points, or a constant x or y, every figure is NaN: a correlation is
    undefined there, which is not an error.
    """
    both = df[[x, y]].astype(float).dropna()
    n = len(both)
    xs, ys = both[x].to_numpy(), both[y].to_numpy()
    if n < 3 or np.ptp(xs) == 0 or np.ptp(ys) == 0:
        return Correlation(n, *([math.nan] * 8))
    r, p_r = scipy_stats.pearsonr(xs, ys)
    rho, p_rho = scipy_stats.spearmanr(xs, ys)
    if n <= EXACT_SPEARMAN_MAX_N:
        p_rho = _exact_spearman_p(xs, ys)
    r_ci = rho_ci = (math.nan, math.nan)
    if n >= MIN_CI_POINTS:
        dof = n - 3
        r_ci = _fisher_ci(r, 1.0 / math.sqrt(dof), confidence)
        rho_ci = _fisher_ci(rho, math.sqrt((1.0 + rho**2 / 2.0) / dof), confidence)
    return Correlation(n, float(r), *r_ci, float(p_r), float(rho), *rho_ci, float(p_rho))


def correlation_table(table: pd.DataFrame) -> pd.DataFrame:
    """:func:`correlations` of gap with EMD per (robust, natural, blocks) of a
    :func:`gap_vs_distance` table, one row each."""
    rows = [
        (*keys, *correlations(group))
        for keys, group in table.groupby(["robust", "natural", "blocks"], sort=True)
    ]
    return pd.DataFrame(rows, columns=["robust", "natural", "blocks", *Correlation._fields])


def _with_ci(name: str, value: float, low: float, high: float, why: bool) -> str:
    """``r=+0.80 [+0.10, +0.97]``, or without an interval, with ``why`` the reason when it is
    the perfect correlation: ``ρ=+1.00 (no CI at |ρ| = 1)``."""
    if not math.isnan(low):
        return f"{name}={value:+.2f} [{low:+.2f}, {high:+.2f}]"
    if why and abs(value) >= PERFECT:
        return f"{name}={value:+.2f} (no CI at |{name}| = 1)"
    return f"{name}={value:+.2f}"


def correlation_text(c: Correlation, unit: str = "targets", spearman: bool = True) -> str:
    """``r=+0.80 [+0.10, +0.97], ρ=+0.70 [...] (n=6 targets)``; below :data:`MIN_CI_POINTS`
    points the values without an interval and why; undefined correlations say why."""
    if math.isnan(c.pearson_r):
        return f"r{', ρ' if spearman else ''} undefined (n={c.n} {unit}; needs ≥ 3 with spread)"
    few = c.n < MIN_CI_POINTS  # then no interval at all, for one reason said once
    values = _with_ci("r", c.pearson_r, c.pearson_low, c.pearson_high, not few)
    if spearman:
        values += ", " + _with_ci("ρ", c.spearman_rho, c.spearman_low, c.spearman_high, not few)
    if few:
        return f"{values} (n={c.n} {unit}; no CI below {MIN_CI_POINTS})"
    return f"{values} (n={c.n} {unit})"


def _annotate_targets(ax: Axes, part: pd.DataFrame) -> None:
    """Each target's name above its highest error bar; neighbours along x alternate between two
    heights so that names of close targets do not run into each other or the points."""
    tops = []
    for (target, emd), here in part.groupby(["target", "emd"]):
        tops.append((float(emd), float((here["gap"] + here["ci95"].fillna(0.0)).max()), target))
    for i, (emd, top, target) in enumerate(sorted(tops)):
        ax.annotate(str(target), (emd, top), xytext=(0, 5 + 11 * (i % 2)),
                    textcoords="offset points", ha="center", va="bottom", fontsize=9)  # fmt: skip


def _draw_panel(
    ax: Axes, part: pd.DataFrame, styles: dict[str, Style], labels: dict[str, str], span: float
) -> None:
    pair, order = pair_column(part, "robust", "natural", labels)
    part = part.assign(pair=pair)
    for i, text in enumerate(order):
        line = part[part["pair"] == text]
        shift = (i - (len(order) - 1) / 2) * DODGE * span
        robust = str(line["robust"].iloc[0])
        # n = 1 has a NaN half-width: draw the point without a bar rather than a fake zero.
        ax.errorbar(
            line["emd"] + shift,
            line["gap"],
            yerr=line["ci95"],
            capsize=3,
            label=f"{text}\n{correlation_text(correlations(line))}",
            **(styles[robust].kwargs(hollow=True) | {"linestyle": "none", "markersize": 6}),
        )
    _annotate_targets(ax, part)
    zero_line(ax)
    ax.set_xlabel(EMD_LABEL)
    ax.set_ylabel(DELTA_LABEL)
    ax.grid(True, alpha=0.3)
    ax.margins(x=0.12, y=0.2)  # room for the target names above the points
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18), fontsize=LEGEND_SIZE - 1,
              frameon=False)  # fmt: skip


def gap_vs_distance_figure(
    table: pd.DataFrame,
    labels: dict[str, str] | None = None,
    styles: dict[str, Style] | None = None,
    sharey: bool = False,
) -> Figure:
    """Terzi Fig. 3: per blocks value, gap [pp] (mean ± 95 % t half-width over seeds) against
    EMD, one point per target (named above it), one hollow marker style per robust source,
    Pearson and Spearman correlations over targets in the legend (with Fisher-z CIs from
    :data:`MIN_CI_POINTS` targets on), a dashed zero line. ``labels`` and ``styles`` (by source
    name; default: from the robust names alone) keep sources as the other figures show them.

    Robust sources sharing an EMD are drawn side by side, offset by ±DODGE of the EMD range.
    """
    part = table.dropna(subset=["gap", "emd"])
    if part.empty:
        raise ValueError("no target has both a matched robust/natural gap and an EMD")
    info = pd.DataFrame({"source": sorted(set(part["robust"]))})
    styles = styles or source_styles(info)
    labels = labels or source_labels(info)
    blocks = sorted(map(str, part["blocks"].unique()))
    title = "Robust − natural accuracy gap vs. dataset distance (one point per target)"
    fig, axes = panel_grid(len(blocks), title, sharey=sharey)
    fig.set_size_inches(5.5 * min(3, len(blocks)), fig.get_size_inches()[1] + 1.0)
    for ax, b in zip(axes, blocks, strict=True):
        here = part[part["blocks"].astype(str) == b]
        span = float(np.ptp(here["emd"])) or float(abs(here["emd"].mean())) or 1.0
        _draw_panel(ax, here, styles, labels, span)
        ax.set_title(f"blocks = {b}")
    return fig


def plot_gap_vs_distance(
    table: pd.DataFrame,
    out_dir: Path,
    labels: dict[str, str] | None = None,
    styles: dict[str, Style] | None = None,
    sharey: bool = False,
) -> list[Path]:
    """``gap_vs_distance.png`` and ``.pdf`` (see :func:`gap_vs_distance_figure`)."""
    fig = gap_vs_distance_figure(table, labels, styles, sharey=sharey)
    return save_figure(fig, Path(out_dir), STEM)


def _markdown(table: pd.DataFrame, corr: pd.DataFrame, labels: dict[str, str]) -> str:
    parts = []
    for b, part in table.groupby("blocks", sort=True):
        rows = [
            [
                label_of(labels, r.robust),
                label_of(labels, r.natural),
                r.target,
                "–" if math.isnan(r.emd) else f"{r.emd:.3g}",
                str(r.emd_from or "–"),
                format_cell(r.gap, r.ci95, r.n, signed=True) + (MARK if r.unconverged else ""),
                "–" if math.isnan(r.probe_gap) else f"{r.probe_gap:+.2f}",
                str(r.n_sizes),
            ]
            for r in part.sort_values(["robust", "emd"]).itertuples()
        ]
        header = ["robust", "natural", "target", "EMD", "EMD of", "gap [pp] (n seeds)"]
        header += ["linear probe gap [pp]", "sizes"]
        parts.append(f"## blocks = {b}\n\n{markdown_table(header, rows)}")
    rows = []
    for r in corr.to_dict("records"):
        text = correlation_text(Correlation(*(r[f] for f in Correlation._fields)))
        rows.append([label_of(labels, r["robust"]), label_of(labels, r["natural"]),
                     str(r["blocks"]), text])  # fmt: skip
    header = ["robust", "natural", "blocks", "Pearson r / Spearman ρ over targets [95% CI]"]
    parts.append("## Correlation over targets\n\n" + markdown_table(header, rows))
    return "\n\n".join(parts)


def write_gap_vs_distance(
    finetune_df: pd.DataFrame, distances: pd.DataFrame, out_dir: Path, sharey: bool = False
) -> list[Path]:
    """``gap_vs_distance.csv`` / ``.md`` (table and correlations) and the figure as PNG + PDF.

    Returns [] without writing anything when no target has both a matched gap and an EMD
    (e.g. a sweep without distance probes).
    """
    if distances.empty:
        return []
    table = gap_vs_distance(finetune_df, distances)
    if table.dropna(subset=["gap", "emd"]).empty:
        return []
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = out_dir / f"{STEM}.csv", out_dir / f"{STEM}.md"
    table.to_csv(csv_path, index=False)
    labels = source_labels(finetune_df)
    body = _markdown(table, correlation_table(table), labels)
    md_path.write_text(f"# Gap vs. distance\n\n{DISTANCE_CAPTION}\n\n{body}\n", encoding="utf-8")
    styles = source_styles(finetune_df)
    return [csv_path, md_path, *plot_gap_vs_distance(table, out_dir, labels, styles, sharey)]
