"""Markdown rendering of summary tables: ``mean ± ci95 (n)`` cells.

Missing cells render as an en dash, never as 0: a sweep that is still running has holes.
Bold marks the best *accuracy* of a row, and only in accuracy tables: in a table of signed
differences "largest" is not "best" (the largest of negative gaps is the smallest loss), so
difference tables print their sign (``+`` / ``-``) and say which way is which, without bold.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Real

import pandas as pd

from raysweep.analysis.labels import MARK, MISSING
from raysweep.analysis.stats import blocks_order, subset_order

#: Grid columns whose values are text but sort by meaning ("all" last, 3 before 10 blocks).
SORT_KEYS = {"subset_size": subset_order, "blocks": blocks_order}

__all__ = ["MISSING", "SORT_KEYS", "format_cell", "markdown_table", "pivot_markdown"]


def format_cell(mean: float, ci95: float, n: int, signed: bool = False, digits: int = 2) -> str:
    """``mean ± ci95 (n=k)``; ``mean (n=1)`` without spread; :data:`MISSING` when mean is NaN."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return MISSING
    text = f"{mean:+.{digits}f}" if signed else f"{mean:.{digits}f}"
    if ci95 is not None and not math.isnan(ci95):
        text += f" ± {ci95:.{digits}f}"
    return f"{text} (n={int(n)})"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub-flavoured Markdown table; ``|`` inside cells is escaped."""

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(header), line(["---"] * len(header)), *(line(r) for r in rows)])


def _row_order(frame: pd.DataFrame, index: list[str]) -> pd.DataFrame:
    keys = frame[index].drop_duplicates()
    sort_cols = [f"_{c}" for c in index]
    for c in index:
        keys[f"_{c}"] = keys[c].map(SORT_KEYS[c]) if c in SORT_KEYS else keys[c]
    return keys.sort_values(sort_cols, kind="stable")[index]


def column_order(values: Sequence[object], column: str) -> list[object]:
    """Header order: subset sizes and blocks by :data:`SORT_KEYS`, numbers (epochs, steps)
    numerically, anything else by its text."""
    if column in SORT_KEYS:
        return sorted(values, key=SORT_KEYS[column])
    if all(isinstance(v, Real) for v in values):
        return sorted(values)
    return sorted(values, key=str)


def pivot_markdown(
    summary: pd.DataFrame,
    index: Sequence[str],
    column: str,
    *,
    mean: str = "mean",
    ci95: str = "ci95",
    n: str = "n",
    signed: bool = False,
    bold_best: bool = False,
    column_values: Sequence[object] | None = None,
    marked: str | None = None,
) -> str:
    """Pivot a long summary to Markdown: one row per ``index`` tuple, one column per ``column``.

    Rows are sorted (subset sizes numerically, ``all`` last). With ``bold_best`` (accuracy
    tables only; ``signed`` tables of differences never bold) the largest mean of each row is
    bold when the row has at least two values. Cells absent from
    ``summary`` or with a NaN mean show :data:`MISSING`. ``column_values`` fixes the columns
    and their order (default: every value of ``column``, see :func:`column_order`).
    ``marked``: a column whose truthy rows get :data:`MARK` after their cell (non-converged
    runs, :mod:`raysweep.analysis.convergence`).
    """
    index = list(index)
    if signed and bold_best:
        raise ValueError("pivot_markdown: a table of signed differences has no 'best' to bold")
    if column_values is None:
        column_values = column_order(list(summary[column].dropna().unique()), column)
    columns = list(column_values)
    lookup = {
        (*(r[c] for c in index), r[column]): (r[mean], r[ci95], r[n])
        for r in summary.to_dict("records")
    }
    flagged = {
        (*(r[c] for c in index), r[column])
        for r in summary.to_dict("records")
        if marked is not None and r[marked]
    }
    rows = []
    for keys in _row_order(summary, index).itertuples(index=False):
        cells = [lookup.get((*keys, col), (math.nan, math.nan, 0)) for col in columns]
        means = [c[0] for c in cells if not math.isnan(c[0])]
        best = max(means) if bold_best and len(means) >= 2 else None
        texts = []
        for col, (m, h, k) in zip(columns, cells, strict=True):
            text = format_cell(m, h, k, signed=signed)
            text = f"**{text}**" if best is not None and m == best else text
            texts.append(text + MARK if (*keys, col) in flagged else text)
        rows.append([*map(str, keys), *texts])
    return markdown_table([*index, *map(str, columns)], rows)
