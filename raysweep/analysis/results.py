"""Fetch a sweep's finished runs from MLflow into typed pandas frames.

The MLflow layout is :mod:`raysweep.schema`'s: experiment ``raysweep/<sweep>``, one parent
run and one child run per job, tagged with the sweep, its stable key and its stage, listed with
:func:`raysweep.schema.iter_runs`. Fine-tuning runs carry their grid
cell as params (and tags): source, source_training, source_norm, source_eps, source_architecture,
source_dataset, target, subset_size, n_train, seed, blocks, epochs. Only FINISHED runs are
results; a sweep may still be running or may have been interrupted.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator, Sequence
from pathlib import Path

import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import Run

from raysweep.schema import (
    KEY_TAG,
    NothingToAnalyze,  # noqa: F401 - analysis' own error, defined where the driver sees it too
    iter_runs,
    job_filter,
    run_id_filters,
    store_exists,
    sweep_experiment,
)

# Typed columns; every other param stays a string so that "all" / "head_bn" survive untouched.
INT_PARAMS = ("seed", "n_train", "epochs")
FLOAT_PARAMS = ("source_eps",)

#: The params that describe a run's source model (every stage's runs carry them).
SOURCE_PARAMS = (
    "source",
    "source_training",
    "source_norm",
    "source_eps",
    "source_architecture",
    "source_dataset",
)
STAGE_PARAMS: dict[str, tuple[str, ...]] = {
    "finetune": (
        *SOURCE_PARAMS,
        "target",
        "subset_size",
        "n_train",
        "seed",
        "blocks",
        "epochs",
    ),
}
STAGE_METRICS: dict[str, tuple[str, ...]] = {
    "finetune": ("test/acc", "train/loss", "train/acc"),
    "pretrain": ("train/loss", "train/acc", "test/acc", "adv/acc", "train/weight_norm"),
}
RUN_COLUMNS = ("run_id", "key", "status", "start_time", "end_time")


def metric_column(metric: str) -> str:
    """MLflow metric name to DataFrame column: ``test/acc`` -> ``test_acc``."""
    return metric.replace("/", "_")


def _job_runs(tracking_uri: str, sweep: str, filter_string: str, page_size: int) -> Iterator[Run]:
    """The sweep's runs matching the filter; none, and no store created, before the first run."""
    if not store_exists(tracking_uri):
        return iter(())
    client = MlflowClient(tracking_uri)
    return iter_runs(client, sweep_experiment(client, sweep), filter_string, page_size)


def _run_row(run: Run, params: Sequence[str]) -> dict[str, object]:
    tags = run.data.tags
    row: dict[str, object] = {
        "run_id": run.info.run_id,
        "key": tags.get(KEY_TAG),
        "status": run.info.status,
        "start_time": run.info.start_time,
        "end_time": run.info.end_time,
    }
    # The driver writes the cell as params and as tags; tags are the fallback for runs
    # whose params were never logged (e.g. a crash between create_run and log_batch).
    for name in {*params, *run.data.params}:
        row[name] = run.data.params.get(name, tags.get(name))
    for name, value in run.data.metrics.items():
        row[metric_column(name)] = value  # MLflow's latest value: highest step, then newest
    return row


def _type_columns(df: pd.DataFrame) -> pd.DataFrame:
    for name in INT_PARAMS:
        if name in df:
            values = pd.to_numeric(df[name], errors="coerce")
            # A missing int would silently become a float; keep it nullable instead.
            df[name] = values.astype("int64" if values.notna().all() else "Int64")
    for name in FLOAT_PARAMS:
        if name in df:
            df[name] = pd.to_numeric(df[name], errors="coerce").astype("float64")
    return df


def sweep_runs(
    tracking_uri: str,
    sweep: str,
    stage: str = "finetune",
    page_size: int = 1000,
    ended_since: int | None = None,
    run_ids: Sequence[str] | None = None,
) -> pd.DataFrame:
    """One row per FINISHED child run of ``sweep`` at ``stage``.

    Columns: ``run_id, key, status, start_time, end_time``, the stage's params typed (``seed``,
    ``n_train``, ``epochs`` int; ``source_eps`` float; ``subset_size``, ``blocks`` and the rest
    str) and the last logged value of every metric (``test/acc`` -> ``test_acc``). Should a key
    have two FINISHED runs (a job re-run after a crash), only the one that ended last is kept.
    An unknown sweep or one without finished runs gives an empty frame with these columns.
    ``ended_since`` (ms) keeps only runs that ended then or later, ``run_ids`` only those runs
    (incremental fetches).
    """
    params = STAGE_PARAMS.get(stage, ())
    metrics = tuple(metric_column(m) for m in STAGE_METRICS.get(stage, ()))
    finished = job_filter(stage, sweep=sweep, status="= 'FINISHED'")
    if ended_since is not None:
        finished += f" AND attributes.end_time >= {int(ended_since)}"
    filters = [finished]
    if run_ids is not None:
        filters = [f"{finished} AND {ids}" for ids in run_id_filters(run_ids)]
    rows: dict[str, dict[str, object]] = {}
    for filter_string in filters:
        for run in _job_runs(tracking_uri, sweep, filter_string, page_size):
            rows[run.info.run_id] = _run_row(run, params)
    columns = [*RUN_COLUMNS, *params, *metrics]
    df = pd.DataFrame(list(rows.values()))
    if df.empty:
        return _type_columns(pd.DataFrame({c: pd.Series(dtype=object) for c in columns}))
    return latest_per_key(df.reindex(columns=[*columns, *sorted(set(df.columns) - set(columns))]))


