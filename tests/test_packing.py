"""Packing: several fine-tune jobs per Tune trial, each still recorded as its own MLflow run."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from micro_specs import one_source_spec
from mlflow.tracking import MlflowClient
from test_resume import JOB, context

from raysweep.driver import packing
from raysweep.driver.launcher import launch
from raysweep.plan import Job, make_plan
from raysweep.protocol import DONE_KEY, JOB_KEY, START_KEY, attempts_by_key, mark_done
from raysweep.schema import ERROR_TAG, KEY_TAG, NODE_TAG, experiment_name
from raysweep.spec import load_spec
from raysweep.worker.finetune import run_bundle
from raysweep.worker.inputs import NAN_KEYS_ENV

pytestmark = pytest.mark.slow

GRID = {
    "targets": ["digits"],
    "subset_sizes": [50],
    "seeds": 4,
    "blocks": [0, 1],
    "finetune": {
        "optimizer": {"lr": 0.05, "batch_size": 25},
        "rules": [{"up_to": "all", "epochs": 3, "eval_every": 2}],
    },
    "resources": {"cpu": 1},
}


def jobs(n: int) -> list[Job]:
    return [Job(key=f"k{i}", stage="finetune", name=f"j{i}", config={}) for i in range(n)]


def test_bundle_sizes_follow_the_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(packing.PACK_MIN_ENV, raising=False)
    assert packing.bundle_jobs(jobs(99), slots=2) is None  # below PACK_MIN_TRIALS
    # 200 jobs, 2 slots: ⌈200/16⌉ = 13 bundles, rounded up to 14 (a multiple of the slots).
    bundles = packing.bundle_jobs(jobs(200), slots=2)
    assert bundles is not None and len(bundles) == 14
    assert sorted({len(b) for b in bundles}) == [14, 15]
    assert sorted(j.key for b in bundles for j in b) == sorted(j.key for j in jobs(200))
    assert len(packing.bundle_jobs(jobs(1000), slots=2) or []) == 64
    # Few jobs on many slots: BUNDLES_PER_SLOT × slots bundles, never more than jobs.
    assert len(packing.bundle_jobs(jobs(100), slots=8) or []) == 32
    monkeypatch.setenv(packing.PACK_MIN_ENV, "3")
    assert [len(b) for b in packing.bundle_jobs(jobs(3), slots=2) or []] == [1, 1, 1]
    assert packing.bundle_jobs(jobs(2), slots=2) is None


def test_retried_bundle_skips_jobs_marked_done(tmp_path: Path) -> None:
    ctx = context(tmp_path, "trials", every_s=60.0)
    short = {**JOB, "epochs": 1, "eval_epochs": [1], "lr_milestones": []}
    bundle = [{**short, "key": "first"}, {**short, "key": "second", "seed": 7}]
    mark_done(ctx.trial_dir("first"))
    rows: list[dict[str, Any]] = []
    run_bundle(bundle, ctx, rows.append)
    # One report opens the job, one carries its only evaluation and its end: nothing of "first".
    assert rows[0] == {START_KEY: "second", "epoch": 0}
    assert len(rows) == 2 and rows[1][JOB_KEY] == "second" and rows[1][DONE_KEY] is True
    assert START_KEY not in rows[1]
    assert rows[1]["epoch"] == 1 and 0.0 <= rows[1]["test/acc"] <= 100.0
    assert (ctx.trial_dir("second") / "done").is_file()
    assert not (ctx.trial_dir("first") / "attempts.log").exists()  # never started


def runs_of(root: Path, name: str) -> tuple[MlflowClient, dict[str, Any]]:
    client = MlflowClient(tracking_uri=f"sqlite:///{root / name / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(experiment_name(name))
    runs = client.search_runs([experiment.experiment_id], "tags.`raysweep.stage` = 'finetune'")
    return client, {run.data.tags[KEY_TAG]: run for run in runs}


def history(client: MlflowClient, run: Any) -> dict[str, list[tuple[int, float]]]:
    return {
        name: [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, name)]
        for name in sorted(run.data.metrics)
    }


@pytest.fixture(scope="module")
def two_sweeps(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The same 8 jobs launched packed (2 bundles of 4) and unpacked; job 1 diverges (NaN)."""
    import ray

    folder = tmp_path_factory.mktemp("packing")
    plans = {}
    for name in ("packed", "plain"):
        path = folder / f"{name}.yaml"
        path.write_text(yaml.safe_dump(one_source_spec(name, **GRID)))
        plans[name] = (path, make_plan(load_spec(path)))
    poisoned = {name: plan.jobs["finetune"][1].key for name, (_, plan) in plans.items()}
    os.environ[NAN_KEYS_ENV] = ",".join(poisoned.values())  # Ray's workers inherit it at init
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    lines: list[str] = []
    patch = pytest.MonkeyPatch()
    try:
        patch.setenv(packing.PACK_MIN_ENV, "1")
        patch.setattr(packing, "BUNDLES_PER_SLOT", 1)  # 2 slots → 2 bundles of 4 jobs
        packed = launch(plans["packed"][0], root=folder / "runs", write=lines.append)
        patch.undo()
        plain = launch(plans["plain"][0], root=folder / "runs", write=lambda _: None)
    finally:
        patch.undo()
        ray.shutdown()
        del os.environ[NAN_KEYS_ENV]
    return {
        "root": folder / "runs",
        "plans": {name: plan for name, (_, plan) in plans.items()},
        "poisoned": poisoned,
        "outcomes": {"packed": packed, "plain": plain},
        "lines": lines,
    }


