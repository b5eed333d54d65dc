"""Issue #18: analysis keeps the runs it fetched and asks MLflow only for what is new."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from raysweep.analysis import results, runcache
from raysweep.analysis.runcache import RunCache
from raysweep.schema import JOB_ROLE, KEY_TAG, ROLE_TAG, STAGE_TAG, SWEEP_TAG, experiment_name


def finished_job(client: MlflowClient, experiment: str, key: str, acc: float) -> str:
    tags = {KEY_TAG: key, ROLE_TAG: JOB_ROLE, STAGE_TAG: "finetune", SWEEP_TAG: "s"}
    run = client.create_run(experiment, tags=tags)
    metrics = [Metric("test/acc", acc - 10 + step, 0, step) for step in (1, 2)]
    client.log_batch(run.info.run_id, metrics=metrics, params=[Param("target", "digits")])
    client.set_terminated(run.info.run_id)
    return run.info.run_id


@pytest.fixture
def store(tmp_path: Path) -> tuple[str, MlflowClient, str]:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    return uri, client, client.create_experiment(experiment_name("s"))


def test_a_second_fetch_reads_only_new_runs_and_histories(
    tmp_path: Path, store: tuple[str, MlflowClient, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    uri, client, experiment = store
    first = [finished_job(client, experiment, f"k{i}", 50.0 + i) for i in range(3)]
    since: list[int | None] = []
    real_runs = results.sweep_runs

    def spy_runs(*args: object, **kwargs: object) -> object:
        since.append(kwargs.get("ended_since"))  # type: ignore[arg-type]
        return real_runs(*args, **kwargs)  # type: ignore[arg-type]

    histories: list[list[str]] = []
    real_history = results.metric_history

    def spy_history(uri_: str, run_ids: list[str], metric: str) -> object:
        histories.append(list(run_ids))
        return real_history(uri_, run_ids, metric)

    monkeypatch.setattr(runcache, "sweep_runs", spy_runs)
    monkeypatch.setattr(runcache, "metric_history", spy_history)
    cache = RunCache(tmp_path / "cache", uri, "s")
    runs = cache.runs("finetune")
    assert sorted(runs["run_id"]) == sorted(first) and since == [None]
    assert len(cache.history("finetune", "test/acc", first)) == 6

    added = finished_job(client, experiment, "k3", 80.0)
    again = RunCache(tmp_path / "cache", uri, "s")
    runs = again.runs("finetune")
    assert sorted(runs["run_id"]) == sorted([*first, added])
    assert since[-1] is not None  # incremental: only runs that ended since the cached ones
    assert runs.set_index("key").loc["k3", "test_acc"] == 72.0
    values = again.history("finetune", "test/acc", [*first, added])
    assert histories == [first, [added]] and len(values) == 8
    assert values[values["run_id"] == added]["value"].tolist() == [71.0, 72.0]


def test_a_cache_of_another_store_is_fetched_again(
    tmp_path: Path, store: tuple[str, MlflowClient, str]
) -> None:
    uri, client, experiment = store
    finished_job(client, experiment, "k0", 50.0)
    assert len(RunCache(tmp_path / "cache", uri, "s").runs("finetune")) == 1
    other_uri = f"sqlite:///{tmp_path / 'other.db'}"
    other = MlflowClient(other_uri)
    other_experiment = other.create_experiment(experiment_name("s"))
    finished_job(other, other_experiment, "x0", 60.0)
    finished_job(other, other_experiment, "x1", 61.0)
    runs = RunCache(tmp_path / "cache", other_uri, "s").runs("finetune")
    assert sorted(runs["key"]) == ["x0", "x1"]


def test_a_damaged_cache_is_fetched_again(
    tmp_path: Path, store: tuple[str, MlflowClient, str]
) -> None:
    uri, client, experiment = store
    finished_job(client, experiment, "k0", 50.0)
    cache = RunCache(tmp_path / "cache", uri, "s")
    cache.runs("finetune")
    for path in (tmp_path / "cache").glob("runs_finetune.*"):
        if path.suffix != ".json":
            path.write_bytes(b"not a frame")
    assert list(RunCache(tmp_path / "cache", uri, "s").runs("finetune")["key"]) == ["k0"]


def test_a_run_the_ledger_names_is_fetched_whatever_its_end_time(
    tmp_path: Path, store: tuple[str, MlflowClient, str]
) -> None:
    """A resume on a machine whose clock is behind closed a run "before" the cached ones: the
    time window misses it, the ledger does not."""
    from raysweep.ledger import FINISHED, Entry, Ledger

    uri, client, experiment = store
    finished_job(client, experiment, "k0", 50.0)
    ledger_file = tmp_path / "ledger.db"
    RunCache(tmp_path / "cache", uri, "s", ledger_file).runs("finetune")
    late = finished_job(client, experiment, "late", 70.0)
    client.set_terminated(late, end_time=1)  # by a clock far behind
    with Ledger(ledger_file) as ledger:
        ledger.reset({"tracking_uri": uri, "experiment_id": experiment})
        ledger.write([Entry("late", "finetune", "late", FINISHED, late, None, 1)])
    runs = RunCache(tmp_path / "cache", uri, "s", ledger_file).runs("finetune")
    assert sorted(runs["key"]) == ["k0", "late"]
