"""What every figure family reads: a sweep's runs as frames, fetched once, and the family contract.

A *figure family* is a function ``(data: SweepData, out_dir: Path) -> Section``: it draws one
kind of figure or table from the runs of one sweep, writes its files (PNG + PDF figures, CSV +
Markdown tables) under ``out_dir`` and returns the report section that links them. When the
sweep holds nothing the family can draw (no distance probes, a single blocks value, ...) it
raises :class:`NotSupported` with the reason; the report lists it under "Not drawn".

Frames are fetched lazily through MLflow's client, so a family that is not supported costs
one query at most, and shared by every family of one ``raysweep analyze`` call. How figures are
drawn (:class:`FigureOptions`, e.g. one y-axis shared by all panels) rides along on the data,
so that the family contract stays ``(data, out_dir)``.

A :class:`NotSupported` reason is read by users in the report's "Not drawn" list: it says what
to add to the spec or the sweep in their terms (a probe, a second blocks value), never a
column name of the frames.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import pandas as pd
from mlflow import MlflowClient
from mlflow.artifacts import download_artifacts

from raysweep.analysis.convergence import with_linear_probe
from raysweep.analysis.results import count_unfinished, metric_history, sweep_runs
from raysweep.analysis.runcache import RunCache

#: Columns a fine-tuning run needs to be placed in the grid at all.
FINETUNE_REQUIRED = ("source", "source_training", "target", "subset_size", "blocks")
NO_FINETUNE_RUNS = "the sweep has no finished fine-tuning runs yet"


class NotSupported(Exception):
    """A figure family has nothing to draw in this sweep; the message says what is missing."""


@dataclass
class Section:
    """One part of the report: a Markdown body whose links are relative to the report folder."""

    title: str
    body: str
    paths: list[Path] = field(default_factory=list)

    def markdown(self) -> str:
        return f"## {self.title}\n\n{self.body}"


@dataclass(frozen=True)
class FigureOptions:
    """How the families draw: ``sharey`` gives every panel of a figure that shows the same
    quantity one y-axis (default: each panel scales to its own data)."""

    sharey: bool = False


class SweepData:
    """A sweep's FINISHED runs per stage and their metric histories, fetched on first use."""

    def __init__(
        self,
        tracking_uri: str,
        sweep: str,
        options: FigureOptions | None = None,
        cache_dir: Path | None = None,
        ledger_file: Path | None = None,
    ) -> None:
        self.tracking_uri = tracking_uri
        self.sweep = sweep
        self.options = options or FigureOptions()
        self._histories: dict[tuple[str, str], pd.DataFrame] = {}
        #: With a folder, runs and histories are kept there and later fetches are incremental.
        self.cache = None
        if cache_dir is not None:
            self.cache = RunCache(cache_dir, tracking_uri, sweep, ledger_file)

    def fetch_runs(self, stage: str) -> pd.DataFrame:
        """The stage's FINISHED runs: from the cache plus what is new, or all from MLflow."""
        if self.cache is not None:
            return self.cache.runs(stage)
        return sweep_runs(self.tracking_uri, self.sweep, stage=stage)

    @cached_property
    def client(self) -> MlflowClient:
        return MlflowClient(self.tracking_uri)

    @cached_property
    def finetune(self) -> pd.DataFrame:
        """Finished fine-tuning runs placed in the grid (see :func:`sweep_runs`), each with the
        ``linear_acc`` of the linear probe on its subset (:func:`with_linear_probe`)."""
        df = self.fetch_runs("finetune")
        df = df.dropna(subset=[c for c in FINETUNE_REQUIRED if c in df.columns])
        return with_linear_probe(df, self.probes) if not df.empty else df

    @cached_property
    def probes(self) -> pd.DataFrame:
        """Finished probe runs: a ``probe`` column names the probe, metrics as ``probe_*``."""
        return self.fetch_runs("probe")

    @cached_property
    def pretrain(self) -> pd.DataFrame:
        """Finished source runs (training or import), one per source."""
        return self.fetch_runs("pretrain")

    @cached_property
    def unfinished(self) -> dict[str, int]:
        """Fine-tuning runs not FINISHED, per status: counted in the report, never plotted."""
        return count_unfinished(self.tracking_uri, self.sweep, stage="finetune")

    def stage_runs(self, stage: str) -> pd.DataFrame:
        frames = {"finetune": self.finetune, "probe": self.probes, "pretrain": self.pretrain}
        if stage not in frames:
            raise ValueError(f"unknown stage {stage!r}; valid: {', '.join(frames)}")
        return frames[stage]

    def history(self, stage: str, metric: str) -> pd.DataFrame:
        """Every logged value of ``metric`` for the stage's runs, one row per (run, step).

        Columns: the run's columns (axes, final metrics) plus ``step`` and ``value``. Steps are
        epochs for fine-tuning and pretraining, sample indices for probe curves.
        """
        cached = self._histories.get((stage, metric))
        if cached is None:
            runs = self.stage_runs(stage)
            run_ids = list(runs["run_id"])
            if self.cache is not None:
                values = self.cache.history(stage, metric, run_ids)
            else:
                values = metric_history(self.tracking_uri, run_ids, metric)
            cached = values.merge(runs, on="run_id", how="inner")
            self._histories[(stage, metric)] = cached
        return cached

    def artifact(self, run_id: str, path: str, dst: Path) -> Path:
        """Download one artifact of a run (file or folder) into ``dst``; return its local path.

        Works with every artifact store MLflow reaches (local folder, proxied server, S3).
        """
        dst.mkdir(parents=True, exist_ok=True)
        # One progress bar per file on stderr would drown the analysis' own output.
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        local = download_artifacts(
            run_id=run_id, artifact_path=path, dst_path=str(dst), tracking_uri=self.tracking_uri
        )
        return Path(local)


