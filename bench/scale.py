"""bench: what reading a large finished sweep costs — status, a relaunch, analyze (issue #18).

    python bench/scale.py [--sizes 14400 100000] [--server] [--root DIR] [--keep]

For each size, builds a sweep of that many finished fine-tune jobs in raysweep's own layout —
the spec copy, ``sweep.json``, an MLflow SQLite store with the parent run and one FINISHED run
per job (the tags and params the driver's tracker writes, three metrics at one epoch), and the
job ledger as the driver leaves it — by bulk inserts through MLflow's own table models
(≈1 minute for 100,000 jobs), not by running trials. Then it times, each as the user runs it (a
fresh ``raysweep`` process; wall time, peak RSS from ``wait4``):

- ``status``;
- a relaunch of the same spec with nothing to do (no Ray is started);
- ``analyze`` fresh (no run cache: every run listed) and again (only the runs ended since);
- with ``--server``, the same through a local ``mlflow server`` on the same database (one
  worker), the sweep recorded under its http:// URI.

Last line: ``scale: status_s= relaunch_s= analyze_s= analyze_again_s= growth= driver_mib=``
for the largest size on SQLite (``growth``: its status time over the smallest size's).
Goals on this 2-core machine at 100,000 jobs: status ≤ 3 s, relaunch ≤ 30 s, incremental
analyze ≤ 10 s, growth ≤ 2×, driver ≤ 2 GiB.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml

from raysweep.driver.ledger_sync import store_identity
from raysweep.driver.tracker import SweepTracker, job_params
from raysweep.ledger import FINISHED, Entry, Ledger
from raysweep.plan import Job, make_plan
from raysweep.spec import load_spec
from raysweep.sweepdir import SweepDir

ROOT = Path(__file__).resolve().parents[1]
#: 2 sources × 3 targets × 2 subset sizes = 12 cells; the seeds make up the size.
CELLS = 12


def scale_spec(name: str, jobs: int) -> dict[str, Any]:
    """A spec of ``jobs`` (rounded up to a multiple of 12) near-zero-work fine-tunes."""
    source = {"architecture": "small_cnn", "dataset": "shapes"}
    return {
        "name": name,
        "sources": [
            {"name": "natural", **source, "training": {"kind": "natural"}},
            {
                "name": "l2_0.25",
                **source,
                "training": {"kind": "pgd", "norm": "l2", "eps": 0.25, "steps": 1},
            },
        ],
        "pretrain": {"epochs": 1, "optimizer": {"lr": 0.05, "batch_size": 128}},
        "targets": ["shapes_outline", "textures", "digits"],
        "subset_sizes": [100, 400],
        "seeds": -(-jobs // CELLS),
        "blocks": [0],
        "finetune": {"optimizer": {"lr": 0.05}, "rules": [{"up_to": "all", "epochs": 1}]},
        "probes": [],
    }


def chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def bulk_insert(uri: str, experiment_id: str, tracker: SweepTracker, jobs: list[Job]) -> None:
    """One FINISHED run per job, straight into the store's tables (MLflow's own models)."""
    from mlflow.store.tracking.dbmodels.models import (
        SqlLatestMetric,
        SqlMetric,
        SqlParam,
        SqlRun,
        SqlTag,
    )
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
    from sqlalchemy import insert

    store = SqlAlchemyStore(uri, str(Path(tempfile.gettempdir()) / "scale-artifacts"))
    # Ended one after another over the sweep's last hours, the last ten minutes ago: what a
    # finished sweep looks like when someone asks about it.
    now = int(time.time() * 1000) - 10 * 60 * 1000 - len(jobs) * 10
    with store.ManagedSessionMaker() as session:
        for part in chunks(jobs, 2000):
            runs, tags, params, metrics = [], [], [], []
            for job in part:
                run_id = uuid.uuid4().hex
                now += 10
                runs.append(run_row(run_id, experiment_id, job, now))
                tags += [
                    {"key": k, "value": v, "run_uuid": run_id}
                    for k, v in tracker.job_tags(job).items()
                ]
                params += [
                    {"key": k, "value": v, "run_uuid": run_id} for k, v in job_params(job).items()
                ]
                metrics += metric_rows(run_id, job, now)
                job.config["_run_id"], job.config["_end"] = run_id, now
            session.execute(insert(SqlRun), runs)
            session.execute(insert(SqlTag), tags)
            session.execute(insert(SqlParam), params)
            session.execute(insert(SqlMetric), metrics)
            latest = [{k: m[k] for k in m if k != "run_id"} for m in metrics]
            session.execute(insert(SqlLatestMetric), latest)
    store.engine.dispose()


def run_row(run_id: str, experiment_id: str, job: Job, ended: int) -> dict[str, Any]:
    return {
        "run_uuid": run_id,
        "name": job.name,
        "source_type": "LOCAL",
        "source_name": "raysweep",
        "entry_point_name": "",
        "user_id": "bench",
        "status": FINISHED,
        "start_time": ended - 5,
        "end_time": ended,
        "source_version": "",
        "lifecycle_stage": "active",
        "artifact_uri": f"file:///tmp/scale-artifacts/{run_id}",
        "experiment_id": int(experiment_id),
    }


def metric_rows(run_id: str, job: Job, ended: int) -> list[dict[str, Any]]:
    seed = int(job.config.get("seed", 0))
    values = {"test/acc": 50 + seed % 40, "train/acc": 60 + seed % 30, "train/loss": 0.5}
    return [
        {
            "key": k,
            "value": float(v),
            "timestamp": ended,
            "step": 1,
            "is_nan": False,
            "run_uuid": run_id,
        }
        for k, v in values.items()
    ]


def build_sweep(root: Path, name: str, jobs: int, server_uri: str | None) -> SweepDir:
    """A finished sweep of ``jobs`` fine-tunes under ``root``, as a launch would leave it."""
    started = time.monotonic()
    sweep = SweepDir(root, name)
    sweep.create()
    sweep.spec_copy.write_text(yaml.safe_dump(scale_spec(name, jobs), sort_keys=False))
    plan = make_plan(load_spec(sweep.spec_copy), max_jobs=None)
    sqlite_uri = sweep.default_tracking_uri()
    tracker = SweepTracker(sqlite_uri, name, sweep.artifact_root, "bench")
    parent = tracker.open_parent(sweep.spec_copy)
    tracker.log_sweep(plan)
    tracker.finish_parent(FINISHED)
    every = [job for jobs in plan.jobs.values() for job in jobs]  # the sources too
    bulk_insert(sqlite_uri, tracker.experiment_id, tracker, every)
    uri = server_uri or sqlite_uri
    sweep.write_state({"name": name, "tracking_uri": uri, "parent_run_id": parent})
    with Ledger(sweep.ledger_file) as ledger:
        ledger.reset(store_identity(uri, tracker.experiment_id))
        ledger.set_planned({stage: len(jobs) for stage, jobs in plan.jobs.items()})
        ledger.write(
            Entry(j.key, j.stage, j.name, FINISHED, j.config["_run_id"], None, j.config["_end"])
            for j in every
        )
    print(f"  built {len(every):,} finished jobs in {time.monotonic() - started:.1f} s")
    return sweep


def timed(args: list[str]) -> tuple[float, float, str]:
    """Wall seconds, peak RSS (MiB) and output of one ``raysweep`` command."""
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", "raysweep.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    output = process.stdout.read() if process.stdout else ""
    _, code, usage = os.wait4(process.pid, 0)
    seconds = time.monotonic() - started
    process.returncode = os.waitstatus_to_exitcode(code)
    if process.returncode not in (0, 1):
        raise RuntimeError(f"raysweep {' '.join(args)} exited {process.returncode}:\n{output}")
    return seconds, usage.ru_maxrss / 1024, output


def measure(sweep: SweepDir) -> dict[str, float]:
    """The four timings of one sweep, and the largest driver RSS among them."""
    root = ["--root", str(sweep.root)]
    figures: dict[str, float] = {}
    rss = []
    status_s, mib, _ = timed(["status", sweep.name, *root])
    figures["status_s"] = status_s
    rss.append(mib)
    shutil.rmtree(sweep.runs_cache_dir, ignore_errors=True)
    figures["analyze_s"], mib, _ = timed(["analyze", sweep.name, *root])
    rss.append(mib)
    figures["analyze_again_s"], mib, _ = timed(["analyze", sweep.name, *root])
    rss.append(mib)
    figures["relaunch_s"], mib, out = timed(["launch", str(sweep.spec_copy), *root])
    rss.append(mib)
    if "nothing to do" not in out:
        raise RuntimeError(f"the relaunch found work to do:\n{out[-2000:]}")
    figures["driver_mib"] = max(rss)
    return figures


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def with_server(db: Path, run: Any) -> dict[str, float]:
    """Run ``run(uri)`` against a local ``mlflow server`` on ``db`` (one worker); stop it."""
    port = free_port()
    mlflow = Path(sys.executable).with_name("mlflow")
    server = subprocess.Popen(
        [
            str(mlflow),
            "server",
            "--backend-store-uri",
            f"sqlite:///{db}",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.5)
        return run(uri)
    finally:
        server.terminate()
        server.wait(timeout=30)


def line(label: str, figures: dict[str, float]) -> str:
    return f"{label}: " + " ".join(f"{k}={v:.1f}" for k, v in figures.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[14_400, 100_000])
    parser.add_argument("--server", action="store_true", help="also through `mlflow server`")
    parser.add_argument("--root", type=Path, default=None, help="keep the sweeps here")
    args = parser.parse_args()
    root = args.root or Path(tempfile.mkdtemp(prefix="raysweep-scale-"))
    results: dict[int, dict[str, float]] = {}
    for size in args.sizes:
        print(f"{size:,} jobs, SQLite:")
        sweep = build_sweep(root, f"scale{size}", size, None)
        results[size] = measure(sweep)
        print("  " + line("sqlite", results[size]))
        if args.server:
            print(f"{size:,} jobs, through a local mlflow server:")
            name = f"scale{size}http"

            def run(uri: str, size: int = size, name: str = name) -> dict[str, float]:
                sweep = build_sweep(root, name, size, uri)
                return measure(sweep)

            figures = with_server(root / name / "mlflow.db", run)
            print("  " + line("server", figures))
    if args.root is None:
        shutil.rmtree(root, ignore_errors=True)
    largest, smallest = results[max(results)], results[min(results)]
    growth = largest["status_s"] / max(smallest["status_s"], 1e-9)
    summary = {k: largest[k] for k in ("status_s", "relaunch_s", "analyze_s", "analyze_again_s")}
    print(
        "scale: "
        + " ".join(f"{k}={v:.1f}" for k, v in summary.items())
        + f" growth={growth:.2f} driver_mib={largest['driver_mib']:.0f}"
    )
    print(json.dumps({str(k): v for k, v in results.items()}))


if __name__ == "__main__":
    main()
