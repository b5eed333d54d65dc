"""One report per sweep: fetch the runs once, draw every figure family the data supports.

``write_sweep_report`` is what ``raysweep analyze`` and the end of ``raysweep launch`` call. It
works on a partial sweep: cells without runs stay missing (NaN in the CSVs, an en dash in the
Markdown), never zero, and runs that are not FINISHED are counted, not used. A family the sweep
cannot feed (no distance probes, one blocks value, ...) is listed under "Not drawn" with why.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from raysweep.analysis.families import FAMILIES, Family
from raysweep.analysis.results import NothingToAnalyze, cache_results, default_cache_path
from raysweep.analysis.stats import subset_order
from raysweep.analysis.sweepdata import NotSupported, SweepData, link
from raysweep.analysis.tables import format_eps, markdown_table

CELL = ["source", "target", "subset_size", "blocks"]

__all__ = ["NothingToAnalyze", "Report", "analyze_sweep", "write_sweep_report"]


@dataclass
class Report:
    """What one analysis wrote: every path (``report.md`` last), drawn and skipped families."""

    paths: list[Path] = field(default_factory=list)
    drawn: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)


def _coverage_section(df: pd.DataFrame, unfinished: dict[str, int]) -> str:
    sources = df.drop_duplicates("source").sort_values("source")
    rows = [
        [
            str(r["source"]),
            str(r["source_training"]),
            str(r.get("source_norm") or "–"),
            format_eps(r.get("source_norm"), r.get("source_eps")),
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


def _stage_counts(data: SweepData) -> dict[str, int]:
    return {stage: len(data.stage_runs(stage)) for stage in ("pretrain", "probe", "finetune")}


def _not_drawn_section(skipped: dict[str, str]) -> str:
    lines = [f"- `{name}`: {reason}" for name, reason in skipped.items()]
    return "## Not drawn\n\nThe sweep holds no data for these figure families:\n\n" + "\n".join(
        lines
    )


def analyze_sweep(
    tracking_uri: str,
    sweep: str,
    out_dir: Path,
    families: Sequence[tuple[str, Family]] = FAMILIES,
    progress: Callable[[str], None] | None = None,
) -> Report:
    """Draw every family of ``families`` that the sweep's finished runs support into ``out_dir``.

    Writes the fine-tuning run cache (``finetune_runs.parquet``, ``.csv`` without pyarrow), each
    family's figures (PNG + PDF) and tables (CSV + Markdown), and ``report.md`` linking them all.
    Raises :class:`NothingToAnalyze` (writing nothing) when the sweep has no finished run of any
    stage.
    """
    out_dir = Path(out_dir)
    data = SweepData(tracking_uri, sweep)
    counts = _stage_counts(data)
    if not any(counts.values()):
        raise NothingToAnalyze(
            f"sweep {sweep!r} has no finished runs yet: run `raysweep status {sweep}`"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    report = Report()
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    runs = ", ".join(f"{stage} {n}" for stage, n in counts.items())
    sections = [
        f"# Sweep `{sweep}`: results\n\nTracking URI `{tracking_uri}`, generated {stamp}. "
        f"Finished runs: {runs}."
    ]
    if not data.finetune.empty:
        cache = default_cache_path(out_dir)
        cache_results(data.finetune, cache)
        report.paths.append(cache)
        sections[0] += f" Fine-tuning run cache: [{cache.name}]({link(cache, out_dir)})."
        sections.append(_coverage_section(data.finetune, data.unfinished))
    for name, family in families:
        try:
            section = family(data, out_dir)
        except NotSupported as reason:
            report.skipped[name] = str(reason)
            continue
        report.drawn.append(name)
        report.paths += section.paths
        sections.append(section.markdown())
        if progress is not None:
            progress(f"{name}: {len(section.paths)} files")
    if report.skipped:
        sections.append(_not_drawn_section(report.skipped))
    path = out_dir / "report.md"
    path.write_text("\n\n".join(sections) + "\n", encoding="utf-8")
    report.paths.append(path)
    return report


def write_sweep_report(tracking_uri: str, sweep: str, out_dir: Path) -> list[Path]:
    """:func:`analyze_sweep` with every family; returns the paths written, ``report.md`` last."""
    return analyze_sweep(tracking_uri, sweep, out_dir).paths
