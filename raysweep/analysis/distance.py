"""Robust-minus-natural gap against source-target dataset distance (Terzi et al. 2021, Fig. 3,
7, 8).

Terzi et al. fine-tune a natural and an adversarially trained backbone on many targets and plot
the accuracy gap (robust - natural) against the Earth Mover's Distance between source and target
(Cui et al. 2018: EMD between class-mean penultimate features, weights = class frequencies);
the farther the target, the larger the gap in favour of the robust model. They only trust the
*order* of the distances, so the figure reports Spearman's rho next to Pearson's r.

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

from raysweep.analysis.figures import DELTA_LABEL, _panel_grid, save_figure, source_colors
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
GAP_COLUMNS = ["robust", "natural", "blocks", "target", "gap", "ci95", "n", "emd", "emd_from"]
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


def gap_vs_distance(finetune_df: pd.DataFrame, distances: pd.DataFrame) -> pd.DataFrame:
    """Per (robust source, natural partner, blocks, target): the mean robust - natural gap, its
    95 % t half-width, n, and the dataset distance.

    gap = mean over every matched cell of (acc_robust - acc_natural) [pp], cells matched by
    target, subset size, seed and blocks (and epochs when present, see :func:`paired_delta`);
    all subset sizes and seeds are pooled, as Terzi et al. report one gap per target.
    ci95 = t_{0.975, n-1} s / sqrt(n) over those n cells (:func:`t_interval`); pooling sizes
    treats them as exchangeable, so read it as the spread of the gap, not a sampling error.

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
        for (blocks, target), group in deltas.groupby(["blocks", "target"], sort=True):
            gap, half, n = t_interval(group["delta"].to_numpy(dtype=float))
            emd, emd_from = _pair_emd(lookup, robust, natural, str(target))
            rows.append((robust, natural, blocks, target, gap, half, n, emd, emd_from))
    out = pd.DataFrame(rows, columns=GAP_COLUMNS)
    types = {"gap": "float64", "ci95": "float64", "n": "int64", "emd": "float64"}
    return out.astype(types).reset_index(drop=True)


def _fisher_ci(r: float, se: float, confidence: float) -> tuple[float, float]:
    """tanh(atanh(r) -/+ z_{(1+c)/2} se); |r| = 1 is nudged inside (-1, 1) to stay finite."""
    z = math.atanh(float(np.clip(r, -np.nextafter(1.0, 0.0), np.nextafter(1.0, 0.0))))
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

    Pearson CI: Fisher z, tanh(atanh(r) +/- z_c / sqrt(n - 3)). Spearman CI: Fisher z with the
    Bonett & Wright (2000) standard error sqrt((1 + rho^2 / 2) / (n - 3)). p-values: scipy's
    ``pearsonr`` (two-sided) and ``spearmanr``'s t approximation, replaced by scipy's exact
    ``permutation_test`` over all pairings for n <= 8 targets. With n = 3 the standard error
    is infinite and the CIs are (-1, 1). With fewer than 3 points, or a constant x or y,
    every figure is NaN: a correlation is undefined there, which is not an error.
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
    dof = n - 3
    se_r = 1.0 / math.sqrt(dof) if dof > 0 else math.inf
    se_rho = math.sqrt((1.0 + rho**2 / 2.0) / dof) if dof > 0 else math.inf
    r_ci, rho_ci = _fisher_ci(r, se_r, confidence), _fisher_ci(rho, se_rho, confidence)
    return Correlation(n, float(r), *r_ci, float(p_r), float(rho), *rho_ci, float(p_rho))


def correlation_table(table: pd.DataFrame) -> pd.DataFrame:
    """:func:`correlations` of gap with EMD per (robust, natural, blocks) of a
    :func:`gap_vs_distance` table, one row each."""
    rows = [
        (*keys, *correlations(group))
        for keys, group in table.groupby(["robust", "natural", "blocks"], sort=True)
    ]
    return pd.DataFrame(rows, columns=["robust", "natural", "blocks", *Correlation._fields])


def _correlation_label(c: Correlation) -> str:
    if math.isnan(c.pearson_r):
        return f"r, ρ undefined (n={c.n} targets, need ≥ 3 and spread)"
    return (
        f"r={c.pearson_r:+.2f} [{c.pearson_low:+.2f}, {c.pearson_high:+.2f}], "
        f"ρ={c.spearman_rho:+.2f} [{c.spearman_low:+.2f}, {c.spearman_high:+.2f}], n={c.n}"
    )


