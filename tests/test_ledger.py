"""Issue #14: the sweep ledger under concurrency, hostile input, a full disk and a bad store.

Every test here asserts what a user would see (exit status, the one error line) and what the
record holds afterwards (runs per job in MLflow, files on disk).
"""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml
from micro_specs import one_source_spec
from micro_specs import write_spec as write_micro_spec
from mlflow.entities import Metric, ViewType
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from raysweep.cli import main
from raysweep.driver import cluster
from raysweep.driver.cluster import ClusterError, autoscaler_node_types, check_resources
from raysweep.driver.progress import Progress
from raysweep.driver.recorder import JobRecorder
from raysweep.plan import Job, make_plan
from raysweep.protocol import WorkerContext
from raysweep.schema import KEY_TAG, LAUNCH_TAG, experiment_name
from raysweep.spec import load_spec, parse_spec
from raysweep.store import Store, sha256_file
from raysweep.sweepdir import SweepDir
from raysweep.worker.finetune import finetune_job
from raysweep.worker.sources import pretrain_source

ROOT = Path(__file__).resolve().parents[1]
GRID = {
    "targets": ["digits"],
    "subset_sizes": [50],
    "seeds": 4,
    "blocks": [0, 1],
    "finetune": {
        "optimizer": {"lr": 0.05, "batch_size": 25},
        "rules": [{"up_to": "all", "epochs": 3}],
    },
    "resources": {"cpu": 1},
}


def write_spec(folder: Path, name: str, **changes: Any) -> Path:
    return write_micro_spec(folder, name, GRID, **changes)


def one_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("raysweep: error: ") and "\n" not in err, err
    return err


def raysweep(*args: str, cwd: Path = ROOT) -> subprocess.Popen[str]:
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "raysweep.cli", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def all_runs(db: Path, sweep: str) -> list[Any]:
    client = MlflowClient(f"sqlite:///{db}")
    experiment = client.get_experiment_by_name(experiment_name(sweep))
    return client.search_runs([experiment.experiment_id], "", run_view_type=ViewType.ALL)


# --- one launch per sweep -------------------------------------------------------------------


@pytest.mark.slow
def test_concurrent_launches_of_one_sweep_leave_one_run_per_job(tmp_path: Path) -> None:
    """Two launches started together, then a third 10 s later: one runs, the others are
    refused naming it, and every job ends with exactly one run (none killed, none deleted)."""
    spec = write_spec(tmp_path, "twice")
    root = str(tmp_path / "runs")
    first = raysweep("--root", root, "launch", str(spec))
    second = raysweep("--root", root, "launch", str(spec))
    time.sleep(10)
    running_at_10s = {id(p) for p in (first, second) if p.poll() is None}
    third = raysweep("--root", root, "launch", str(spec))
    third_out, third_err = third.communicate(timeout=120)
    outcomes = [(p, *p.communicate(timeout=600)) for p in (first, second)]
    codes = sorted(p.returncode for p, _, _ in outcomes)
    assert codes == [0, 2], outcomes
    refused = next(err for p, _, err in outcomes if p.returncode == 2)
    assert "sweep 'twice' is being run by launch" in refused and "pid" in refused
    winner = next(p for p, _, _ in outcomes if p.returncode == 0)
    assert id(winner) in running_at_10s, "the winning launch ended within 10 s: no overlap"
    assert third.returncode == 2 and "is being run by launch" in third_err, third_err

    runs = all_runs(tmp_path / "runs" / "twice" / "mlflow.db", "twice")
    jobs = [r for r in runs if r.data.tags.get("raysweep.role") == "job"]
    plan = make_plan(load_spec(spec))
    assert Counter(r.data.tags[KEY_TAG] for r in jobs) == Counter(plan.keys())
    assert {r.info.status for r in jobs} == {"FINISHED"}
    assert {r.info.lifecycle_stage for r in runs} == {"active"}  # nothing retired
    assert len({r.data.tags[LAUNCH_TAG] for r in runs}) == 1  # all written by the winner
    assert not (tmp_path / "runs" / "twice" / "launch.lock").read_text()  # released


def test_a_held_lock_names_its_holder_and_is_released(tmp_path: Path) -> None:
    from raysweep.driver.lock import SweepBusy, launch_lock

    sweep = SweepDir(tmp_path, "held")
    with launch_lock(sweep, "aaaa1111"):
        holder = json.loads(sweep.lock_file.read_text())
        assert holder["launch"] == "aaaa1111" and holder["pid"] == os.getpid()
        with pytest.raises(SweepBusy, match=r"launch aaaa1111 \(pid \d+ on "):
            with launch_lock(sweep, "bbbb2222"):
                pass
    with launch_lock(sweep, "cccc3333"):  # free again once the holder leaves
        assert json.loads(sweep.lock_file.read_text())["launch"] == "cccc3333"


