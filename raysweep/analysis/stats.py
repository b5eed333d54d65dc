"""Means, confidence intervals and robust-minus-natural deltas over seeds.

Utrera et al. 2021 (Fig. 2-4, 9-11) report, for each cell of the fine-tuning grid, the mean over
random seeds and its 95 % confidence interval; their delta plots subtract the natural source's
accuracy from the robust source's in the same cell. Terzi et al. 2021 (Tables 1-3) tabulate the
same robust-minus-standard gap per target and transfer mode. Everything here works on the frame
:func:`raysweep.analysis.results.sweep_runs` returns.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from scipy import stats as scipy_stats

from raysweep.models.names import FINETUNE_MODES
from raysweep.schema import ALL_IMAGES

PAIR_ON: tuple[str, ...] = ("target", "subset_size", "seed", "blocks")
# Grid dimensions that must also match when present: a delta across epochs is not a delta, and
# in a metric history (``SweepData.history``) neither is one across evaluation steps.
OPTIONAL_PAIR_ON: tuple[str, ...] = ("epochs", "step")
NATURAL = "natural"


def subset_order(subset_size: object) -> float:
    """Sort key for subset sizes: numbers ascending, then ``"all"`` (the whole training set)."""
    text = str(subset_size)
    return math.inf if text == ALL_IMAGES else float(text)


def blocks_order(blocks: object) -> tuple[int, float, str]:
    """Sort key for ``blocks``: block counts numerically (Utrera: 0 < 1 < 3 < 9), then Terzi's
    modes 0/1/2 (``head_bn`` < ``all_bn`` < ``full``), then any other text alphabetically."""
    text = str(blocks)
    try:
        return (0, float(text), "")
    except ValueError:
        pass
    if text in FINETUNE_MODES:
        return (1, float(FINETUNE_MODES.index(text)), "")
    return (2, 0.0, text)


def t_interval(values: ArrayLike, confidence: float = 0.95) -> tuple[float, float, int]:
    """Student-t confidence interval of the mean: ``(mean, half_width, n)``.

    half_width = t_{(1+c)/2, n-1} * s / sqrt(n), with s the sample standard deviation
    (ddof = 1). NaNs (missing runs) are ignored. n = 1 gives a NaN half-width (no spread to
    estimate); n = 0 gives ``(nan, nan, 0)``.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    x = np.asarray(values, dtype=float).ravel()
    x = x[~np.isnan(x)]
    n = int(x.size)
    if n == 0:
        return math.nan, math.nan, 0
    mean = float(x.mean())
    if n == 1:
        return mean, math.nan, 1
    sem = float(x.std(ddof=1)) / math.sqrt(n)
    return mean, float(scipy_stats.t.ppf((1.0 + confidence) / 2.0, n - 1)) * sem, n


def summarize(
    df: pd.DataFrame, by: Sequence[str], value: str = "test_acc", confidence: float = 0.95
) -> pd.DataFrame:
    """Per group of ``by``: ``mean``, ``ci95`` (t half-width, see :func:`t_interval`) and ``n``.

    Groups keep the order pandas sorts them in; an empty input gives an empty frame with these
    columns.
    """
    by = list(by)
    missing = [c for c in [*by, value] if c not in df.columns]
    if missing:
        raise ValueError(f"summarize: columns {missing} not in frame; have {list(df.columns)}")
    rows = []
    for keys, group in df.groupby(by, sort=True, dropna=False):
        mean, half, n = t_interval(group[value].to_numpy(dtype=float), confidence)
        rows.append((*keys, mean, half, n))
    out = pd.DataFrame(rows, columns=[*by, "mean", "ci95", "n"])
    return out.astype({"mean": "float64", "ci95": "float64", "n": "int64"})


def pair_on_columns(df: pd.DataFrame, base: Sequence[str] = PAIR_ON) -> list[str]:
    """``base`` plus every :data:`OPTIONAL_PAIR_ON` column ``df`` has (and ``base`` lacks)."""
    return [*base, *(c for c in OPTIONAL_PAIR_ON if c in df.columns and c not in base)]


def _one_source(
    df: pd.DataFrame, source: str, pair_on: list[str], value: str, by: str = "source"
) -> pd.DataFrame:
    if source not in set(df[by]):
        valid = ", ".join(sorted(map(str, df[by].dropna().unique())))
        raise ValueError(f"unknown {by} {source!r}; valid: {valid}")
    part = df.loc[df[by] == source, [*pair_on, value]]
    duplicated = part.duplicated(pair_on, keep=False)
    if duplicated.any():
        cells = part.loc[duplicated, pair_on].drop_duplicates().head(3).to_dict("records")
        raise ValueError(
            f"{by} {source!r} has several runs per cell {pair_on}, e.g. {cells}; "
            "filter the frame or pair on more columns"
        )
    return part


