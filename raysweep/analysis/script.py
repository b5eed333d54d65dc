"""The shared body of the thin scripts in ``analysis/``: draw one figure family of one sweep.

    python analysis/<family>.py --sweep NAME [--root DIR | --tracking-uri URI] [--out DIR]
                                [--sharey]

Each script names its family; this module finds the sweep's tracking URI (its sweep folder's
``sweep.json``, unless ``--tracking-uri`` is given), draws the family into ``--out`` (default:
the sweep's report folder) and prints the written paths. ``--sharey`` gives the panels of each
figure one y-axis (panels showing the same quantity). A user error is one line, exit 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from raysweep.analysis.families import Family
from raysweep.analysis.results import NothingToAnalyze
from raysweep.analysis.sweepdata import FigureOptions, NotSupported, SweepData
from raysweep.sweepdir import SweepDir, SweepDirError, resolve_root


def parse_args(description: str, argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--sweep", required=True, help="sweep name (experiment raysweep/<name>)")
    parser.add_argument(
        "--root", default=None, help="sweeps folder (default: $RAYSWEEP_ROOT or ./raysweep_runs)"
    )
    parser.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow tracking URI (default: the one the sweep was launched with)",
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="output folder (default: <root>/<sweep>/report)"
    )
    parser.add_argument(
        "--sharey",
        action="store_true",
        help="one y-axis for all panels of a figure (default: each panel scales to its data)",
    )
    return parser.parse_args(argv)


def figure_options(args: argparse.Namespace) -> FigureOptions:
    """The drawing options the command line asked for."""
    return FigureOptions(sharey=args.sharey)


def resolve(args: argparse.Namespace) -> tuple[str, Path]:
    """The tracking URI and output folder for ``args``, read from the sweep folder if needed."""
    sweep = SweepDir(resolve_root(args.root), args.sweep)
    return sweep.tracking_uri(args.tracking_uri), args.out or sweep.report_dir


def family_main(family: Family, description: str, argv: Sequence[str] | None = None) -> int:
    """Run ``family`` on the sweep named in ``argv``; print the paths; 0, or 2 on a user error."""
    args = parse_args(description, argv)
    try:
        uri, out = resolve(args)
        out.mkdir(parents=True, exist_ok=True)
        section = family(SweepData(uri, args.sweep, figure_options(args)), out)
    except (NotSupported, NothingToAnalyze, SweepDirError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for path in section.paths:
        print(path)
    return 0
