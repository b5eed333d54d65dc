"""Interruptions: a trial resumes from its saved epoch; a killed sweep ends with one run per job."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from micro_specs import one_source_spec
from mlflow.tracking import MlflowClient

from raysweep.data import dataset_info
from raysweep.models import build_model, save_checkpoint
from raysweep.plan import make_plan
from raysweep.protocol import WorkerContext
from raysweep.schema import KEY_TAG, experiment_name
from raysweep.spec import load_spec
from raysweep.worker.finetune import finetune_job

JOB: dict[str, Any] = {
    "key": "k-resume-test",
    "source_key": "src",
    "target": "digits",
    "subset_size": 100,
    "seed": 20_000_000,
    "blocks": 1,
    "epochs": 6,
    "eval_epochs": [1, 3, 5, 6],
    "lr_milestones": [4],
    "lr_decay": 0.1,
    "optimizer": {
        "lr": 0.05,
        "momentum": 0.9,
        "weight_decay": 5e-4,
        "batch_size": 32,
        "nesterov": False,
    },
    "augment": "flip_crop",
    "update_frozen_bn_stats": False,
    "head_init": "default",
    "normalization": "source",
}


class Interrupt(Exception):
    pass


def context(tmp_path: Path, trials: str, every_s: float) -> WorkerContext:
    """One shared store (so both runs start from the same source), separate trial folders."""
    store = tmp_path / "store"
    checkpoint = store / "checkpoints" / "src.pt"
    if not checkpoint.is_file():
        info = dataset_info("textures")
        source = build_model("small_cnn", info.num_classes, info.mean, info.std)
        save_checkpoint(checkpoint, source, {"key": "src"})
    return WorkerContext(
        store_root=str(store),
        data_root=None,
        download=False,
        threads=1,
        trials_root=str(tmp_path / trials),
        checkpoint_every_s=every_s,
    )


def test_interrupted_trial_resumes_from_its_epoch_with_identical_results(tmp_path: Path) -> None:
    whole: list[dict] = []
    finetune_job(JOB, context(tmp_path, "a", every_s=0.0), whole.append)

    ctx = context(tmp_path, "b", every_s=0.0)
    first: list[dict] = []

    def crash_after_epoch_3(row: dict) -> None:
        first.append(row)
        if row["epoch"] == 3:
            raise Interrupt

    with pytest.raises(Interrupt):
        finetune_job(JOB, ctx, crash_after_epoch_3)
    assert (ctx.trial_dir(JOB["key"]) / "state.pt").is_file()
    second: list[dict] = []
    finetune_job(JOB, ctx, second.append)

    assert [r["epoch"] for r in second] == [1, 3, 5, 6]  # saved history re-reported first
    assert len(second) == len(whole)
    for resumed, uninterrupted in zip(second, whole, strict=True):
        assert resumed == pytest.approx(uninterrupted)
    attempts = (ctx.trial_dir(JOB["key"]) / "attempts.log").read_text().splitlines()
    assert len(attempts) == 2
    assert not (ctx.trial_dir(JOB["key"]) / "state.pt").exists()  # cleared at the end


KILL_SPEC = one_source_spec(
    "killed",
    **{
        "targets": ["digits", "shapes_outline"],
        "subset_sizes": [100, 200],
        "seeds": 4,
        "blocks": [0, 1],
        "finetune": {
            "optimizer": {"lr": 0.05, "batch_size": 32},
            "rules": [{"up_to": "all", "epochs": 6, "eval_every": 2}],
        },
        "resources": {"cpu": 1},
    },
)


def finished_finetune_runs(db: Path) -> int:
    if not db.is_file():
        return 0
    try:
        with sqlite3.connect(db, timeout=1) as conn:
            rows = conn.execute(
                "SELECT COUNT(*) FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid "
                "WHERE r.status = 'FINISHED' AND t.key = 'raysweep.stage' AND t.value = 'finetune'"
            ).fetchone()
        return int(rows[0])
    except sqlite3.Error:
        return 0


def raysweep(*args: str, root: Path) -> list[str]:
    return [sys.executable, "-m", "raysweep.cli", "--root", str(root), *args]


@pytest.mark.slow
def test_sigkill_mid_sweep_then_resume(tmp_path: Path) -> None:
    spec_path = tmp_path / "killed.yaml"
    spec_path.write_text(yaml.safe_dump(KILL_SPEC))
    root = tmp_path / "runs"
    db = root / "killed" / "mlflow.db"
    log = open(tmp_path / "launch.log", "w")
    driver = subprocess.Popen(
        raysweep("launch", str(spec_path), root=root),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 300
    while finished_finetune_runs(db) < 5:
        assert driver.poll() is None, (tmp_path / "launch.log").read_text()[-2000:]
        assert time.monotonic() < deadline, "sweep made no progress"
        time.sleep(0.5)
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    time.sleep(2)
    try:  # the Ray processes that driver started share its session: stop them too
        os.killpg(driver.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    plan = make_plan(load_spec(spec_path))
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    experiment = client.get_experiment_by_name(experiment_name("killed"))
    before = {
        r.data.tags[KEY_TAG]
        for r in client.search_runs([experiment.experiment_id], "attributes.status = 'FINISHED'")
        if r.data.tags.get("raysweep.stage") == "finetune"
    }
    assert 5 <= len(before) < len(plan.jobs["finetune"])

    done = subprocess.run(
        raysweep("resume", "killed", root=root), capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-2000:]

    runs = client.search_runs([experiment.experiment_id], "tags.`raysweep.role` = 'job'")
    per_key = Counter(r.data.tags[KEY_TAG] for r in runs)
    assert set(per_key) == plan.keys()
    assert set(per_key.values()) == {1}
    assert {r.info.status for r in runs} == {"FINISHED"}
    trials = root / "killed" / "trials"
    for key in before:  # nothing that had finished was trained again
        assert len((trials / key / "attempts.log").read_text().splitlines()) == 1
