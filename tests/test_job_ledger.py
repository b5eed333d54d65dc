"""Issue #18: the job ledger the driver keeps beside MLflow, and what reads it.

A ledger lost or behind must never cause a duplicate run or a missed job; ``status`` and
skip-if-done read it instead of listing every run; a relaunch with nothing to do starts no Ray.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from micro_specs import write_spec as write_micro_spec
from mlflow.tracking import MlflowClient

from raysweep.driver import launcher
from raysweep.driver.ledger_sync import MARGIN_MS, catch_up
from raysweep.driver.status import listed_status, sweep_status
from raysweep.ledger import FAILED, FINISHED, Entry, Ledger
from raysweep.protocol import attempts_by_key, fold_finished_trials
from raysweep.schema import JOB_ROLE, KEY_TAG, ROLE_TAG, STAGE_TAG, experiment_name
from raysweep.sweepdir import SweepDir

GRID = {
    "targets": ["digits"],
    "subset_sizes": [50],
    "seeds": 2,
    "blocks": [0],
    "finetune": {
        "optimizer": {"lr": 0.05, "batch_size": 25},
        "rules": [{"up_to": "all", "epochs": 2}],
    },
    "resources": {"cpu": 1},
}


def write_spec(folder: Path, name: str, **changes: Any) -> Path:
    return write_micro_spec(folder, name, GRID, **changes)


def finished_runs_per_key(sweep: SweepDir) -> Counter:
    client = MlflowClient(sweep.default_tracking_uri())
    experiment = client.get_experiment_by_name(experiment_name(sweep.name))
    runs = client.search_runs([experiment.experiment_id], "attributes.status = 'FINISHED'")
    return Counter(run.data.tags[KEY_TAG] for run in runs if KEY_TAG in run.data.tags)


def no_ray(*args: Any) -> None:
    raise AssertionError("Ray started although nothing was left to do")


# --- the ledger itself ----------------------------------------------------------------------


def test_merge_keeps_finished_over_failed_and_the_newest_run(tmp_path: Path) -> None:
    with Ledger(tmp_path / "ledger.db") as ledger:
        ledger.started("a", "finetune", "job a", "r1")
        assert ledger.merge([Entry("a", "finetune", "job a", FAILED, "r1", "boom", 100)]) == 1
        finished = Entry("a", "finetune", "job a", FINISHED, "r2", None, 90)
        assert ledger.merge([finished]) == 1  # FINISHED outranks a later FAILED
        assert ledger.merge([Entry("a", "finetune", "job a", FAILED, "r3", "x", 500)]) == 0
        assert ledger.merge([finished, finished]) == 0  # reading a run again changes nothing
        newer = Entry("a", "finetune", "job a", FINISHED, "r4", None, 200)
        assert ledger.merge([newer]) == 1
        assert ledger.entries() == {"a": newer}
        assert ledger.watermark() == 200
        assert ledger.counts() == {"finetune": Counter({FINISHED: 1})}


def test_a_readonly_ledger_is_never_created(tmp_path: Path) -> None:
    from raysweep.ledger import LedgerError

    with pytest.raises(LedgerError, match="cannot open the job ledger"):
        Ledger(tmp_path / "missing.db", readonly=True)
    assert not (tmp_path / "missing.db").exists()


def mlflow_job(client: MlflowClient, experiment: str, key: str, status: str) -> str:
    tags = {KEY_TAG: key, ROLE_TAG: JOB_ROLE, STAGE_TAG: "finetune", "mlflow.runName": key}
    run = client.create_run(experiment, tags=tags)
    client.set_terminated(run.info.run_id, status=status)
    return run.info.run_id


def test_catch_up_reads_only_recent_runs_and_rebuilds_for_another_store(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("raysweep/x")
    old = mlflow_job(client, experiment, "old", FINISHED)
    with Ledger(tmp_path / "ledger.db") as ledger:
        assert catch_up(ledger, client, uri, experiment) == 1  # a new ledger: the full listing
        # Push the ledger's knowledge into the past: runs older than its watermark minus the
        # margin are never read again, so a run hidden there proves the listing is partial.
        ledger.write([Entry("old", "finetune", "old", FINISHED, old, None, 10 * MARGIN_MS)])
        ledger.db.execute("UPDATE jobs SET end_time = ?", (3 * MARGIN_MS,))
        hidden = mlflow_job(client, experiment, "hidden", FINISHED)
        client.set_terminated(hidden, status=FINISHED, end_time=MARGIN_MS)  # ended "long ago"
        recent = mlflow_job(client, experiment, "recent", FAILED)
        catch_up(ledger, client, uri, experiment)
        assert set(ledger.entries()) == {"old", "recent"}
        assert ledger.entries()["recent"].status == FAILED
        assert ledger.entries()["recent"].run_id == recent
        other = client.create_experiment("raysweep/y")  # --switch-tracking-uri, or a new store
        mlflow_job(client, other, "elsewhere", FINISHED)
        assert catch_up(ledger, client, uri, other) == 1
        assert set(ledger.entries()) == {"elsewhere"}


def test_a_run_the_ledger_saw_open_is_asked_about_whenever_it_ended(tmp_path: Path) -> None:
    """The driver died between closing a run in MLflow and writing its ledger row: the run is
    found by its id, however long ago it ended."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("raysweep/x")
    closed = mlflow_job(client, experiment, "closed", FINISHED)
    client.set_terminated(closed, status=FINISHED, end_time=1)  # far below any watermark
    with Ledger(tmp_path / "ledger.db") as ledger:
        ledger.reset({"tracking_uri": uri, "experiment_id": experiment})
        ledger.write([Entry("other", "finetune", "other", FINISHED, "r", None, 10**15)])
        ledger.started("closed", "finetune", "closed", closed)
        assert catch_up(ledger, client, uri, experiment) == 1
        assert ledger.entries()["closed"].status == FINISHED