def latest_per_key(df: pd.DataFrame) -> pd.DataFrame:
    """Of several FINISHED runs of one key, the one that ended last; typed columns."""
    keyed = df[df["key"].notna()].sort_values(["end_time", "run_id"])
    # Keyless runs (not raysweep's) cannot be duplicates of one another: keep them all.
    keyless = df[df["key"].isna()].drop_duplicates("run_id", keep="last")
    df = pd.concat([keyed.drop_duplicates("key", keep="last"), keyless])
    return _type_columns(df.sort_values("run_id").reset_index(drop=True))


def count_unfinished(
    tracking_uri: str, sweep: str, stage: str = "finetune", page_size: int = 1000
) -> dict[str, int]:
    """Number of the sweep's job runs at ``stage`` per non-FINISHED status (RUNNING, FAILED...)."""
    unfinished = job_filter(stage, sweep=sweep, status="!= 'FINISHED'")
    counts: dict[str, int] = {}
    for run in _job_runs(tracking_uri, sweep, unfinished, page_size):
        counts[run.info.status] = counts.get(run.info.status, 0) + 1
    return dict(sorted(counts.items()))


def metric_history(
    tracking_uri: str, run_ids: Sequence[str], metric: str = "test/acc"
) -> pd.DataFrame:
    """Every logged value of ``metric`` for each run: columns ``run_id, step, value``.

    Steps are epochs (raysweep's convention), so this is the accuracy-during-fine-tuning curve
    of Utrera et al. 2021, Fig. 3. Sorted by run and step; runs that never logged it add no rows.
    """
    client = MlflowClient(tracking_uri)
    rows = [
        (run_id, m.step, m.value, m.timestamp)
        for run_id in run_ids
        for m in client.get_metric_history(run_id, metric)
    ]
    df = pd.DataFrame(rows, columns=["run_id", "step", "value", "timestamp"])
    # A step logged twice (a resumed trial) keeps its newest value.
    df = df.sort_values(["run_id", "step", "timestamp"]).drop_duplicates(
        ["run_id", "step"], keep="last"
    )
    df = df.drop(columns="timestamp").reset_index(drop=True)
    return df.astype({"run_id": object, "step": "int64", "value": "float64"})


def parquet_available() -> bool:
    """Whether pandas can write Parquet here (pyarrow importable)."""
    return importlib.util.find_spec("pyarrow") is not None


def default_cache_path(folder: Path, stem: str = "finetune_runs") -> Path:
    """``<folder>/<stem>.parquet`` when pyarrow is importable, else ``<folder>/<stem>.csv``."""
    return Path(folder) / (stem + (".parquet" if parquet_available() else ".csv"))


def cache_results(df: pd.DataFrame, path: Path) -> None:
    """Write ``df`` to ``path``: Parquet if the suffix is ``.parquet``, CSV otherwise.

    Parent folders are created. Use :func:`default_cache_path` to pick Parquet when available
    and :func:`load_cached` to read the file back with the same column types.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        if not parquet_available():
            raise ValueError(f"cannot write {path}: pyarrow is not installed; use a .csv path")
        df.to_parquet(path, index=False)
    else:
        df.to_csv(path, index=False)


def load_cached(path: Path) -> pd.DataFrame:
    """Read a frame written by :func:`cache_results`, restoring raysweep's column types."""
    path = Path(path)
    if path.suffix == ".parquet":
        return _type_columns(pd.read_parquet(path))
    # Without forcing str, CSV would turn blocks "0"/"1" and subset_size "100" into ints.
    text_columns = {"subset_size": str, "blocks": str, "source_norm": str, "key": str}
    df = pd.read_csv(path, dtype=text_columns, keep_default_na=False, na_values=[""])
    if "source_norm" in df:
        df["source_norm"] = df["source_norm"].fillna("")  # natural sources log ""
    return _type_columns(df)