def paired_delta(
    df: pd.DataFrame,
    *,
    robust: str,
    natural: str,
    pair_on: Sequence[str] = PAIR_ON,
    value: str = "test_acc",
    by: str = "source",
) -> pd.DataFrame:
    """Robust-minus-natural ``value`` per matched cell: delta = value_robust - value_natural.

    Runs are matched by an exact inner join on ``pair_on`` (target, subset size, seed and
    blocks: the same random subset and head initialisation for both sources, as in Utrera et al.
    2021), never across cells. Columns: ``pair_on``, ``robust``, ``natural``, ``delta`` and
    ``n_train`` when the frame has it. Unmatched runs are dropped and counted in
    ``result.attrs["unmatched_robust"]`` / ``["unmatched_natural"]``. A source with two runs in
    one cell is ambiguous and raises ``ValueError``.

    ``by`` names the column that tells the two sides apart: ``"source"`` for robust vs. natural;
    another column compares other settings of one source, e.g. ``by="blocks"`` with
    ``robust="3", natural="1"`` and ``pair_on`` without blocks (Utrera Fig. 4(b)).
    """
    pair_on = list(pair_on)
    extra = ["n_train"] if "n_train" in df.columns and "n_train" not in pair_on else []
    rob = _one_source(df, robust, pair_on, value, by)
    nat = _one_source(df, natural, pair_on, value, by)
    if extra:
        rob = rob.join(df.loc[rob.index, extra])
    merged = rob.merge(nat, on=pair_on, how="inner", suffixes=("_robust", "_natural"))
    out = merged.rename(columns={f"{value}_robust": "robust", f"{value}_natural": "natural"})
    out["delta"] = out["robust"] - out["natural"]
    out = out[[*pair_on, "robust", "natural", "delta", *extra]].reset_index(drop=True)
    out.attrs["unmatched_robust"] = len(rob) - len(out)
    out.attrs["unmatched_natural"] = len(nat) - len(out)
    return out


def natural_partners(df: pd.DataFrame) -> list[tuple[str, str]]:
    """(robust, natural) source pairs: every non-natural source with each natural source of the
    same ``source_architecture`` and ``source_dataset``, sorted."""
    sources = df[["source", "source_training", "source_architecture", "source_dataset"]]
    sources = sources.drop_duplicates("source")
    natural = sources[sources["source_training"] == NATURAL]
    robust = sources[sources["source_training"] != NATURAL]
    pairs = robust.merge(natural, on=["source_architecture", "source_dataset"])
    return sorted(zip(pairs["source_x"], pairs["source_y"], strict=True))


def matched_gaps(
    df: pd.DataFrame,
    robust: str,
    natural: str,
    pair_on: Sequence[str],
    value: str = "test_acc",
    by: str = "source",
) -> pd.DataFrame:
    """One pair of ``by`` values: a row per cell (``pair_on`` without seed) either side has.

    Per cell: ``robust_acc`` / ``natural_acc`` (means over the matched seeds), ``delta`` =
    mean of the seed-matched differences (:func:`paired_delta`), its 95 % t half-width ``ci95``
    and ``n`` matched seeds; NaN and ``n = 0`` where no seed matched. The names say robust and
    natural because that is the main use; with ``by="blocks"`` they are two block settings.
    """
    pair_on = list(pair_on)
    cell = [c for c in pair_on if c != "seed"]
    deltas = paired_delta(df, robust=robust, natural=natural, pair_on=pair_on, value=value, by=by)
    rows = []
    for keys, group in deltas.groupby(cell, sort=False):
        mean, half, n = t_interval(group["delta"].to_numpy(dtype=float))
        rows.append((*keys, group["robust"].mean(), group["natural"].mean(), mean, half, n))
    stats = pd.DataFrame(rows, columns=[*cell, "robust_acc", "natural_acc", "delta", "ci95", "n"])
    both = df[df[by].isin([robust, natural])]
    if "n_train" in both:
        grid = both.groupby(cell, sort=False, dropna=False)["n_train"].median().reset_index()
    else:
        grid = both[cell].drop_duplicates()
    out = grid.merge(stats, on=cell, how="left")
    out["n"] = out["n"].fillna(0).astype("int64")
    out.insert(0, "natural", natural)
    out.insert(0, "robust", robust)
    return out


def gap_table(df: pd.DataFrame, value: str = "test_acc") -> pd.DataFrame:
    """Robust-minus-natural gap per (robust source, target, subset size, blocks).

    Each robust source (``source_training != "natural"``) is compared with the natural source of
    the same architecture and source dataset, matched seed by seed (:func:`paired_delta`); per
    cell the table gives ``robust_acc`` and ``natural_acc`` (means over the matched seeds),
    ``delta`` = mean(robust - natural), its 95 % t half-width ``ci95`` and ``n`` matched seeds.
    Cells where only one source has runs stay in the table with NaN and ``n = 0``. Also
    carries ``source_training``, ``source_norm``, ``source_eps`` of the robust source and the
    median ``n_train`` of the cell. Sorted by robust source, target, blocks, subset size.
    """
    pair_on = pair_on_columns(df)
    cell = [c for c in pair_on if c != "seed"]
    parts = [matched_gaps(df, r, n, pair_on, value) for r, n in natural_partners(df)]
    describe = ["source_training", "source_norm", "source_eps"]
    columns = ["robust", "natural", *describe, *cell, "n_train", "robust_acc", "natural_acc"]
    columns += ["delta", "ci95", "n"]
    if not parts:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
    out = pd.concat(parts, ignore_index=True)
    info = df.drop_duplicates("source").set_index("source")[describe]
    out = out.join(info, on="robust")
    if "n_train" not in out:
        out["n_train"] = np.nan
    out["_order"] = out["subset_size"].map(subset_order)
    out = out.sort_values(["robust", "natural", "target", "blocks", "_order"], kind="stable")
    return out[columns].reset_index(drop=True)