def test_two_sweeps_needing_one_source_train_it_once(tmp_path: Path) -> None:
    """The store's per-key lock: concurrent builders of one source, one trains, one reuses."""
    spec = parse_spec(one_source_spec("shared"), "shared.yaml")
    job = make_plan(spec).jobs["pretrain"][0]
    ctx = WorkerContext(str(tmp_path / "store"), None, False, 1, str(tmp_path / "trials"))
    with ThreadPoolExecutor(2) as pool:
        records = list(pool.map(lambda _: pretrain_source(job.key, job.config, ctx), range(2)))
    assert sorted(r["reused"] for r in records) == [False, True]
    assert records[0]["sha256"] == records[1]["sha256"]


# --- a store that checks its files ----------------------------------------------------------


def test_a_flipped_byte_in_a_checkpoint_fails_its_jobs_and_pretrain_rebuilds_it(
    tmp_path: Path,
) -> None:
    spec = parse_spec(one_source_spec("flip", **GRID), "flip.yaml")
    plan = make_plan(spec)
    source, fine = plan.jobs["pretrain"][0], plan.jobs["finetune"][0]
    ctx = WorkerContext(str(tmp_path / "store"), None, False, 1, str(tmp_path / "trials"))
    record = pretrain_source(source.key, source.config, ctx)
    checkpoint = Store(tmp_path / "store").checkpoint(source.key)
    data = bytearray(checkpoint.read_bytes())
    data[len(data) // 2] ^= 0x01
    checkpoint.write_bytes(bytes(data))

    rows: list[dict[str, Any]] = []
    finetune_job({**fine.config, "key": fine.key}, ctx, rows.append)
    assert len(rows) == 1 and "is corrupt" in rows[0]["raysweep_error"]
    assert "delete it and relaunch" in rows[0]["raysweep_error"]

    rebuilt = pretrain_source(source.key, source.config, ctx)  # a relaunch's pretrain task
    assert not rebuilt["reused"] and rebuilt["sha256"] == sha256_file(checkpoint)
    assert record["sha256"] != sha256_file(checkpoint) or bytes(data) != checkpoint.read_bytes()
    rows.clear()
    finetune_job({**fine.config, "key": fine.key}, ctx, rows.append)
    assert "test/acc" in rows[-1]


def test_a_corrupt_subset_file_is_rewritten(tmp_path: Path) -> None:
    store = Store(tmp_path)
    path = store.write_subset("digits", 50, 7, [1, 2, 3])
    assert store.subset_file_ok("digits", 50, 7, [1, 2, 3])
    path.write_text(path.read_text().replace("[1,", "[9,").replace("[1, ", "[9, "))
    assert not store.subset_file_ok("digits", 50, 7, [1, 2, 3])
    store.write_subset("digits", 50, 7, [1, 2, 3])
    assert json.loads(path.read_text())["indices"] == [1, 2, 3]


# --- names ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["status", "../../outside"], "sweep name '../../outside' is not a valid name"),
        (["status", ".."], "sweep name '..' is not a valid name"),
        (["resume", "a/b"], "sweep name 'a/b' is not a valid name"),
        (["analyze", ".hidden"], "sweep name '.hidden' is not a valid name"),
        (["--root", "s3://bucket/runs", "status", "x"], "runs root s3://bucket/runs is a URI"),
    ],
)
def test_names_and_roots_never_become_stray_paths(
    args: list[str],
    message: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    work = tmp_path / "work" / "deep"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    monkeypatch.delenv("RAYSWEEP_ROOT", raising=False)
    assert main(args) == 2
    assert message in one_line(capsys)
    assert [p for p in tmp_path.rglob("*") if p != work and p != work.parent] == []


# --- read-only commands never write ---------------------------------------------------------


def launched_but_never_recorded(tmp_path: Path) -> SweepDir:
    """A sweep folder with its spec copy and sweep.json, but no tracking database yet."""
    sweep = SweepDir(tmp_path / "runs", "quiet")
    sweep.path.mkdir(parents=True)
    sweep.spec_copy.write_text(write_spec(tmp_path, "quiet").read_text())
    sweep.write_state({"name": "quiet", "tracking_uri": sweep.default_tracking_uri()})
    return sweep


def test_status_analyze_and_ui_create_no_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    sweep = launched_but_never_recorded(tmp_path)
    monkeypatch.chdir(tmp_path)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    root = str(sweep.root)
    assert main(["--root", root, "status", "quiet"]) == 0
    assert "pending" in capsys.readouterr().out
    assert main(["--root", root, "analyze", "quiet"]) == 2
    assert "has no finished runs yet" in one_line(capsys)
    assert main(["--root", root, "ui", "quiet"]) == 2
    assert "has no tracking store yet" in one_line(capsys)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_ui_refuses_a_busy_port(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sweep = launched_but_never_recorded(tmp_path)
    sweep.path.joinpath("mlflow.db").touch()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["--root", str(sweep.root), "ui", "quiet", "--port", str(port)]) == 2
    assert f"port {port} on 127.0.0.1 is not free" in one_line(capsys)
    assert main(["--root", str(sweep.root), "ui", "quiet", "--port", "70000"]) == 2
    assert "--port 70000 is not a TCP port" in one_line(capsys)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"name": "quiet", "tracking', "sweep.json is unreadable (JSONDecodeError)"),
        ('{"name": "quiet"}', "sweep.json has no tracking_uri"),
        ("[1, 2]", "sweep.json has no tracking_uri"),
    ],
)
def test_a_damaged_sweep_json_is_one_line(
    content: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sweep = launched_but_never_recorded(tmp_path)
    sweep.state_file.write_text(content)
    assert main(["--root", str(sweep.root), "status", "quiet"]) == 2
    assert message in one_line(capsys)


def test_another_tracking_uri_on_a_relaunch_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sweep = launched_but_never_recorded(tmp_path)
    other = f"sqlite:///{tmp_path / 'other.db'}"
    args = ["launch", str(sweep.spec_copy), "--tracking-uri", other]
    assert main(["--root", str(sweep.root), *args]) == 2
    err = one_line(capsys)
    assert f"records to {sweep.default_tracking_uri()}, not {other}" in err
    assert "--switch-tracking-uri" in err
    assert not (tmp_path / "other.db").exists() and not sweep.path.joinpath("mlflow.db").exists()


# --- a full disk while the store is created -------------------------------------------------


@pytest.mark.slow
def test_disk_full_while_creating_the_store_then_a_clean_resume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import mlflow.store.db.utils as db_utils
    import ray

    spec = tmp_path / "full.yaml"
    spec.write_text(yaml.safe_dump(one_source_spec("full")))
    real = db_utils._initialize_tables

    def half_then_full(engine: Any) -> None:
        with engine.begin() as connection:  # some tables get written, then the disk is full
            connection.exec_driver_sql("CREATE TABLE spans (id INTEGER)")
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path))

    monkeypatch.setattr(db_utils, "_initialize_tables", half_then_full)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        assert main(["--root", str(tmp_path / "runs"), "launch", str(spec)]) == 2
        assert "no space left on the device" in one_line(capsys)
        folder = tmp_path / "runs" / "full"
        assert not (folder / "mlflow.db").exists() and not list(folder.glob(".mlflow.db.*"))
        monkeypatch.setattr(db_utils, "_initialize_tables", real)  # space freed
        assert main(["--root", str(tmp_path / "runs"), "launch", str(spec)]) == 0
    finally:
        ray.shutdown()
    runs = all_runs(folder / "mlflow.db", "full")
    assert sorted(r.info.status for r in runs) == ["FINISHED", "FINISHED"]  # parent + source


