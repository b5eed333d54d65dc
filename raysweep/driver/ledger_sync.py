"""Keeping the job ledger (:mod:`raysweep.ledger`) in step with MLflow, cheaply.

The ledger is written after MLflow, so it can only lag: a driver killed between a run's end and
its ledger row, or a ledger deleted, or one that mirrors another tracking store
(``--switch-tracking-uri``). :func:`catch_up` asks MLflow about the runs the ledger saw open
(the one a killed driver was closing is among them) and reads the job runs that ended since the
ledger's newest entry (minus :data:`MARGIN_MS`, for clocks that differ between the machines a
sweep was launched from): two queries returning a handful of runs, whatever the sweep's size. A
ledger that is missing, or mirrors another store, is rebuilt from one full listing — the cost
every command paid before there was a ledger, paid once.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from mlflow.entities import Run

from raysweep.ledger import TERMINAL, Entry, Ledger
from raysweep.schema import (
    END_TIME_MARGIN_MS,
    ERROR_TAG,
    KEY_TAG,
    RUN_NAME_TAG,
    STAGE_TAG,
    iter_runs,
    job_filter,
    run_id_filters,
)

#: Runs that ended up to this long before the ledger's newest entry are read again (ms).
MARGIN_MS = END_TIME_MARGIN_MS


def store_identity(tracking_uri: str, experiment_id: str) -> dict[str, str]:
    """What a ledger mirrors: a store and the sweep's experiment in it."""
    return {"tracking_uri": tracking_uri, "experiment_id": experiment_id}


def run_entry(run: Run) -> Entry | None:
    """A terminal job run as a ledger entry (None for other runs)."""
    tags = run.data.tags
    if KEY_TAG not in tags or run.info.status not in TERMINAL:
        return None
    return Entry(
        key=tags[KEY_TAG],
        stage=tags.get(STAGE_TAG, "?"),
        name=tags.get(RUN_NAME_TAG, tags[KEY_TAG]),
        status=run.info.status,
        run_id=run.info.run_id,
        reason=tags.get(ERROR_TAG),
        end_time=run.info.end_time,
    )


def ended_since(client: Any, experiment_id: str, since_ms: int | None) -> Iterable[Entry]:
    """The sweep's job runs that ended at or after ``since_ms`` (every one for None)."""
    filter_string = job_filter()
    if since_ms is not None:
        filter_string += f" AND attributes.end_time >= {int(since_ms)}"
    return entries_of(iter_runs(client, [experiment_id], filter_string, page_size=5000))


def entries_of(runs: Iterable[Run]) -> Iterator[Entry]:
    for run in runs:
        entry = run_entry(run)
        if entry is not None:
            yield entry


def runs_by_id(client: Any, experiment_id: str, run_ids: Sequence[str]) -> Iterator[Entry]:
    """The terminal ones among ``run_ids`` (the runs the ledger last saw open)."""
    for filter_string in run_id_filters(run_ids):
        yield from entries_of(iter_runs(client, [experiment_id], filter_string))


def news(ledger: Ledger, client: Any, experiment_id: str) -> list[Entry]:
    """What MLflow knows that the ledger may not: how the runs it saw open ended, and the runs
    that ended since its newest entry (less the margin). Everything, for an empty ledger."""
    watermark = ledger.watermark()
    since = None if watermark is None else watermark - MARGIN_MS
    found = list(ended_since(client, experiment_id, since))
    if since is not None:
        found += runs_by_id(client, experiment_id, ledger.running_run_ids())
    return found


def catch_up(ledger: Ledger, client: Any, tracking_uri: str, experiment_id: str) -> int:
    """Bring the ledger up to MLflow; returns how many entries it gained or changed."""
    store = store_identity(tracking_uri, experiment_id)
    if not ledger.mirrors(store):
        ledger.reset(store)
    return ledger.merge(news(ledger, client, experiment_id))
