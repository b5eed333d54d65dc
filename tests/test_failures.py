"""A diverging trial is FAILED with its reason, the others finish; --retry-failed completes it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from micro_specs import one_source_spec
from mlflow.tracking import MlflowClient

from raysweep.cli import main
from raysweep.driver.launcher import launch
from raysweep.plan import make_plan
from raysweep.protocol import attempts_by_key
from raysweep.schema import ERROR_TAG, KEY_TAG, experiment_name
from raysweep.spec import load_spec
from raysweep.worker.inputs import NAN_KEYS_ENV

pytestmark = pytest.mark.slow

SPEC = one_source_spec(
    "nan",
    **{
        "targets": ["digits"],
        "subset_sizes": [50],
        "seeds": 3,
        "blocks": [0],
        "finetune": {
            "optimizer": {"lr": 0.05, "batch_size": 25},
            "rules": [{"up_to": "all", "epochs": 2}],
        },
    },
)


def start_ray() -> None:
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)


def test_nan_trial_fails_alone_and_retry_completes_it(tmp_path: Path) -> None:
    import ray

    spec_path = tmp_path / "nan.yaml"
    spec_path.write_text(yaml.safe_dump(SPEC))
    plan = make_plan(load_spec(spec_path))
    poisoned = plan.jobs["finetune"][1].key
    os.environ[NAN_KEYS_ENV] = poisoned  # Ray's workers inherit the environment at init
    start_ray()
    try:
        first = launch(spec_path, root=tmp_path / "runs", write=lambda _: None)
    finally:
        ray.shutdown()
        del os.environ[NAN_KEYS_ENV]
    assert first.ran["finetune"] == 2 and len(first.failed["finetune"]) == 1
    assert "non-finite training loss" in first.failed["finetune"][0]

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'runs' / 'nan' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(experiment_name("nan"))
    runs = client.search_runs([experiment.experiment_id], "tags.`raysweep.stage` = 'finetune'")
    status = {r.data.tags[KEY_TAG]: r.info.status for r in runs}
    assert status[poisoned] == "FAILED"
    assert sorted(status.values()) == ["FAILED", "FINISHED", "FINISHED"]
    failed = next(r for r in runs if r.data.tags[KEY_TAG] == poisoned)
    assert "non-finite training loss" in failed.data.tags[ERROR_TAG]
    assert main(["--root", str(tmp_path / "runs"), "status", "nan"]) == 1  # a job failed

    start_ray()
    try:
        skipped = launch(spec_path, root=tmp_path / "runs", write=lambda _: None)
        assert skipped.ran["finetune"] == 0  # FAILED jobs wait for --retry-failed
        retried = launch(spec_path, root=tmp_path / "runs", retry_failed=True, write=lambda _: None)
    finally:
        ray.shutdown()
    assert retried.ran["finetune"] == 1 and retried.ok
    runs = client.search_runs([experiment.experiment_id], "tags.`raysweep.role` = 'job'")
    assert sorted(r.data.tags[KEY_TAG] for r in runs) == sorted(plan.keys())
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert main(["--root", str(tmp_path / "runs"), "status", "nan"]) == 0


def test_missing_target_data_fails_only_its_jobs_with_the_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import ray

    from raysweep.cli import main

    spec = {
        **SPEC,
        "name": "nodata",
        "targets": ["digits", "mnist"],
        "seeds": 1,
        "data_root": str(tmp_path / "data"),
        "download": False,
    }
    spec_path = tmp_path / "nodata.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    start_ray()
    try:
        code = main(["--root", str(tmp_path / "runs"), "launch", str(spec_path)])
    finally:
        ray.shutdown()
    out = capsys.readouterr().out
    assert code == 1
    failed = [line for line in out.splitlines() if line.strip().startswith("FAILED")]
    assert len(failed) == 1 and "natural→mnist" in failed[0]
    assert f"dataset 'mnist' not found in {tmp_path / 'data'}" in failed[0]
    assert "download: true" in failed[0]
    attempts = attempts_by_key(tmp_path / "runs" / "nodata" / "trials")
    assert sorted(len(lines) for lines in attempts.values()) == [1, 1]  # no retries
