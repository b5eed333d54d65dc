"""The `raysweep` command: parses arguments, calls functions, maps errors to exit codes.

A user error prints one line (``raysweep: error: …``) and exits 2; so do a full disk, a
permission problem and an MLflow store that refuses (with the fix); ``--debug`` shows the
traceback instead. Ctrl-C and SIGTERM stop a launch and say how to resume it (exit 130).
"""

from __future__ import annotations

import argparse
import errno
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from raysweep.analysis.results import NothingToAnalyze
from raysweep.driver.cluster import ClusterError
from raysweep.plan.size import MAX_JOBS
from raysweep.schema import TrackingError, store_exists
from raysweep.spec import SpecError
from raysweep.sweepdir import SweepDir, SweepDirError, resolve_root

if TYPE_CHECKING:
    from raysweep.driver.context import Outcome

USER_ERRORS: tuple[type[BaseException], ...] = (
    SpecError,
    SweepDirError,
    TrackingError,
    ClusterError,
    FileNotFoundError,
    ValueError,
    NothingToAnalyze,
)


def cmd_plan(args: argparse.Namespace) -> int:
    from raysweep.plan import describe_plan, make_plan
    from raysweep.spec import load_spec

    plan = make_plan(load_spec(args.spec), max_jobs=args.max_jobs)
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
        )
    )


def cmd_resume(args: argparse.Namespace) -> int:
    from raysweep.driver.launcher import resume

    return report_outcome(
        resume(args.name, address=args.address, root=args.root, retry_failed=args.retry_failed)
    )


def sweep_dir(args: argparse.Namespace) -> SweepDir:
    return SweepDir(resolve_root(args.root), args.name)


def cmd_status(args: argparse.Namespace) -> int:
    """Exit 0 when no job failed, 1 when some did (scripts can wait on it)."""
    from raysweep.driver.status import sweep_status

    status = sweep_status(sweep_dir(args))
    print(status.render())
    return 0 if status.ok else 1


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
        sys.executable,
        "-m",
        "mlflow",
        "ui",
        "--backend-store-uri",
        uri,
        "--host",
        "127.0.0.1",
        "--port",
        str(args.port),
        "--default-artifact-root",
        sweep.artifact_root.as_uri(),
        "--workers",
        "1",  # MLflow's default pool is 4 processes: for one person's browser, one is plenty
    ]
    print(f"MLflow UI for '{args.name}': {runs_url(uri, args.name, args.port)} (Ctrl-C to stop)")
    return subprocess.call(command)


def runs_url(tracking_uri: str, sweep: str, port: int) -> str:
    """The address of the sweep's runs in the UI (its experiment page), read without writing."""
    from mlflow import MlflowClient

    from raysweep.schema import sweep_experiment

    base = f"http://127.0.0.1:{port}"
    experiment = sweep_experiment(MlflowClient(tracking_uri), sweep)
    return f"{base}/#/experiments/{experiment[0]}/runs" if experiment else base


