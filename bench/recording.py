"""bench: what recording one job in MLflow costs the driver, batched against one call a metric.

    python bench/recording.py [--jobs 100] [--epochs 20] [--metrics 5] [--uri sqlite:///…]

Both ways go through raysweep's own tracker (the driver's only MLflow writer): a run per job
with its axes and flat recipe params, ``epochs`` evaluations of ``metrics`` values, then the
run is closed. "batched" logs each evaluation's metrics in one ``log_batch`` call (what the
recorder does) and a source's or probe's whole history in one; "per metric" logs every value
with its own ``log_metric`` call, as the driver did for probe curves before. Prints
milliseconds per job and the ratio; a fresh SQLite store in a temporary folder unless --uri.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from raysweep.driver.tracker import SweepTracker
from raysweep.plan import make_plan
from raysweep.spec import load_spec

ROOT = Path(__file__).resolve().parents[1]


def record(tracker: SweepTracker, job: object, epochs: int, metrics: int, batched: bool) -> float:
    """Seconds to record one job's run."""
    started = time.perf_counter()
    run_id = tracker.start_job(job)  # type: ignore[arg-type]
    rows = [(e, {f"test/m{i}": e + i / 10 for i in range(metrics)}) for e in range(1, epochs + 1)]
    if batched:
        tracker.log_steps(run_id, rows)
    else:
        for step, values in rows:
            for name, value in values.items():
                tracker.client.log_metric(run_id, name, value, step=step)
    tracker.end_job(run_id)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--metrics", type=int, default=5)
    parser.add_argument("--uri", default=None, help="tracking URI (default: a new SQLite file)")
    args = parser.parse_args()
    jobs = list(make_plan(load_spec(ROOT / "search_spaces" / "quickstart.yaml")).jobs["finetune"])
    with tempfile.TemporaryDirectory(prefix="bench-recording-") as tmp:
        uri = args.uri or f"sqlite:///{Path(tmp) / 'mlflow.db'}"
        tracker = SweepTracker(uri, "bench-recording", Path(tmp) / "artifacts", "bench")
        tracker.open_parent(ROOT / "search_spaces" / "quickstart.yaml")
        costs: dict[str, list[float]] = {"batched": [], "per metric": []}
        for i in range(args.jobs):  # alternate, so both ways see the same database size
            job = jobs[i % len(jobs)]
            for way in costs:
                seconds = record(tracker, job, args.epochs, args.metrics, way == "batched")
                costs[way].append(seconds)
    per_job = {way: statistics.median(c) * 1000 for way, c in costs.items()}
    print(
        f"recording {args.epochs} epochs × {args.metrics} metrics per job, {args.jobs} jobs each "
        f"way, {'SQLite' if args.uri is None else args.uri}:"
    )
    for way, ms in per_job.items():
        print(f"  {way:<11} {ms:8.1f} ms per job (median)")
    batched, single = per_job["batched"], per_job["per metric"]
    print(
        f"bench: recording_batched_ms={batched:.1f} recording_per_metric_ms={single:.1f} "
        f"recording_x={single / batched:.1f}"
    )


if __name__ == "__main__":
    main()
