"""Transfer tables in the layout of Terzi et al. 2021 (Tables 1-3, 6-10) and Utrera et al. 2021
(Table 7).

One table per (robust source, its natural partner, subset size): rows are the transfer mode
(``blocks``: Utrera's 0/1/3/9 fine-tuned blocks or Terzi's modes 0/1/2 = head_bn/all_bn/full),
each with a **Rob** row (the robust source), an **St** row (the standard, i.e. natural source)
and a **Δ** row (Rob − St paired seed by seed on target, subset size, seed and blocks — Terzi's
Tables 8-10); columns are the targets. Rob/St cells are the mean test accuracy [%] over that
source's seeds ± the 95 % t half-width, t_{0.975, n-1} s / sqrt(n), with n runs; the better of
Rob and St per (mode, target) is bold, as in the papers. Missing cells show an en dash.

Terzi et al. fine-tune on the whole target training set, so the report shows the table of the
largest subset size of each pair (``all`` when present); ``transfer_tables.md`` holds every
subset size (Utrera's Table 7 reads them across sizes) and the CSV is the long form of all.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from raysweep.analysis.convergence import MARK_NOTE, cell_flags
from raysweep.analysis.labels import MARK, label_of, source_labels
from raysweep.analysis.stats import (
    blocks_order,
    gap_table,
    natural_partners,
    subset_order,
    summarize,
)
from raysweep.analysis.sweepdata import (
    NotSupported,
    Section,
    SweepData,
    file_links,
    require_columns,
)
from raysweep.analysis.tables import MISSING, format_cell, markdown_table
from raysweep.models.names import FINETUNE_MODES

CELL = ["source", "target", "subset_size", "blocks"]
ROWS = ("Rob", "St", "Δ")
COLUMNS = ["robust", "natural", "subset_size", "blocks", "row", "target", "mean", "ci95", "n"]


def _budget(df: pd.DataFrame) -> list[str]:
    """``["epochs"]`` when the sweep mixes epoch budgets (a table per budget), else ``[]``."""
    return ["epochs"] if "epochs" in df and df["epochs"].nunique() > 1 else []


def transfer_table(df: pd.DataFrame, value: str = "test_acc") -> pd.DataFrame:
    """Long form of every transfer table: one row per (robust, natural, subset size, blocks,
    row, target[, epochs]) with ``mean``, ``ci95``, ``n``.

    ``row`` is ``Rob`` / ``St`` (mean over all runs of that source in the cell) or ``Δ`` (mean
    of the seed-matched robust − natural differences, from :func:`gap_table`). A cell neither
    source has is absent; a cell one source lacks has NaN there and n = 0.
    """
    budget = _budget(df)
    summary = summarize(df, [*CELL, *budget], value)
    gaps = gap_table(df, value)
    keys = ["subset_size", "blocks", "target", *budget]
    parts = [_pair_rows(summary, gaps, pair, keys) for pair in natural_partners(df)]
    if not parts:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in [*COLUMNS, *budget]})
    out = pd.concat(parts, ignore_index=True)
    out["n"] = out["n"].fillna(0).astype("int64")
    out = out[[*COLUMNS[:4], *budget, *COLUMNS[4:]]]
    out = _with_unconverged(out, df)
    order = pd.DataFrame(
        {
            "s": out["subset_size"].map(subset_order),
            "b": out["blocks"].map(blocks_order),
            "r": out["row"].map(ROWS.index),
        }
    )
    index = order.sort_values(["s", "b", "r"], kind="stable").index
    out = out.loc[index].sort_values(["robust", "natural"], kind="stable")
    return out.reset_index(drop=True)


def _pair_rows(
    summary: pd.DataFrame, gaps: pd.DataFrame, pair: tuple[str, str], keys: list[str]
) -> pd.DataFrame:
    """Rob, St and Δ rows of one (robust, natural) pair on every cell either source has."""
    robust, natural = pair
    grid = summary.loc[summary["source"].isin(pair), keys].drop_duplicates()
    parts = []
    for row, source in (("Rob", robust), ("St", natural)):
        cells = summary[summary["source"] == source].drop(columns="source")
        parts.append(grid.merge(cells, on=keys, how="left").assign(row=row))
    matched = gaps[(gaps["robust"] == robust) & (gaps["natural"] == natural)]
    delta = matched[[*keys, "delta", "ci95", "n"]].rename(columns={"delta": "mean"})
    parts.append(grid.merge(delta, on=keys, how="left").assign(row="Δ"))
    return pd.concat(parts, ignore_index=True).assign(robust=robust, natural=natural)


def _with_unconverged(out: pd.DataFrame, df: pd.DataFrame) -> pd.DataFrame:
    """``unconverged``: runs of the cell that did not converge — the robust source's for Rob,
    the natural one's for St, both for Δ (:func:`~raysweep.analysis.convergence.cell_flags`)."""
    flags = cell_flags(df).drop(columns="runs")
    cell = ["target", "subset_size", "blocks"]
    counts = []
    for role in ("robust", "natural"):
        side = flags.rename(columns={"source": role, "unconverged": role + "_u"})
        counts.append(out[[role, *cell]].merge(side, on=[role, *cell], how="left")[role + "_u"])
    rob, nat = (c.fillna(0).astype("int64").to_numpy() for c in counts)
    by_row = {"Rob": rob, "St": nat, "Δ": rob + nat}
    return out.assign(unconverged=[by_row[r][i] for i, r in enumerate(out["row"])])


