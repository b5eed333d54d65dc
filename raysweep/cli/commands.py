"""What each ``raysweep`` subcommand does: parse nothing, call the API, print, return the exit
status (0 ok, 1 jobs failed, 2 a user error raised to :func:`raysweep.cli.main`)."""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import time
from typing import TYPE_CHECKING

from raysweep.schema import TrackingError, store_exists
from raysweep.sweepdir import SweepDir, resolve_root

if TYPE_CHECKING:
    from raysweep.driver.context import Outcome


def overrides_of(args: argparse.Namespace) -> list[str]:
    return list(getattr(args, "overrides", None) or [])


def cmd_plan(args: argparse.Namespace) -> int:
    from raysweep.plan import describe_plan, make_plan
    from raysweep.spec import load_spec

    plan = make_plan(load_spec(args.spec, overrides_of(args)), max_jobs=args.max_jobs)
    print(describe_plan(plan))
    if args.estimate:
        from raysweep.estimate import estimate_report

        print(estimate_report(plan, args.root))
    return 0


def report_outcome(outcome: Outcome) -> int:
    print(f"sweep '{outcome.sweep}' finished:")
    print(outcome.summary())
    for stage, failures in outcome.failed.items():
        for failure in failures:
            print(f"  FAILED {stage}: {failure}")
    return 0 if outcome.ok else 1


def cmd_launch(args: argparse.Namespace) -> int:
    from raysweep.driver.launcher import launch

    return report_outcome(
        launch(
            args.spec,
            name=args.name,
            address=args.address,
            tracking_uri=args.tracking_uri,
            root=args.root,
            retry_failed=args.retry_failed,
            extend=args.extend,
            switch_tracking_uri=args.switch_tracking_uri,
            max_jobs=args.max_jobs,
            overrides=overrides_of(args),
            write=None,
        )
    )


def cmd_resume(args: argparse.Namespace) -> int:
    from raysweep.driver.launcher import resume

    outcome = resume(
        args.name, address=args.address, root=args.root, retry_failed=args.retry_failed, write=None
    )
    return report_outcome(outcome)


def sweep_dir(args: argparse.Namespace) -> SweepDir:
    return SweepDir(resolve_root(args.root), args.name)


def cmd_status(args: argparse.Namespace) -> int:
    """Exit 0 when no job failed, 1 when some did (scripts can wait on it). With ``--watch``,
    redraw every few seconds until nothing is pending or running."""
    from raysweep.driver.status import sweep_status

    sweep = sweep_dir(args)
    while True:
        status = sweep_status(sweep)
        if args.watch and sys.stdout.isatty():
            print("\033[2J\033[H", end="")  # clear the terminal, cursor home
        stamp = f"\n  (as of {time.strftime('%H:%M:%S')})" if args.watch else ""
        print(status.render() + stamp)
        if not args.watch or status.finished:
            return 0 if status.ok else 1
        time.sleep(args.watch)


def cmd_list(args: argparse.Namespace) -> int:
    """Every sweep under the runs root, with its store and its jobs per state."""
    from raysweep.driver.status import sweep_status

    root = resolve_root(args.root)
    names = sorted(p.parent.name for p in root.glob("*/sweep.json"))
    if not names:
        print(f"no sweeps under {root} (launch one, or pass --root)")
        return 0
    print(f"sweeps under {root}:")
    print(f"  {'name':<28}{'done':>8}{'running':>9}{'failed':>8}{'pending':>9}  tracking")
    for name in names:
        sweep = SweepDir(root, name)
        totals = sweep_status(sweep).totals()
        widths = {"done": 8, "running": 9, "failed": 8, "pending": 9}
        cells = "".join(f"{totals[state]:>{width},}" for state, width in widths.items())
        print(f"  {name:<28}{cells}  {sweep.tracking_uri()}")
    return 0


def cmd_checkpoints(args: argparse.Namespace) -> int:
    from raysweep.models.sources import PUBLISHED

    root = args.data_root or "<data_root>"
    print(f"published source models (put the file in {root}/checkpoints/):")
    for entry in PUBLISHED.values():
        eps = f"{entry.eps * 255:g}/255" if entry.norm == "linf" else f"{entry.eps:g}"
        robustness = f"{entry.norm} ε={eps}" if entry.norm else "natural"
        print(
            f"  {entry.ref:<28} {entry.architecture:<15} {entry.dataset:<9} {robustness:<14} "
            f"{entry.file}"
        )
        print(f"  {'':<28} {entry.download_url}")
    return 0


def cmd_analyze(args: argparse.Namespace) -> int:
    from raysweep.driver.report import analyze

    analyze(sweep_dir(args), args.out, args.tracking_uri, sharey=args.sharey)
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    """The JSON Schema of a spec, for editors (``# yaml-language-server: $schema=…``)."""
    from raysweep.spec import spec_json_schema

    print(json.dumps(spec_json_schema(), indent=2, sort_keys=True))
    return 0


def port_problem(port: int) -> str | None:
    """Why the UI cannot listen on 127.0.0.1:``port``, or None when it can."""
    if not 1 <= port <= 65535:
        return f"--port {port} is not a TCP port (1-65535)"
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as error:
            return f"port {port} on 127.0.0.1 is not free ({error.strerror}); pass another --port"
    return None


def cmd_ui(args: argparse.Namespace) -> int:
    sweep = sweep_dir(args)
    uri = sweep.tracking_uri()
    if not uri.startswith("sqlite"):
        print(f"sweep '{args.name}' is tracked on {uri}: open that address in a browser")
        return 0
    if not store_exists(uri):
        raise TrackingError(
            f"sweep '{args.name}' has no tracking store yet ({uri}); launch it first"
        )
    problem = port_problem(args.port)
    if problem:
        raise TrackingError(problem)
    command = [
        sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri,
        "--host", "127.0.0.1", "--port", str(args.port),
        "--default-artifact-root", sweep.artifact_root.as_uri(),
        "--workers", "1",  # MLflow's default pool is 4 processes: one browser needs one
    ]  # fmt: skip
    print(f"MLflow UI for '{args.name}': {runs_url(uri, args.name, args.port)} (Ctrl-C to stop)")
    return subprocess.call(command)


def runs_url(tracking_uri: str, sweep: str, port: int) -> str:
    """The address of the sweep's runs in the UI (its experiment page), read without writing."""
    from mlflow import MlflowClient

    from raysweep.schema import sweep_experiment

    base = f"http://127.0.0.1:{port}"
    experiment = sweep_experiment(MlflowClient(tracking_uri), sweep)
    return f"{base}/#/experiments/{experiment[0]}/runs" if experiment else base


def sweep_name_of(args: argparse.Namespace) -> str:
    """The sweep a command was working on, for the resume hint."""
    if getattr(args, "name", None):
        return str(args.name)
    try:
        from raysweep.spec import load_spec

        return load_spec(args.spec, overrides_of(args)).name
    except Exception:
        return "NAME"
