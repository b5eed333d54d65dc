"""Every job key of every shipped spec, against the golden file taken before the package moved
into its stage-shaped folders (issue #13).

A key is the hash of a job's normalised config: it decides what counts as done on a relaunch,
which stored checkpoint a sweep reuses and which MLflow run is a job's. A refactor that changes
a key silently retrains and re-runs work. ``tests/golden/job_keys.csv`` holds one
``spec,stage,key`` row per job of each ``search_spaces/*.yaml``, in plan order; it was written
with ``make_plan(load_spec(path))`` at commit 85ef973 (before the move) and is never regenerated
by a test. A deliberate change of the job protocol bumps ``PROTOCOL_VERSION`` and rewrites it.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from raysweep.plan import make_plan
from raysweep.spec import load_spec

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "golden" / "job_keys.csv"
SPECS = sorted((ROOT / "search_spaces").glob("*.yaml"))


def golden_rows() -> dict[str, list[tuple[str, str]]]:
    rows: dict[str, list[tuple[str, str]]] = {}
    with GOLDEN.open() as handle:
        for row in csv.DictReader(handle):
            rows.setdefault(row["spec"], []).append((row["stage"], row["key"]))
    return rows


def test_every_shipped_spec_is_in_the_golden_file() -> None:
    assert sorted(golden_rows()) == sorted(path.stem for path in SPECS)
    assert sum(len(rows) for rows in golden_rows().values()) == 14_795


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_job_keys_are_unchanged(path: Path) -> None:
    plan = make_plan(load_spec(path))
    assert [(job.stage, job.key) for job in plan] == golden_rows()[path.stem]