def mode_label(blocks: str) -> str:
    """``3`` stays ``3``; Terzi's modes read ``head_bn (mode 0)``, as in their tables."""
    if blocks in FINETUNE_MODES:
        return f"{blocks} (mode {FINETUNE_MODES.index(blocks)})"
    return blocks


Cell = tuple[float, float, int, int]


def _mode_lines(
    cells: dict[tuple[str, str], Cell], blocks: str, targets: list[str]
) -> list[list[str]]:
    """The Rob, St and Δ lines of one mode; ``cells`` maps (row, target) to (mean, ci95, n)."""
    empty = (math.nan, math.nan, 0, 0)
    best = {}
    for target in targets:
        # Bold needs both sources: a lone Rob or St value has won nothing.
        means = [cells.get((row, target), empty)[0] for row in ("Rob", "St")]
        best[target] = max(means) if not any(math.isnan(m) for m in means) else None
    lines = []
    for row in ROWS:
        texts = []
        for target in targets:
            mean, half, n, unconverged = cells.get((row, target), empty)
            text = format_cell(mean, half, n, signed=row == "Δ")
            text = f"**{text}**" if row != "Δ" and mean == best[target] else text
            texts.append(text + MARK if unconverged else text)
        lines.append([mode_label(blocks) if row == "Rob" else "", row, *texts])
    return lines


def table_markdown(table: pd.DataFrame) -> str:
    """One transfer table (a single pair and subset size) as Markdown: rows mode × Rob/St/Δ,
    columns the targets, best of Rob and St per (mode, target) in bold."""
    targets = sorted(table["target"].unique(), key=str)
    lines = []
    for blocks, mode in sorted(table.groupby("blocks"), key=lambda g: blocks_order(g[0])):
        cells = {
            (r["row"], r["target"]): (r["mean"], r["ci95"], r["n"], r.get("unconverged", 0))
            for r in mode.to_dict("records")
        }
        lines += _mode_lines(cells, str(blocks), targets)
    return markdown_table(["mode", "", *targets], lines)


def transfer_markdown(
    long: pd.DataFrame, largest_only: bool = False, labels: dict[str, str] | None = None
) -> str:
    """Every table of :func:`transfer_table` output, each under a heading naming the pair (by
    ``labels``), the subset size (and epoch budget); ``largest_only`` keeps the largest subset
    size per pair."""
    if long.empty:
        return MISSING
    labels = labels or {}
    keys = ["robust", "natural", "subset_size", *(c for c in ("epochs",) if c in long)]
    sections = []
    for (robust, natural), pair in long.groupby(["robust", "natural"], sort=True):
        sizes = sorted(pair["subset_size"].unique(), key=subset_order)
        chosen = sizes[-1:] if largest_only else sizes
        part = pair[pair["subset_size"].isin(chosen)]
        groups = sorted(part.groupby(keys), key=lambda g: subset_order(g[0][2]))
        for key, table in groups:
            budget = f", {key[3]} epochs" if len(key) > 3 else ""
            rob, st = label_of(labels, robust), label_of(labels, natural)
            heading = f"### Rob = {rob}, St = {st}, subset size {key[2]}{budget}"
            sections.append(f"{heading}\n\n{table_markdown(table)}")
    return "\n\n".join(sections)


def transfer_tables(data: SweepData, out_dir: Path) -> Section:
    """Terzi et al. 2021, Tables 1-3 and 6-10 (Utrera et al. 2021, Table 7): transfer accuracy
    per mode × {Rob, St, Δ} and target. Writes ``transfer_tables.csv`` and ``.md``."""

    df = data.finetune
    require_columns(df, [*CELL, "seed"], "transfer tables")
    if not natural_partners(df):
        raise NotSupported(
            "transfer tables: needs a robust and a natural source of the same architecture "
            "and source dataset, both fine-tuned on the same targets"
        )
    long = transfer_table(df)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = out_dir / "transfer_tables.csv", out_dir / "transfer_tables.md"
    long.to_csv(csv_path, index=False)
    intro = (
        "Test accuracy [%]: mean ± 95% t half-width (n runs); Rob = robust source, St = "
        "standard (natural) source, Δ = Rob − St matched by target, subset size, seed and "
        "blocks [pp] (positive = the robust source is more accurate); the more accurate of Rob "
        f"and St per mode and target in bold; {MARK_NOTE}."
    )
    labels = source_labels(df)
    md_path.write_text(
        f"# Transfer tables\n\n{intro}\n\n{transfer_markdown(long, labels=labels)}\n",
        encoding="utf-8",
    )
    text = (
        f"{intro} Shown: the largest subset size of each pair (Terzi et al. fine-tune on the "
        f"whole target set); every subset size: {file_links([csv_path, md_path], out_dir)}."
    )
    body = f"{text}\n\n{transfer_markdown(long, largest_only=True, labels=labels)}"
    title = "Transfer tables (Terzi et al. 2021, Tables 1-3, 6-10; Utrera et al. 2021, Table 7)"
    return Section(title, body, [csv_path, md_path])