def add_launch_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--name", help="sweep name (default: the spec's name)")
    parser.add_argument("--address", help="Ray cluster to attach to: auto or host:6379")
    parser.add_argument(
        "--tracking-uri", help="MLflow tracking URI (default: SQLite file in the sweep folder)"
    )
    parser.add_argument("--retry-failed", action="store_true", help="run FAILED jobs again")
    parser.add_argument(
        "--extend",
        action="store_true",
        help="allow a changed spec that only adds jobs to an existing sweep",
    )
    parser.add_argument(
        "--switch-tracking-uri",
        action="store_true",
        help="record an existing sweep in the --tracking-uri given from now on",
    )


COMMANDS: dict[str, tuple[str, Callable[[argparse.Namespace], int]]] = {
    "plan": ("print the jobs per stage without running anything", cmd_plan),
    "launch": ("run every job of a spec that is not done yet", cmd_launch),
    "resume": ("finish a sweep: run what is missing (FAILED jobs with --retry-failed)", cmd_resume),
    "status": ("done / running / failed / pending jobs per stage, and why jobs failed", cmd_status),
    "checkpoints": (
        "list the published source checkpoints and where to download them",
        cmd_checkpoints,
    ),
    "analyze": (
        "draw the sweep's figures and tables (also while it runs) and log them on its run",
        cmd_analyze,
    ),
    "ui": ("start the MLflow UI for a sweep on 127.0.0.1", cmd_ui),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="raysweep", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("--root", help="runs folder (default: $RAYSWEEP_ROOT or ./raysweep_runs)")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, _) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text)
        if name in ("plan", "launch"):
            command.add_argument(
                "spec", help="sweep spec (YAML), e.g. search_spaces/quickstart.yaml"
            )
            command.add_argument(
                "--max-jobs",
                type=int,
                default=MAX_JOBS,
                metavar="N",
                help=f"refuse specs of more than N jobs (default {MAX_JOBS:,})",
            )
        if name == "plan":
            command.add_argument(
                "--estimate",
                action="store_true",
                help="also print expected compute hours per device (a short calibration here)",
            )
        if name == "launch":
            add_launch_options(command)
        if name in ("resume", "status", "analyze", "ui"):
            command.add_argument("name", help="sweep name")
        if name == "analyze":
            command.add_argument(
                "--out", type=Path, help="output folder (default: <root>/<name>/report)"
            )
            command.add_argument(
                "--tracking-uri", help="MLflow tracking URI (default: the sweep's own)"
            )
            command.add_argument(
                "--sharey", action="store_true", help="one y-axis for the panels of a figure"
            )
        if name == "resume":
            command.add_argument("--address", help="Ray cluster to attach to")
            command.add_argument(
                "--retry-failed", action="store_true", help="run FAILED jobs again"
            )
        if name == "ui":
            command.add_argument("--port", type=int, default=5000)
        if name == "checkpoints":
            command.add_argument("--data-root", help="where sweeps read data (spec's data_root)")
    return parser


def environment_problem(error: BaseException) -> str | None:
    """One line with the fix for a failure of the machine or the tracking store, not of raysweep:
    a full disk, a permission, an MLflow store that refuses. None for anything else (a bug)."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        where = f" for {error.filename}" if error.filename else ""
        return (
            f"no space left on the device{where}; free some, then run the same command again "
            "(nothing recorded is lost)"
        )
    if isinstance(error, OSError) and error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        target = error.filename or "a file"
        return f"cannot write {target} ({error.strerror}); pass a writable --root"
    module = type(error).__module__.split(".")[0]
    if module in ("mlflow", "sqlalchemy"):
        text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if "disk is full" in text or "No space left" in text:
            return "the tracking database's disk is full; free some, then run the command again"
        return (
            f"the MLflow tracking store refused ({text[:300]}); check --tracking-uri, that the "
            "store is reachable and writable, then run the command again"
        )
    return None


def sweep_name_of(args: argparse.Namespace) -> str:
    """The sweep a command was working on, for the resume hint."""
    if getattr(args, "name", None):
        return str(args.name)
    try:
        from raysweep.spec import load_spec

        return load_spec(args.spec).name
    except Exception:
        return "NAME"


def stop_on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _, handler = COMMANDS[args.command]
    previous = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, stop_on_sigterm)  # e.g. `ray job stop`, a cluster shutdown
    try:
        return handler(args)
    except USER_ERRORS as error:
        return user_error(args, str(error), error)
    except KeyboardInterrupt:
        hint = ""
        if args.command in ("launch", "resume"):
            hint = f"; `raysweep resume {sweep_name_of(args)}` finishes what is missing"
        print(f"raysweep: interrupted{hint}", file=sys.stderr)
        return 130
    except Exception as error:
        problem = environment_problem(error)
        if problem is None:
            raise
        return user_error(args, problem, error)
    finally:
        signal.signal(signal.SIGTERM, previous)


def user_error(args: argparse.Namespace, message: str, error: BaseException) -> int:
    """Print one line (or, with --debug, the traceback); exit status 2."""
    if args.debug:
        raise error
    print(f"raysweep: error: {' '.join(message.split())}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