# --- impossible resources -------------------------------------------------------------------


def test_impossible_resources_fail_before_anything_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import ray

    spec = write_spec(tmp_path, "gpu", resources={"cpu": 1, "gpu": 1})
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        assert main(["--root", str(tmp_path / "runs"), "launch", str(spec)]) == 2
        err = one_line(capsys)
        with pytest.raises(ClusterError, match="asks for 3 CPU"):
            check_resources(load_spec(write_spec(tmp_path, "cpu", resources={"cpu": 3})))
    finally:
        ray.shutdown()
    assert "a fine-tune trial asks for 1 CPU and 1 GPU, but no node" in err
    assert "(largest: 2 CPU, 0 GPU)" in err
    assert not (tmp_path / "runs" / "gpu" / "mlflow.db").exists()


def test_autoscaler_node_types_count_as_capacity(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "bootstrap.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "available_node_types": {
                    "head": {"resources": {"CPU": 0}},
                    "gpu": {"resources": {"CPU": 8, "GPU": 1}},
                    "cloud": {"resources": {}},
                }
            }
        )
    )
    found = autoscaler_node_types(config)
    assert found is not None
    assert sorted(found, key=lambda node: (node["GPU"], node["CPU"])) == [
        {"CPU": 0.0, "GPU": 0.0},
        {"CPU": 8.0, "GPU": 1.0},
        {"CPU": float("inf"), "GPU": float("inf")},
    ]
    assert autoscaler_node_types(tmp_path / "none.yaml") is None
    monkeypatch.setattr(cluster, "node_capacities", lambda: [{"CPU": 2.0, "GPU": 0.0}])
    monkeypatch.setattr(cluster, "AUTOSCALER_CONFIG", config)
    check_resources(load_spec(write_spec(tmp_path, "g", resources={"cpu": 4, "gpu": 1})))


