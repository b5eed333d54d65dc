"""Is a gap real? Convergence of the fine-tuning runs and the linear-probe reference, per cell.

Every fine-tune run logs its convergence record with its final epoch (the rule:
:mod:`raysweep.train.convergence`; names: :mod:`raysweep.schema`), and a ``linear_probe``
probe run per (source, target, subset size, seed) gives the test accuracy of the convex
optimum of a head on the same frozen features. Here:

* :func:`with_linear_probe` puts each probe's accuracy on the fine-tune runs of its subset
  (column ``linear_acc``), so the gap machinery (:func:`raysweep.analysis.stats.gap_table`)
  gives the probe's robust − natural gap exactly as the fine-tuned one, seed-matched;
* :func:`flag_gaps` adds to a gap table the number of its cell's runs (robust and natural)
  that did not converge (``unconverged``) and the probe's gap beside the fine-tuned one;
* tables mark a cell with :data:`MARK` when any of its runs did not converge; figures draw
  such points hollow. Runs from before the record (no ``train_converged``) are not marked.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.axes import Axes

from raysweep.analysis.labels import MARK
from raysweep.analysis.results import metric_column
from raysweep.analysis.stats import gap_table, paired_delta
from raysweep.schema import CONVERGED_METRIC, LINEAR_PROBE, LINEAR_PROBE_ACC

MARK_NOTE = f"{MARK}: some of the cell's runs did not converge (README, \"Convergence\")"
CONVERGED = metric_column(CONVERGED_METRIC)
LINEAR_ACC = "linear_acc"
SUBSET = ["source", "target", "subset_size", "seed"]
CELL = ["source", "target", "subset_size", "blocks"]


def with_linear_probe(finetune: pd.DataFrame, probes: pd.DataFrame) -> pd.DataFrame:
    """``finetune`` with ``linear_acc``: the linear probe's test accuracy (%) on the run's
    (source, target, subset size, seed), NaN where no probe ran."""
    column = metric_column(LINEAR_PROBE_ACC)
    if probes.empty or "probe" not in probes or column not in probes:
        return finetune.assign(**{LINEAR_ACC: float("nan")})
    runs = probes[probes["probe"] == LINEAR_PROBE].dropna(subset=[column])
    runs = runs[[*SUBSET, column]].rename(columns={column: LINEAR_ACC})
    runs = runs.astype({"subset_size": str}).drop_duplicates(SUBSET, keep="last")
    merged = finetune.drop(columns=[LINEAR_ACC], errors="ignore").merge(runs, on=SUBSET, how="left")
    return merged


def unconverged_runs(df: pd.DataFrame) -> pd.Series:
    """Per run: True when its record says it did not converge (no record: False)."""
    if CONVERGED not in df:
        return pd.Series(False, index=df.index)
    return df[CONVERGED].notna() & (df[CONVERGED] < 0.5)


def cell_flags(df: pd.DataFrame) -> pd.DataFrame:
    """Per (source, target, subset size, blocks): ``unconverged`` runs and ``runs``."""
    flagged = df.assign(unconverged=unconverged_runs(df).astype("int64"))
    return flagged.groupby(CELL, as_index=False).agg(
        unconverged=("unconverged", "sum"), runs=("unconverged", "size")
    )


def flag_gaps(gap: pd.DataFrame, df: pd.DataFrame) -> pd.DataFrame:
    """A :func:`gap_table` with ``unconverged`` (runs of the robust and of the natural source in
    the cell that did not converge) and the linear probe's ``probe_delta``, ``probe_ci95``,
    ``probe_n`` (NaN / 0 where no probe ran)."""
    flags = cell_flags(df).drop(columns="runs")
    cell = ["target", "subset_size", "blocks"]
    out = gap.copy()
    out["unconverged"] = 0
    for role in ("robust", "natural"):
        side = flags.rename(columns={"source": role, "unconverged": f"_{role}"})
        out = out.merge(side, on=[role, *cell], how="left")
        out["unconverged"] += out.pop(f"_{role}").fillna(0).astype("int64")
    probe = [c for c in ("probe_delta", "probe_ci95", "probe_n") if c in out]
    out = out.drop(columns=probe)
    if LINEAR_ACC in df and df[LINEAR_ACC].notna().any():
        ref = gap_table(df.dropna(subset=[LINEAR_ACC]), LINEAR_ACC)
        ref = ref[["robust", "natural", *cell, "delta", "ci95", "n"]].rename(
            columns={"delta": "probe_delta", "ci95": "probe_ci95", "n": "probe_n"}
        )
        return out.merge(ref, on=["robust", "natural", *cell], how="left")
    return out.assign(probe_delta=float("nan"), probe_ci95=float("nan"), probe_n=0)


def target_extras(
    df: pd.DataFrame, robust: str, natural: str, pair_on: list[str]
) -> pd.DataFrame:
    """Per (blocks, target) of one pair, pooled as gap_vs_distance pools its gap: the runs that
    did not converge (``unconverged``, both sources, every subset size) and the linear probe's
    gap (``probe_gap``: per seed the mean of the matched probe deltas over subset sizes, then
    the mean over seeds; NaN where no probe ran)."""
    flags = cell_flags(df)
    flags = flags[flags["source"].isin([robust, natural])]
    out = flags.groupby(["blocks", "target"], as_index=False)["unconverged"].sum()
    probed = df.dropna(subset=[LINEAR_ACC]) if LINEAR_ACC in df else df.iloc[0:0]
    if probed.empty:
        return out.assign(probe_gap=float("nan"))
    deltas = paired_delta(probed, robust=robust, natural=natural, pair_on=pair_on, value=LINEAR_ACC)
    seeds = deltas.groupby(["blocks", "target", "seed"], as_index=False)["delta"].mean()
    gaps = seeds.groupby(["blocks", "target"], as_index=False)["delta"].mean()
    return out.merge(gaps.rename(columns={"delta": "probe_gap"}), how="left")


def convergence_section(stages: dict[str, pd.DataFrame]) -> str:
    """report.md's "Convergence" section: per stage, how many finished runs converged."""
    lines = []
    for stage, df in stages.items():
        if df.empty or CONVERGED not in df or df[CONVERGED].isna().all():
            continue
        known = df[CONVERGED].notna()
        done = int((df[CONVERGED] >= 0.5).sum())
        cells = cell_flags(df) if set(CELL) <= set(df.columns) else None
        text = f"- {stage}: **{done} of {int(known.sum())}** runs converged"
        if cells is not None:
            text += f"; {int((cells['unconverged'] > 0).sum())} of {len(cells)} cells have a run "
            text += f"that did not ({MARK} in the tables, hollow points in the figures)"
        lines.append(text + ".")
    if not lines:
        return ""
    rule = (
        "A run converged when, at its base learning rate, the last 10 % of its optimiser "
        "steps would have moved its training loss by at most 1 % of what the whole run moved "
        "it (`train/loss_tail_share`; tag `converged`)."
    )
    return "## Convergence\n\n" + rule + "\n\n" + "\n".join(lines)


def hollow_unconverged(ax: Axes, x: np.ndarray, mean: np.ndarray, flags: np.ndarray, color: object,
                       marker: str) -> None:  # fmt: skip
    """Redraw the points of cells with a non-converged run as white-filled markers."""
    bad = flags > 0
    if bad.any():
        ax.scatter(x[bad], mean[bad], marker=marker, facecolors="white", edgecolors=[color],
                   linewidths=1.3, s=36, zorder=4)  # fmt: skip
