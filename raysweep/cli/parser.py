"""The ``raysweep`` command line: one table of subcommands (summary, description, examples,
handler) and the options each takes. Global options (``--root``, ``--debug``) are accepted
before or after the subcommand."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from raysweep import __version__
from raysweep.cli import commands
from raysweep.plan.size import MAX_JOBS

DESCRIPTION = """\
Transfer-learning sweeps of the adversarial-robustness literature on Ray Tune, recorded in
MLflow: write a sweep as YAML (sources × ε × targets × subset sizes × seeds × fine-tuned
blocks), launch it, watch it, draw the papers' figures. Launching the same spec again only
does what is missing."""

WORKFLOW = """\
typical use:
  raysweep plan search_spaces/quickstart.yaml          what would run, and how much
  raysweep launch search_spaces/quickstart.yaml        run it (again: only what is missing)
  raysweep status quickstart --watch 10                follow it
  raysweep analyze quickstart                          figures and tables
  raysweep ui quickstart                               browse the runs in MLflow

A user error prints one line (raysweep: error: …) and exits 2; --debug shows the traceback."""


@dataclass(frozen=True)
class Command:
    summary: str
    description: str
    examples: str
    handler: Callable[[argparse.Namespace], int]


COMMAND_TABLE: dict[str, Command] = {
    "plan": Command(
        "validate a spec and count its jobs; runs nothing",
        "Validate SPEC (every problem at once, with line and column) and print its jobs per "
        "stage. KEY=VALUE overrides change any key, as they would on launch.",
        "raysweep plan search_spaces/utrera2020.yaml\n"
        "raysweep plan search_spaces/quickstart.yaml seeds=5 finetune.optimizer.lr=0.01\n"
        "raysweep plan search_spaces/quickstart.yaml --estimate",
        commands.cmd_plan,
    ),
    "launch": Command(
        "run every job of a spec that is not done yet",
        "Run SPEC's jobs that have no FINISHED run: pretraining and probes as Ray tasks, the "
        "fine-tuning grid as Ray Tune trials, each job an MLflow run. One launch per sweep at a "
        "time; the sweep folder keeps the spec as launched (overrides applied).",
        "raysweep launch search_spaces/quickstart.yaml\n"
        "raysweep launch search_spaces/quickstart.yaml --name qs-lr01 finetune.optimizer.lr=0.1\n"
        "raysweep launch spec.yaml --address auto --tracking-uri http://127.0.0.1:5000",
        commands.cmd_launch,
    ),
    "resume": Command(
        "finish a sweep: run what is missing",
        "Launch the sweep again from the spec copy in its folder, on its own tracking store. "
        "FAILED jobs stay failed unless --retry-failed.",
        "raysweep resume quickstart\nraysweep resume quickstart --retry-failed",
        commands.cmd_resume,
    ),
    "status": Command(
        "jobs done / running / failed / pending per stage",
        "Count a sweep's jobs per stage and state, then one line per failure with its reason. "
        "Exit status 1 when a job failed. --watch redraws until nothing is left to run.",
        "raysweep status quickstart\nraysweep status quickstart --watch 10",
        commands.cmd_status,
    ),
    "list": Command(
        "the sweeps under the runs root",
        "Every sweep under --root (or $RAYSWEEP_ROOT, ./raysweep_runs) with its jobs per state "
        "and its tracking store.",
        "raysweep list\nraysweep list --root /mnt/shared/raysweep_runs",
        commands.cmd_list,
    ),
    "analyze": Command(
        "draw the sweep's figures and tables",
        "Draw every figure family the sweep's finished runs support (also while it runs) into "
        "OUT (default <root>/<name>/report) and log them on the sweep's parent run.",
        "raysweep analyze quickstart\nraysweep analyze quickstart --out /tmp/report --sharey",
        commands.cmd_analyze,
    ),
    "ui": Command(
        "the MLflow UI for a sweep on 127.0.0.1",
        "Start MLflow's UI on the sweep's SQLite store and print the address of its runs.",
        "raysweep ui quickstart\nraysweep ui quickstart --port 5050",
        commands.cmd_ui,
    ),
    "checkpoints": Command(
        "the published source checkpoints and their download links",
        "List the published robust and natural source models a spec can name as "
        "`checkpoint:`, the file each is read from and where to download it.",
        "raysweep checkpoints --data-root ~/data",
        commands.cmd_checkpoints,
    ),
    "schema": Command(
        "print the JSON Schema of a spec",
        "The JSON Schema of sweep specs, for editors: save it and point a spec's "
        "`# yaml-language-server: $schema=…` line at it.",
        "raysweep schema > spec.schema.json",
        commands.cmd_schema,
    ),
}


def global_options(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """--root and --debug; on subcommands they only override what was given before."""
    default = None if top else argparse.SUPPRESS
    parser.add_argument(
        "--root", default=default, help="runs folder (default: $RAYSWEEP_ROOT or ./raysweep_runs)"
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        default=False if top else argparse.SUPPRESS,
        help="show tracebacks and the libraries' own log lines",
    )


def spec_arguments(command: argparse.ArgumentParser) -> None:
    command.add_argument("spec", type=Path, help="sweep spec (YAML)")
    command.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="change a spec key, e.g. seeds=5"
    )
    command.add_argument(
        "--max-jobs", type=int, default=MAX_JOBS, metavar="N",
        help=f"refuse specs of more than N jobs (default {MAX_JOBS:,})",
    )  # fmt: skip


def launch_options(command: argparse.ArgumentParser) -> None:
    command.add_argument("--name", help="sweep name (default: the spec's name)")
    command.add_argument("--address", help="Ray cluster to attach to: auto or host:6379")
    command.add_argument(
        "--tracking-uri", help="MLflow tracking URI (default: SQLite file in the sweep folder)"
    )
    command.add_argument("--retry-failed", action="store_true", help="run FAILED jobs again")
    command.add_argument(
        "--extend", action="store_true", help="accept a changed spec that only adds jobs"
    )
    command.add_argument(
        "--switch-tracking-uri", action="store_true",
        help="record an existing sweep in the --tracking-uri given from now on",
    )  # fmt: skip


def name_argument(command: argparse.ArgumentParser) -> None:
    action = command.add_argument("name", help="sweep name (see `raysweep list`)")
    action.completer = sweep_names  # type: ignore[attr-defined]


def sweep_names(prefix: str, parsed_args: argparse.Namespace, **_: object) -> list[str]:
    """Shell completion of sweep names: the folders with a sweep.json under the root."""
    from raysweep.sweepdir import resolve_root

    root = resolve_root(getattr(parsed_args, "root", None))
    return sorted(p.parent.name for p in root.glob(f"{prefix}*/sweep.json"))


def command_options(name: str, command: argparse.ArgumentParser) -> None:
    """The options of one subcommand besides the global ones."""
    if name in ("plan", "launch"):
        spec_arguments(command)
    if name == "plan":
        command.add_argument(
            "--estimate", action="store_true",
            help="also print expected compute hours per device (a short calibration here)",
        )  # fmt: skip
    if name == "launch":
        launch_options(command)
    if name in ("resume", "status", "analyze", "ui"):
        name_argument(command)
    if name == "resume":
        command.add_argument("--address", help="Ray cluster to attach to: auto or host:6379")
        command.add_argument("--retry-failed", action="store_true", help="run FAILED jobs again")
    if name == "status":
        command.add_argument(
            "--watch", type=float, nargs="?", const=10.0, default=0.0, metavar="SECONDS",
            help="redraw every SECONDS (default 10) until nothing is pending or running",
        )  # fmt: skip
    if name == "analyze":
        command.add_argument("--out", type=Path, help="output folder (default: its report/)")
        command.add_argument("--tracking-uri", help="MLflow tracking URI (default: the sweep's)")
        command.add_argument("--sharey", action="store_true", help="one y-axis per figure")
    if name == "ui":
        command.add_argument("--port", type=int, default=5000)
    if name == "checkpoints":
        command.add_argument("--data-root", help="where sweeps read data (a spec's data_root)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="raysweep",
        description=DESCRIPTION,
        epilog=WORKFLOW,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"raysweep {__version__}")
    global_options(parser, top=True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, command in COMMAND_TABLE.items():
        child = sub.add_parser(
            name,
            help=command.summary,
            description=command.description,
            epilog="examples:\n  " + command.examples.replace("\n", "\n  "),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        global_options(child, top=False)
        command_options(name, child)
    return parser