# --- the recorder survives MLflow ------------------------------------------------------------


class Trial:
    def __init__(self, key: str) -> None:
        self.config = {"job": {"key": key}}
        self.error_file = None


class FlakyTracker:
    """Records like SweepTracker, but MLflow refuses every write for one job."""

    def __init__(self, refused: str) -> None:
        self.refused = refused
        self.logged: dict[str, list[Metric]] = {}
        self.ended: dict[str, str | None] = {}

    def start_job(self, job: Job) -> str:
        return job.key

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int) -> None:
        if run_id == self.refused:
            raise MlflowException("database is locked")
        rows = [Metric(k, v, 0, step) for k, v in metrics.items()]
        self.logged.setdefault(run_id, []).extend(rows)

    def tag_node(self, run_id: str, node: str, host: str) -> None:
        pass

    def end_job(self, run_id: str, error: str | None = None) -> None:
        self.ended[run_id] = error


def test_an_mlflow_error_fails_one_job_not_the_sweep(tmp_path: Path) -> None:
    config = {"target": "digits", "subset_size": 50, "seed": 1}
    jobs = {key: Job("finetune", key, key, config) for key in "ab"}
    tracker = FlakyTracker(refused="a")
    lines: list[str] = []
    progress = Progress("finetune", 2, write=lines.append)
    recorder = JobRecorder(tracker, jobs, Store(tmp_path), progress)  # type: ignore[arg-type]
    for key in "ab":
        recorder.on_trial_start(0, [], Trial(key))
        recorder.on_trial_result(0, [], Trial(key), {"epoch": 1, "test/acc": 50.0})
        recorder.on_trial_complete(0, [], Trial(key))
    assert recorder.finished == {"b"} and tracker.ended == {"b": None}
    reason = recorder.failures["a"]
    assert "MLflow could not record it (MlflowException: database is locked)" in reason
    assert [m.value for m in tracker.logged["b"]] == [50.0]
    assert lines[-1].startswith("[finetune] 2/2 (100%) · 1 failed")


# --- status, signals -------------------------------------------------------------------------


@pytest.mark.slow
def test_sigterm_stops_a_launch_with_the_resume_hint_and_status_exits_1_on_failures(
    tmp_path: Path,
) -> None:
    spec = write_spec(tmp_path, "term")
    launch = raysweep("--root", str(tmp_path / "runs"), "launch", str(spec))
    assert launch.stdout is not None
    for line in launch.stdout:  # SIGTERM once the sources are training
        if line.startswith("[pretrain]"):
            break
    launch.send_signal(signal.SIGTERM)
    _, err = launch.communicate(timeout=120)
    assert launch.returncode == 130, err
    assert "raysweep: interrupted; `raysweep resume term` finishes what is missing" in err
    status = raysweep("--root", str(tmp_path / "runs"), "status", "term")
    out, _ = status.communicate(timeout=120)
    assert status.returncode == 0 and "pending" in out  # nothing failed: interrupted is not failed


def test_a_checkpoint_file_is_keyed_by_its_content(tmp_path: Path) -> None:
    from raysweep.data import dataset_info
    from raysweep.models import build_model, save_checkpoint
    from raysweep.spec import SpecError
    from raysweep.store import StoreError

    info = dataset_info("textures")
    model = build_model("small_cnn", info.num_classes, info.mean, info.std)
    first, moved = tmp_path / "a.pt", tmp_path / "elsewhere" / "b.pt"
    save_checkpoint(first, model, {"v": 1})
    moved.parent.mkdir()
    moved.write_bytes(first.read_bytes())

    def source_job(path: Path) -> Job:
        source = {**one_source_spec("x")["sources"][0], "checkpoint": str(path)}
        return make_plan(parse_spec({"name": "x", "sources": [source]}, "x.yaml")).jobs[
            "pretrain"
        ][0]

    original = source_job(first)
    assert source_job(moved).key == original.key  # same content, another path: same source
    save_checkpoint(first, model, {"v": 2})  # retrained in place
    assert source_job(first).key != original.key
    with pytest.raises(SpecError, match=r"checkpoint: cannot read checkpoint file '.*gone.pt'"):
        source_job(tmp_path / "gone.pt")
    ctx = WorkerContext(str(tmp_path / "store"), None, False, 1, str(tmp_path / "trials"))
    with pytest.raises(StoreError, match="changed since the sweep was planned"):
        pretrain_source(original.key, original.config, ctx)  # planned on v1, the file is v2
