"""The last stage of a launch: figures and tables, saved and logged on the parent run."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from raysweep.sweepdir import SweepDir
from raysweep.tracking import SweepTracker


def report_sweep(
    tracker: SweepTracker, sweep: SweepDir, write: Callable[[str], None]
) -> list[Path]:
    """Write the report under the sweep folder and attach every file to the parent run."""
    from raysweep.analysis.report import NothingToAnalyze, write_sweep_report

    try:
        paths = write_sweep_report(tracker.uri, sweep.name, sweep.report_dir)
    except NothingToAnalyze as reason:
        write(f"[report] skipped: {reason}")
        return []
    assert tracker.parent_id is not None
    for path in paths:
        relative = path.parent.relative_to(sweep.report_dir)
        folder = "report" if str(relative) == "." else f"report/{relative}"
        tracker.client.log_artifact(tracker.parent_id, str(path), artifact_path=folder)
    write(f"[report] {len(paths)} files in {sweep.report_dir} (also on the sweep's MLflow run)")
    return paths