def _draw_panel(ax: Axes, part: pd.DataFrame, colors: dict, span: float) -> None:
    pairs = sorted(part.groupby(["robust", "natural"]).groups)
    for i, (robust, natural) in enumerate(pairs):
        line = part[(part["robust"] == robust) & (part["natural"] == natural)]
        shift = (i - (len(pairs) - 1) / 2) * DODGE * span
        # n = 1 has a NaN half-width: draw the point without a bar rather than a fake zero.
        label = f"{robust} − {natural}: {_correlation_label(correlations(line))}"
        ax.errorbar(
            line["emd"] + shift,
            line["gap"],
            yerr=line["ci95"],
            fmt="o",
            color=colors[robust],
            capsize=3,
            markersize=5,
            label=label,
        )
    for (target, emd), here in part.groupby(["target", "emd"]):
        top = float((here["gap"] + here["ci95"].fillna(0.0)).max())
        ax.annotate(
            str(target),
            (emd, top),
            xytext=(0, 4),
            textcoords="offset points",
            ha="center",
            va="bottom",
            fontsize=8,
        )
    ax.axhline(0.0, color="black", linewidth=0.8, linestyle="--")
    ax.set_xlabel(EMD_LABEL)
    ax.set_ylabel(DELTA_LABEL)
    ax.grid(True, alpha=0.3)
    ax.margins(x=0.12, y=0.15)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.22), fontsize=7, frameon=False)


def gap_vs_distance_figure(table: pd.DataFrame) -> Figure:
    """Terzi Fig. 3: per blocks value, gap [pp] (mean ± 95 % t half-width over matched cells)
    against EMD, one point per target (labelled), one colour per robust source, the Pearson
    and Spearman correlations with their Fisher-z CIs in the legend, a dashed zero line.

    Robust sources sharing an EMD are drawn side by side, offset by ±DODGE of the EMD range.
    """
    part = table.dropna(subset=["gap", "emd"])
    if part.empty:
        raise ValueError("no target has both a matched robust/natural gap and an EMD")
    colors = source_colors(list(part["robust"]))
    blocks = sorted(map(str, part["blocks"].unique()))
    fig, axes = _panel_grid(len(blocks), "Robust − natural accuracy gap vs. dataset distance")
    fig.set_size_inches(5.5 * min(3, len(blocks)), fig.get_size_inches()[1] + 1.0)
    for ax, b in zip(axes, blocks, strict=True):
        here = part[part["blocks"].astype(str) == b]
        span = float(np.ptp(here["emd"])) or float(abs(here["emd"].mean())) or 1.0
        _draw_panel(ax, here, colors, span)
        ax.set_title(f"blocks = {b}")
    return fig


def plot_gap_vs_distance(table: pd.DataFrame, out_dir: Path) -> list[Path]:
    """``gap_vs_distance.png`` and ``.pdf`` (see :func:`gap_vs_distance_figure`)."""
    return save_figure(gap_vs_distance_figure(table), Path(out_dir), STEM)


def _markdown(table: pd.DataFrame, corr: pd.DataFrame) -> str:
    parts = []
    for b, part in table.groupby("blocks", sort=True):
        rows = [
            [
                r.robust,
                r.natural,
                r.target,
                "–" if math.isnan(r.emd) else f"{r.emd:.3g}",
                str(r.emd_from or "–"),
                format_cell(r.gap, r.ci95, r.n, signed=True),
            ]
            for r in part.sort_values(["robust", "emd"]).itertuples()
        ]
        header = ["robust", "natural", "target", "EMD", "EMD of", "gap [pp]"]
        parts.append(f"## blocks = {b}\n\n{markdown_table(header, rows)}")
    rows = []
    for r in corr.to_dict("records"):
        label = _correlation_label(Correlation(*(r[f] for f in Correlation._fields)))
        rows.append([r["robust"], r["natural"], str(r["blocks"]), label])
    header = ["robust", "natural", "blocks", "Pearson r / Spearman ρ [95% CI]"]
    parts.append("## Correlation over targets\n\n" + markdown_table(header, rows))
    return "\n\n".join(parts)


def write_gap_vs_distance(
    finetune_df: pd.DataFrame, distances: pd.DataFrame, out_dir: Path
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
    intro = (
        "Robust − natural test accuracy [pp] per target, pooled over subset sizes and seeds "
        "(mean ± 95% t half-width, n matched cells), at the natural partner's EMD."
    )
    body = _markdown(table, correlation_table(table))
    md_path.write_text(f"# Gap vs. distance\n\n{intro}\n\n{body}\n", encoding="utf-8")
    return [csv_path, md_path, *plot_gap_vs_distance(table, out_dir)]


def distance_section(paths: list[Path], out_dir: Path) -> str:
    """The report.md section for :func:`write_gap_vs_distance`'s files."""
    links = {p.suffix: p.relative_to(out_dir).as_posix() for p in paths}
    return (
        "## Gap vs. dataset distance (Terzi et al. 2021, Fig. 3)\n\n"
        "Robust − natural gap per target against the natural source's EMD to the target; "
        f"table and correlations: [{STEM}.md]({links['.md']}), [{STEM}.csv]({links['.csv']})."
        f"\n\n![{STEM}]({links['.png']})\n\n[PDF]({links['.pdf']})"
    )