def test_folding_finished_trials_keeps_every_attempt_once(tmp_path: Path) -> None:
    for key, starts in (("a", ["1.0", "3.0"]), ("b", ["2.0"]), ("running", ["4.0"])):
        (tmp_path / key).mkdir()
        lines = "".join(f"{t} {key} pid=7\n" for t in starts)
        (tmp_path / key / "attempts.log").write_text(lines)
    (tmp_path / "a" / "done").touch()
    assert fold_finished_trials(tmp_path, ["a", "b", "never-started"]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["attempts.log", "running"]
    (tmp_path / "b").mkdir()  # a driver killed after appending, before removing: folded again
    (tmp_path / "b" / "attempts.log").write_text("2.0 b pid=7\n")
    fold_finished_trials(tmp_path, ["b"])
    found = attempts_by_key(tmp_path)
    assert {key: len(lines) for key, lines in found.items()} == {"a": 2, "b": 1, "running": 1}
    assert [line.split()[0] for line in found["a"]] == ["1.0", "3.0"]


# --- the ledger in launches -----------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.usefixtures("local_ray")
def test_launch_keeps_a_ledger_status_reads_and_a_lost_or_lagging_one_reruns_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = write_spec(tmp_path, "ledgered")
    lines: list[str] = []
    first = launcher.launch(spec, root=tmp_path, write=lines.append)
    assert first.ok
    sweep = SweepDir(tmp_path, "ledgered")
    with Ledger(sweep.ledger_file) as ledger:
        entries = ledger.entries()
        assert ledger.planned() == {"pretrain": 1, "probe": 0, "finetune": 2}
    assert len(entries) == 3 and {e.status for e in entries.values()} == {FINISHED}
    assert finished_runs_per_key(sweep) == Counter(set(entries))  # one FINISHED run per key
    # Finished trials leave no folder each, only their lines in one attempts log.
    assert not [path for path in sweep.trials_dir.iterdir() if path.is_dir()]
    assert len(attempts_by_key(sweep.trials_dir)) == 2
    from_ledger = sweep_status(sweep)
    assert from_ledger == listed_status(sweep, sweep.tracking_uri())
    assert from_ledger.totals() == {"done": 3, "running": 0, "failed": 0, "pending": 0}

    # Behind: the driver died between a run's end in MLflow and its ledger row.
    newest = max(entries.values(), key=lambda e: e.end_time or 0)
    with sqlite3.connect(sweep.ledger_file) as db:
        db.execute("DELETE FROM jobs WHERE key = ?", (newest.key,))
    assert sweep_status(sweep).totals()["done"] == 3  # status folds MLflow's newer runs in
    monkeypatch.setattr(launcher, "start_ray", no_ray)
    again = launcher.launch(spec, root=tmp_path, write=lines.append)
    assert sum(again.ran.values()) == 0 and sum(again.skipped.values()) == 3
    assert any("nothing to do" in line for line in lines)

    # Lost: the file is gone; it is rebuilt from MLflow and nothing runs twice.
    sweep.ledger_file.unlink()
    launcher.launch(spec, root=tmp_path, write=lines.append)
    with Ledger(sweep.ledger_file) as ledger:
        assert set(ledger.entries()) == set(entries)
    assert set(finished_runs_per_key(sweep).values()) == {1}

    # Lost, with a job still to do (the spec extended): that one runs, the others do not.
    monkeypatch.undo()
    sweep.ledger_file.unlink()
    more = write_spec(tmp_path, "ledgered", seeds=3)
    third = launcher.launch(more, root=tmp_path, extend=True, write=lines.append)
    assert third.ran.get("finetune") == 1 and third.skipped["finetune"] == 2
    per_key = finished_runs_per_key(sweep)
    assert len(per_key) == 4 and set(per_key.values()) == {1}
    assert sweep_status(sweep).totals() == {"done": 4, "running": 0, "failed": 0, "pending": 0}


def test_status_counts_a_dead_launchs_running_jobs_as_pending(tmp_path: Path) -> None:
    sweep = SweepDir(tmp_path, "dead")
    sweep.create()
    uri = sweep.default_tracking_uri()
    sweep.write_state({"name": "dead", "tracking_uri": uri})
    client = MlflowClient(uri)
    experiment = client.create_experiment(experiment_name("dead"))
    done = mlflow_job(client, experiment, "a", FINISHED)
    with Ledger(sweep.ledger_file) as ledger:
        ledger.reset({"tracking_uri": uri, "experiment_id": experiment})
        ledger.set_planned({"pretrain": 0, "finetune": 3})
        ledger.write([Entry("a", "finetune", "a", FINISHED, done, None, 1)])
        ledger.started("b", "finetune", "b", "r-b")  # its launch died: no lock is held
    status = sweep_status(sweep)
    assert status.counts["finetune"] == Counter(done=1, running=0, failed=0, pending=2)


def test_a_damaged_ledger_is_set_aside_and_rebuilt(tmp_path: Path) -> None:
    from raysweep.driver.launcher import open_ledger

    sweep = SweepDir(tmp_path, "damaged")
    sweep.create()
    sweep.ledger_file.write_bytes(b"not a database at all" * 100)
    lines: list[str] = []
    with open_ledger(sweep, lines.append) as ledger:
        assert ledger.entries() == {} and ledger.watermark() is None  # rebuilt by catch-up
    assert (sweep.path / "ledger.db.damaged").is_file()
    assert len(lines) == 1 and "rebuilding it from MLflow" in lines[0]
