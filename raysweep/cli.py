"""The `raysweep` command: parses arguments, calls functions, maps errors to exit codes.

A user error prints one line (``raysweep: error: …``) and exits 2; ``--debug`` shows the
traceback instead.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from raysweep.analysis.results import NothingToAnalyze
from raysweep.driver.cluster import ClusterError
from raysweep.schema import TrackingError
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

    plan = make_plan(load_spec(args.spec))
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
    from raysweep.driver.status import sweep_status

    print(sweep_status(sweep_dir(args)).render())
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

    analyze(sweep_dir(args), args.out, args.tracking_uri)
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    uri = sweep_dir(args).tracking_uri()
    if not uri.startswith("sqlite"):
        print(f"sweep '{args.name}' is tracked on {uri}: open that address in a browser")
        return 0
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
    ]
    print(f"MLflow UI for '{args.name}' on http://127.0.0.1:{args.port} (Ctrl-C to stop)")
    return subprocess.call(command)


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


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _, handler = COMMANDS[args.command]
    try:
        return handler(args)
    except USER_ERRORS as error:
        if args.debug:
            raise
        message = " ".join(str(error).split())
        print(f"raysweep: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "raysweep: interrupted; `raysweep launch` the same spec again to finish",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
