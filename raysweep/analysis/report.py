"""One report per sweep: fetch the runs once, draw every figure family the data supports.

``write_sweep_report`` is what ``raysweep analyze`` and the end of ``raysweep launch`` call. It
works on a partial sweep: cells without runs stay missing (NaN in the CSVs, an en dash in the
Markdown), never zero, and runs that are not FINISHED are counted, not used. A family the sweep
cannot feed (no distance probes, one blocks value, ...) is listed under "Not drawn" with why.

``report.md`` travels: it is logged on the sweep's MLflow run and copied between machines, so
it holds no absolute path of the machine that wrote it — links are relative to the report
folder, and a local tracking store is named relative to it too.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pandas as pd

from raysweep.analysis.convergence import convergence_section
from raysweep.analysis.families import FAMILIES, Family
from raysweep.analysis.labels import eps_text, label_of, norm_symbol, source_labels
from raysweep.analysis.results import NothingToAnalyze, cache_results, default_cache_path
from raysweep.analysis.stats import subset_order
from raysweep.analysis.sweepdata import FigureOptions, NotSupported, SweepData, link
from raysweep.analysis.tables import MISSING, markdown_table

CELL = ["source", "target", "subset_size", "blocks"]

__all__ = ["FigureOptions", "NothingToAnalyze", "Report", "analyze_sweep", "write_sweep_report"]


@dataclass
class Report:
    """What one analysis wrote: every path (``report.md`` last), drawn and skipped families."""

    paths: list[Path] = field(default_factory=list)
    drawn: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)


def _local_store(tracking_uri: str) -> tuple[str, str] | None:
    """(kind, path) of a tracking store on this machine's disk; None for a server."""
    if tracking_uri.startswith("sqlite:///"):
        return "SQLite", tracking_uri[len("sqlite:///") :]  # "/abs/x.db" or "rel/x.db"
    if tracking_uri.startswith("file:"):
        return "file", urlsplit(tracking_uri).path
    if "://" not in tracking_uri:
        return "file", tracking_uri  # MLflow takes a bare path as a file store
    return None


def tracking_text(tracking_uri: str, out_dir: Path) -> str:
    """How ``report.md`` names the tracking store: a local store by its path relative to the
    report folder, a server by its address without user or password."""
    local = _local_store(tracking_uri)
    if local is not None:
        kind, path = local
        relative = os.path.relpath(Path(path).resolve(), Path(out_dir).resolve())
        return f"local {kind} store `{Path(relative).as_posix()}` (relative to this report)"
    parts = urlsplit(tracking_uri)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return f"`{urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))}`"


def _coverage_section(df: pd.DataFrame, unfinished: dict[str, int]) -> str:
    labels = source_labels(df)
    sources = df.drop_duplicates("source").set_index("source")
    rows = [
        [
            label_of(labels, name),
            name,
            str(sources.loc[name, "source_training"]),
            norm_symbol(sources.loc[name].get("source_norm")) or MISSING,
            eps_text(sources.loc[name].get("source_eps"), sources.loc[name].get("source_norm")),
            str(int((df["source"] == name).sum())),
        ]
        for name in labels
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
    header = ["source (as shown)", "name in the spec", "training", "norm", "ε", "runs"]
    return "## Coverage\n\n" + "\n".join(lines) + "\n\n" + markdown_table(header, rows)


def _stage_counts(data: SweepData) -> dict[str, int]:
    return {stage: len(data.stage_runs(stage)) for stage in ("pretrain", "probe", "finetune")}


def _not_drawn_section(skipped: dict[str, str]) -> str:
    lines = "\n".join(f"- `{name}`: {reason}" for name, reason in skipped.items())
    intro = "The sweep holds no data for these figure families, and what would feed them:"
    return f"## Not drawn\n\n{intro}\n\n{lines}"


def analyze_sweep(
    tracking_uri: str,
    sweep: str,
    out_dir: Path,
    families: Sequence[tuple[str, Family]] = FAMILIES,
    progress: Callable[[str], None] | None = None,
    options: FigureOptions | None = None,
    cache_dir: Path | None = None,
    ledger_file: Path | None = None,
) -> Report:
    """Draw every family of ``families`` that the sweep's finished runs support into ``out_dir``.

    Writes the fine-tuning run cache (``finetune_runs.parquet``, ``.csv`` without pyarrow), each
    family's figures (PNG + PDF) and tables (CSV + Markdown), and ``report.md`` linking them all.
    ``options`` says how to draw (e.g. ``FigureOptions(sharey=True)``: one y-axis per figure).
    With ``cache_dir`` the runs fetched are kept there and a later call fetches only new ones
    (:mod:`raysweep.analysis.runcache`; ``ledger_file``, the sweep's job ledger, names the
    runs it must hold).
    Raises :class:`NothingToAnalyze` (writing nothing) when the sweep has no finished run of any
    stage.
    """
    out_dir = Path(out_dir)
    data = SweepData(tracking_uri, sweep, options, cache_dir, ledger_file)
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
        f"# Sweep `{sweep}`: results\n\nTracking: {tracking_text(tracking_uri, out_dir)}, "
        f"generated {stamp}. "
        f"Finished runs: {runs}."
    ]
    if not data.finetune.empty:
        cache = default_cache_path(out_dir)
        cache_results(data.finetune, cache)
        report.paths.append(cache)
        sections[0] += f" Fine-tuning run cache: [{cache.name}]({link(cache, out_dir)})."
        sections.append(_coverage_section(data.finetune, data.unfinished))
    converged = convergence_section({"finetune": data.finetune})
    if converged:
        sections.append(converged)
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


def write_sweep_report(
    tracking_uri: str, sweep: str, out_dir: Path, options: FigureOptions | None = None
) -> list[Path]:
    """:func:`analyze_sweep` with every family; returns the paths written, ``report.md`` last."""
    return analyze_sweep(tracking_uri, sweep, out_dir, options=options).paths