def test_packed_sweep_runs_bundles_and_one_run_per_job(two_sweeps: dict[str, Any]) -> None:
    root, plan = two_sweeps["root"], two_sweeps["plans"]["packed"]
    trial_dirs = [p.name for p in (root / "packed" / "tune").glob("finetune-*/*") if p.is_dir()]
    assert len(trial_dirs) == 2 and all(d.startswith("bundle") for d in trial_dirs)
    client, runs = runs_of(root, "packed")
    keys = [job.key for job in plan.jobs["finetune"]]
    assert sorted(runs) == sorted(keys)
    poisoned = two_sweeps["poisoned"]["packed"]
    assert runs[poisoned].info.status == "FAILED"
    assert "non-finite training loss" in runs[poisoned].data.tags[ERROR_TAG]
    assert {runs[k].info.status for k in keys if k != poisoned} == {"FINISHED"}
    outcome = two_sweeps["outcomes"]["packed"]
    assert outcome.ran["finetune"] == 7 and len(outcome.failed["finetune"]) == 1
    for key in keys:
        run = runs[key]
        assert NODE_TAG in run.data.tags
        assert len(client.list_artifacts(run.info.run_id, "subset")) == 1
        if key != poisoned:
            steps = [m.step for m in client.get_metric_history(run.info.run_id, "test/acc")]
            assert steps == [1, 3] == plan.jobs["finetune"][0].config["eval_epochs"]
        assert len(attempts_by_key(root / "packed" / "trials")[key]) == 1
    assert any("8/8 (100%) · 1 failed" in line for line in two_sweeps["lines"])


def test_packed_metrics_equal_unpacked(two_sweeps: dict[str, Any]) -> None:
    root = two_sweeps["root"]
    packed_client, packed = runs_of(root, "packed")
    plain_client, plain = runs_of(root, "plain")
    plain_jobs = two_sweeps["plans"]["plain"].jobs["finetune"]
    packed_jobs = two_sweeps["plans"]["packed"].jobs["finetune"]
    assert len(list((root / "plain" / "tune").glob("finetune-*/bundle*"))) == 0
    compared = 0
    for packed_job, plain_job in zip(packed_jobs, plain_jobs, strict=True):
        assert packed_job.config == plain_job.config
        a, b = packed[packed_job.key], plain[plain_job.key]
        assert a.info.status == b.info.status
        if a.info.status == "FINISHED":
            assert history(packed_client, a) == history(plain_client, b)
            compared += 1
    assert compared == 7


class FakeTracker:
    """Records what the recorder would write to MLflow."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.metrics: list[tuple[str, int]] = []
        self.ended: dict[str, str | None] = {}
        self.client = type("Client", (), {"log_artifact": lambda *a, **k: None})()

    def start_job(self, job: Job) -> str:
        self.started.append(job.key)
        return job.key

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int) -> None:
        self.metrics.append((run_id, step))

    def tag_node(self, run_id: str, node_id: str, hostname: str) -> None:
        pass

    def end_job(self, run_id: str, error: str | None = None) -> None:
        self.ended[run_id] = error


def test_recorder_routes_bundle_results_and_fails_only_open_jobs(tmp_path: Path) -> None:
    from raysweep.driver.progress import Progress
    from raysweep.driver.recorder import JobRecorder
    from raysweep.store import Store

    keys = ["a", "b", "c"]
    config = {"target": "digits", "subset_size": 10, "seed": 0}
    known = {k: Job(key=k, stage="finetune", name=k, config=config) for k in keys}
    tracker, lines = FakeTracker(), []
    recorder = JobRecorder(tracker, known, Store(tmp_path), Progress("ft", 3, write=lines.append))
    trial = type("Trial", (), {"config": {"bundle": {"jobs": [{"key": k} for k in keys]}}})()
    trial.error_file = None
    row = {"test/acc": 50.0, "n_train": 10}
    results: list[dict[str, Any]] = [
        {START_KEY: "a", "epoch": 0},
        {**row, JOB_KEY: "a", "epoch": 1, DONE_KEY: True, START_KEY: "b"},
        {**row, JOB_KEY: "b", "epoch": 1},
        # the bundle's node died; Tune retried it: "a" is skipped, "b" re-reports epoch 1
        {START_KEY: "b", "epoch": 0},
        {**row, JOB_KEY: "b", "epoch": 1},
        {**row, JOB_KEY: "b", "epoch": 2, DONE_KEY: True, START_KEY: "c"},
    ]
    recorder.on_trial_start(0, [], trial)
    assert tracker.started == []  # a bundle's runs open on their START_KEY result
    for result in results:
        recorder.on_trial_result(0, [], trial, result)
    recorder.on_trial_error(0, [], trial)
    assert tracker.started == ["a", "b", "c"]
    assert tracker.metrics == [("a", 1), ("b", 1), ("b", 2)]
    assert tracker.ended["a"] is None and tracker.ended["b"] is None
    assert "without an error message" in str(tracker.ended["c"])
    assert recorder.finished == {"a", "b"} and set(recorder.failures) == {"c"}
    assert lines[-1].startswith("[ft] 3/3 (100%) · 1 failed")
