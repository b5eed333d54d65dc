"""Utrera et al. 2021, Fig. 2 for one sweep: accuracy and robust − natural delta vs. subset size.

    python analysis/accuracy_vs_subset.py --tracking-uri sqlite:///mlflow.db --sweep utrera2020 \
        --out results/utrera2020 [--blocks 3]

Writes the run cache, the figures (PNG + PDF) and the gap table into ``--out``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from raysweep.analysis.figures import plot_accuracy_vs_subset, write_gap_table
from raysweep.analysis.results import (
    NothingToAnalyze,
    cache_results,
    default_cache_path,
    sweep_runs,
)
from raysweep.analysis.stats import natural_partners


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--tracking-uri",
        default=os.environ.get("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db"),
        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)",
    )
    parser.add_argument("--sweep", required=True, help="sweep name (experiment raysweep/<name>)")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--blocks", default=None, help="only this blocks value (default: each)")
    return parser.parse_args(argv)


def run(tracking_uri: str, sweep: str, out: Path, blocks: str | None) -> list[Path]:
    """Fetch the sweep's finished fine-tuning runs, cache them, write figures and gap table."""
    df = sweep_runs(tracking_uri, sweep)
    if df.empty:
        raise NothingToAnalyze(
            f"sweep {sweep!r} has no finished fine-tuning runs yet: run `raysweep status {sweep}`"
        )
    cache = default_cache_path(out)
    cache_results(df, cache)
    paths = [cache, *plot_accuracy_vs_subset(df, out, blocks=blocks)]
    if natural_partners(df):
        paths += write_gap_table(df, out)
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    """Exit 0 with the written paths on stdout; 2 with one line on stderr for a user error."""
    args = parse_args(argv)
    try:
        paths = run(args.tracking_uri, args.sweep, args.out, args.blocks)
    except (NothingToAnalyze, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