def require_columns(
    df: pd.DataFrame,
    columns: tuple[str, ...] | list[str],
    what: str,
    reason: str = NO_FINETUNE_RUNS,
) -> None:
    """Raise :class:`NotSupported` ``"<what>: <reason>"`` unless ``df`` has rows with every
    column present. ``reason`` is what the user reads: say what is missing in their terms
    (the columns are an implementation detail and stay out of the message)."""
    if df.empty or any(c not in df.columns for c in columns):
        raise NotSupported(f"{what}: {reason}")


def link(path: Path, out_dir: Path) -> str:
    """A report link: ``path`` relative to the report folder, with forward slashes."""
    return path.relative_to(out_dir).as_posix()


def figure_links(paths: list[Path], out_dir: Path) -> str:
    """Markdown that shows every PNG of ``paths`` inline, each followed by its PDF link."""
    parts = []
    for png in (p for p in paths if p.suffix == ".png"):
        pdf = png.with_suffix(".pdf")
        parts.append(f"![{png.stem}]({link(png, out_dir)})\n\n[PDF]({link(pdf, out_dir)})")
    return "\n\n".join(parts)


def file_links(paths: list[Path], out_dir: Path) -> str:
    """``[name](path)`` for every table file (CSV, Markdown, JSON) in ``paths``."""
    tables = [p for p in paths if p.suffix in (".csv", ".md", ".json", ".parquet")]
    return ", ".join(f"[{p.name}]({link(p, out_dir)})" for p in tables)


def write_tables(
    out_dir: Path, frames: dict[str, pd.DataFrame], texts: dict[str, str] | None = None
) -> list[Path]:
    """Write each frame as ``out_dir/<name>`` (CSV) and each text as ``out_dir/<name>``
    (Markdown, UTF-8); return the paths, frames first, in the order given."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, frame in frames.items():
        frame.to_csv(out_dir / name, index=False)
        paths.append(out_dir / name)
    for name, text in (texts or {}).items():
        (out_dir / name).write_text(text.rstrip() + "\n", encoding="utf-8")
        paths.append(out_dir / name)
    return paths


def compose_section(
    title: str, text: str, files: list[Path], figures: list[Path], shown: str, out_dir: Path
) -> Section:
    """A section: ``text`` ending with links to ``files``, the figures inline, then ``shown``
    (the family's main table in Markdown)."""
    intro = f"{text} Files: {file_links(files, out_dir)}." if files else text
    parts = [intro, figure_links(figures, out_dir), shown]
    return Section(title, "\n\n".join(p for p in parts if p), [*files, *figures])
