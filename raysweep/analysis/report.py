"""One Markdown report per sweep: fetch finished runs, cache them, draw what the data supports.

``write_sweep_report`` is what ``raysweep report`` (and ``analysis/accuracy_vs_subset.py``)
call. The report works on a partial sweep: cells without runs stay missing (NaN in the CSVs,
an en dash in the Markdown), never zero, and runs that are not FINISHED are counted, not used.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd

from raysweep.analysis.distance import distance_section, distance_table, write_gap_vs_distance
from raysweep.analysis.figures import gap_markdown, plot_accuracy_vs_subset, write_gap_table
from raysweep.analysis.results import (
    NothingToAnalyze,
    cache_results,
    count_unfinished,
    default_cache_path,
    sweep_runs,
)
from raysweep.analysis.stats import gap_table, natural_partners, subset_order, summarize
from raysweep.analysis.tables import markdown_table, pivot_markdown

REQUIRED = ("source", "source_training", "target", "subset_size", "blocks")
CELL = ["source", "target", "subset_size", "blocks"]

__all__ = ["NothingToAnalyze", "write_sweep_report"]


def _link(path: Path, out_dir: Path) -> str:
    return path.relative_to(out_dir).as_posix()


def _coverage_section(df: pd.DataFrame, unfinished: dict[str, int]) -> str:
    sources = df.drop_duplicates("source").sort_values("source")
    rows = [
        [
            str(r["source"]),
            str(r["source_training"]),
            str(r.get("source_norm") or "–"),
            f"{r['source_eps']:g}" if pd.notna(r.get("source_eps")) else "–",
            str(int((df["source"] == r["source"]).sum())),
        ]
        for _, r in sources.iterrows()
    ]
    not_counted = ", ".join(f"{k}: {v}" for k, v in unfinished.items()) or "none"
    sizes = sorted(df["subset_size"].unique(), key=subset_order)
    seeds_per_cell = df.groupby(CELL).size()
    low, high = int(seeds_per_cell.min()), int(seeds_per_cell.max())
    spread = str(low) if low == high else f"{low}–{high}"
    lines = [
        f"- finished fine-tuning runs: **{len(df)}** (other runs, not counted: {not_counted})",
        f"- targets: {', '.join(sorted(df['target'].unique()))}",
        f"- subset sizes: {', '.join(map(str, sizes))}",
        f"- blocks: {', '.join(sorted(df['blocks'].unique()))}",
        f"- runs per (source, target, subset size, blocks) cell: {spread} over "
        f"{len(seeds_per_cell)} cells",
    ]
    header = ["source", "training", "norm", "ε", "runs"]
    return "## Coverage\n\n" + "\n".join(lines) + "\n\n" + markdown_table(header, rows)


def _figures_section(figures: list[Path], out_dir: Path) -> str:
    parts = ["## Figures"]
    for png in (p for p in figures if p.suffix == ".png"):
        pdf = png.with_suffix(".pdf")
        parts.append(f"![{png.stem}]({_link(png, out_dir)})\n\n[PDF]({_link(pdf, out_dir)})")
    return "\n\n".join(parts)


def _accuracy_section(summary: pd.DataFrame, csv_path: Path, out_dir: Path) -> str:
    parts = [
        "## Test accuracy [%]",
        "Mean ± 95% t half-width over seeds (n runs); best source per row in bold. "
        f"All cells: [{csv_path.name}]({_link(csv_path, out_dir)}).",
    ]
    for b, part in summary.groupby("blocks", sort=True):
        table = pivot_markdown(part, ["target", "subset_size"], "source")
        parts.append(f"### blocks = {b}\n\n{table}")
    return "\n\n".join(parts)


def _gap_section(df: pd.DataFrame, gap_paths: list[Path], out_dir: Path) -> str:
    links = ", ".join(f"[{p.name}]({_link(p, out_dir)})" for p in gap_paths)
    text = (
        "Each robust source minus the natural source of the same architecture and source "
        "dataset, matched by target, subset size, seed and blocks; mean ± 95% t half-width "
        f"(n matched seeds). Files: {links}."
    )
    return f"## Robust − natural gap [pp]\n\n{text}\n\n{gap_markdown(gap_table(df), heading='###')}"


def write_sweep_report(tracking_uri: str, sweep: str, out_dir: Path) -> list[Path]:
    """Fetch, cache, plot and tabulate a sweep's fine-tuning results; write ``report.md``.

    Writes into ``out_dir``: the run cache (``finetune_runs.parquet``, or ``.csv`` without
    pyarrow), ``accuracy_summary.csv`` (mean, ci95, n per source × target × subset size ×
    blocks), Utrera Fig. 2(a) per blocks value, and when a robust source has a natural partner,
    Fig. 2(b) and ``gap_table.csv``/``.md``; when the sweep has distance probe runs, the gap vs.
    EMD figure and table (Terzi Fig. 3, ``gap_vs_distance.*``); then ``report.md`` linking them.
    Returns every path written, ``report.md`` last. Raises :class:`NothingToAnalyze` without
    finished runs.
    """
    out_dir = Path(out_dir)
    df = sweep_runs(tracking_uri, sweep, stage="finetune")
    df = df.dropna(subset=[c for c in REQUIRED if c in df.columns])
    if df.empty:
        raise NothingToAnalyze(
            f"sweep {sweep!r} has no finished fine-tuning runs yet: run `raysweep status {sweep}`"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    cache = default_cache_path(out_dir)
    cache_results(df, cache)
    summary = summarize(df, CELL)
    summary_path = out_dir / "accuracy_summary.csv"
    summary.to_csv(summary_path, index=False)
    figures = plot_accuracy_vs_subset(df, out_dir)
    gap_paths = write_gap_table(df, out_dir) if natural_partners(df) else []
    # Terzi Fig. 3 only when the sweep ran distance probes; [] (nothing written) otherwise.
    distance_paths = write_gap_vs_distance(df, distance_table(tracking_uri, sweep), out_dir)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    sections = [
        f"# Sweep `{sweep}`: fine-tuning results\n\nTracking URI `{tracking_uri}`, "
        f"generated {stamp}. Run cache: [{cache.name}]({_link(cache, out_dir)}).",
        _coverage_section(df, count_unfinished(tracking_uri, sweep, stage="finetune")),
        _figures_section(figures, out_dir),
        _accuracy_section(summary, summary_path, out_dir),
    ]
    if gap_paths:
        sections.append(_gap_section(df, gap_paths, out_dir))
    if distance_paths:
        sections.append(distance_section(distance_paths, out_dir))
    report = out_dir / "report.md"
    report.write_text("\n\n".join(sections) + "\n", encoding="utf-8")
    return [cache, summary_path, *figures, *gap_paths, *distance_paths, report]
