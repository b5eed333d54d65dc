"""Figures and tables of a sweep, saved to a folder and logged on the sweep's parent run.

Used at the end of ``raysweep launch`` and by ``raysweep analyze``, which redraws them at any
time, also while the sweep is still running (only FINISHED runs are used).
"""

from __future__ import annotations

from pathlib import Path

from mlflow import MlflowClient

from raysweep.driver.progress import Write, writer
from raysweep.driver.tracker import SweepTracker
from raysweep.schema import (
    ROLE_TAG,
    SWEEP_ROLE,
    TrackingError,
    check_reachable,
    iter_runs,
    store_exists,
    sweep_experiment,
)
from raysweep.sweepdir import SweepDir


def publish(client: MlflowClient, parent_id: str, paths: list[Path], out_dir: Path) -> None:
    """Log every written file on the parent run under ``report/`` (sub-folders kept)."""
    for path in paths:
        relative = path.parent.relative_to(out_dir)
        folder = "report" if str(relative) == "." else f"report/{relative.as_posix()}"
        client.log_artifact(parent_id, str(path), artifact_path=folder)


def parent_run_id(client: MlflowClient, sweep: str, recorded: str | None) -> str:
    """The sweep's parent run: the one ``sweep.json`` names, else the run tagged role=sweep."""
    if recorded:
        return recorded
    parents = f"tags.`{ROLE_TAG}` = '{SWEEP_ROLE}'"
    for run in iter_runs(client, sweep_experiment(client, sweep), parents, page_size=1):
        return str(run.info.run_id)
    raise TrackingError(f"sweep '{sweep}' has no parent run in MLflow: launch it first")


def analyze(
    sweep: SweepDir,
    out_dir: Path | None = None,
    tracking_uri: str | None = None,
    write: Write | None = None,
    sharey: bool = False,
) -> list[Path]:
    """``raysweep analyze``: draw every family the sweep supports into ``out_dir`` (default: the
    sweep's report folder), log the files on its parent run, say what was not drawn and why."""
    from raysweep.analysis.report import NothingToAnalyze, analyze_sweep
    from raysweep.analysis.sweepdata import FigureOptions

    write = writer(write)
    uri = sweep.tracking_uri(tracking_uri)
    check_reachable(uri)
    if not store_exists(uri):  # opening a missing SQLite store would create it: nothing ran
        raise NothingToAnalyze(
            f"sweep {sweep.name!r} has no finished runs yet: run `raysweep status {sweep.name}`"
        )
    out = Path(out_dir) if out_dir is not None else sweep.report_dir
    report = analyze_sweep(
        uri,
        sweep.name,
        out,
        progress=lambda line: write(f"[analyze] {line}"),
        options=FigureOptions(sharey=sharey),
        cache_dir=sweep.runs_cache_dir,  # keyed by store and experiment: any --tracking-uri
        ledger_file=sweep.ledger_file,
    )
    client = MlflowClient(uri)
    parent = parent_run_id(client, sweep.name, sweep.read_state().get("parent_run_id"))
    publish(client, parent, report.paths, out)
    for reason in report.skipped.values():
        write(f"[analyze] not drawn: {reason}")
    write(
        f"[analyze] {len(report.paths)} files in {out} (also on the sweep's MLflow run); "
        f"open {out / 'report.md'}"
    )
    return report.paths


def report_sweep(tracker: SweepTracker, sweep: SweepDir, write: Write) -> list[Path]:
    """The last stage of a launch: the report under the sweep folder, on the parent run."""
    from raysweep.analysis.report import NothingToAnalyze, analyze_sweep

    try:
        report = analyze_sweep(
            tracker.uri,
            sweep.name,
            sweep.report_dir,
            cache_dir=sweep.runs_cache_dir,
            ledger_file=sweep.ledger_file,
        )
    except NothingToAnalyze as reason:
        write(f"[report] skipped: {reason}")
        return []
    assert tracker.parent_id is not None
    publish(tracker.client, tracker.parent_id, report.paths, sweep.report_dir)
    write(
        f"[report] {len(report.paths)} files in {sweep.report_dir} (also on the sweep's MLflow "
        f"run); {len(report.drawn)} figure families drawn, {len(report.skipped)} not supported "
        "by this sweep's data (see report.md)"
    )
    return report.paths
