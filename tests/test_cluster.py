"""Worker loss on a two-node Ray cluster: the trial on the dead node is retried, the sweep ends.

Tune's failure handling (``FailureConfig(max_failures=2)`` in raysweep.driver.finetune)
reschedules a trial whose node died; the driver, the only MLflow writer, keeps one run per job
throughout. The cluster is two `ray start --block` processes this test owns and stops by pid.
"""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml
from cluster_utils import CLUSTER_ENV, LocalCluster, RayNode, local_cluster
from micro_specs import one_source_spec
from mlflow.tracking import MlflowClient

from raysweep.plan import make_plan
from raysweep.protocol import attempts_by_key
from raysweep.schema import KEY_TAG, experiment_name
from raysweep.spec import load_spec

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

#: 8 fine-tune trials of ~5 s (16 epochs on 400 digits): with one CPU per node, two run at a
#: time, so one is surely on the worker node while the sweep is still far from done.
SPEC = one_source_spec(
    "nodeloss",
    **{
        "targets": ["digits"],
        "subset_sizes": [400],
        "seeds": 4,
        "blocks": [1, 2],
        "finetune": {
            "optimizer": {"lr": 0.05, "batch_size": 32},
            "rules": [{"up_to": "all", "epochs": 16, "eval_every": 4}],
        },
        "resources": {"cpu": 1},
    },
)
ATTEMPT = re.compile(r"^\S+ (?P<key>\S+) pid=(?P<pid>\d+)$")
#: GCS declares a node dead after missed health checks (Ray's default: 5 × 3 s); faster here so
#: the retry does not wait on it. Read by the head's GCS at start.
FAST_HEALTH_CHECKS = {
    "RAY_health_check_initial_delay_ms": "1000",
    "RAY_health_check_period_ms": "1000",
    "RAY_health_check_timeout_ms": "1000",
    "RAY_health_check_failure_threshold": "3",
}


def attempts(trials: Path) -> dict[str, list[int]]:
    """Per job key, the pid of each start of its trial (raysweep.worker.trial_state.log_attempt)."""
    found: dict[str, list[int]] = {}
    for key, lines in attempts_by_key(trials).items():
        for line in lines:
            match = ATTEMPT.match(line)
            if match:  # a line being written is skipped until it is whole
                found.setdefault(key, []).append(int(match["pid"]))
    return found


def last_evaluation(db: Path, key: str) -> int:
    """The last epoch whose test/acc the driver logged for ``key`` while its run is RUNNING.

    0 if there is none yet, or the run is already closed (the trial is over), or the driver
    holds the SQLite write lock right now.
    """
    if not db.is_file():
        return 0
    try:
        with sqlite3.connect(db, timeout=1) as conn:
            row = conn.execute(
                "SELECT MAX(m.step) FROM metrics m JOIN tags t ON t.run_uuid = m.run_uuid "
                "JOIN runs r ON r.run_uuid = m.run_uuid WHERE t.key = ? AND t.value = ? "
                "AND m.key = 'test/acc' AND r.status = 'RUNNING'",
                (KEY_TAG, key),
            ).fetchone()
        return int(row[0] or 0)
    except sqlite3.Error:
        return 0


def wait_for_trial_on(
    node: RayNode, trials: Path, db: Path, driver: subprocess.Popen, log: Path
) -> tuple[str, int]:
    """Poll until a trial runs on ``node``, past its first evaluation: return (key, pid).

    A reused actor keeps its pid across trials, so the pid alone does not say the trial still
    runs: its run must be RUNNING with an evaluation logged and most epochs still ahead.
    """
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert driver.poll() is None, f"launch ended early:\n{log.read_text()[-3000:]}"
        for key, pids in attempts(trials).items():
            if len(pids) == 1 and node.owns(pids[0]) and 1 <= last_evaluation(db, key) <= 9:
                return key, pids[0]
        time.sleep(0.2)
    raise AssertionError(f"no trial ran on the worker node in 120 s:\n{log.read_text()[-3000:]}")


def launch(cluster: LocalCluster, spec: Path, root: Path, log: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "raysweep.cli", "--root", str(root), "launch", str(spec)]
    with open(log, "w") as out:
        return subprocess.Popen(
            [*command, "--address", cluster.address],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **CLUSTER_ENV},
        )


def test_trial_on_a_killed_worker_node_is_retried_and_the_sweep_completes(
    tmp_path: Path,
) -> None:
    started = time.monotonic()
    spec_path = tmp_path / "nodeloss.yaml"
    spec_path.write_text(yaml.safe_dump(SPEC))
    plan = make_plan(load_spec(spec_path))
    root, log = tmp_path / "runs", tmp_path / "launch.log"
    sweep = root / "nodeloss"
    with local_cluster(tmp_path / "cluster", env=FAST_HEALTH_CHECKS) as cluster:
        driver = launch(cluster, spec_path, root, log)
        try:
            worker = cluster.workers[0]
            key, pid = wait_for_trial_on(worker, sweep / "trials", sweep / "mlflow.db", driver, log)
            worker.lose()
            killed_at, killed_wall = time.monotonic(), time.time()
            code = driver.wait(timeout=150)
        finally:
            if driver.poll() is None:
                driver.kill()
                driver.wait()
    output = log.read_text()
    assert code == 0, output[-3000:]

    client = MlflowClient(tracking_uri=f"sqlite:///{sweep / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(experiment_name("nodeloss"))
    runs = client.search_runs([experiment.experiment_id], "tags.`raysweep.role` = 'job'")
    per_key = Counter(r.data.tags[KEY_TAG] for r in runs)
    assert set(per_key) == plan.keys()
    assert set(per_key.values()) == {1}
    assert {r.info.status for r in runs} == {"FINISHED"}

    starts = attempts(sweep / "trials")
    assert set(starts) == {job.key for job in plan.jobs["finetune"]}
    assert len(starts[key]) == 2 and starts[key][0] == pid  # killed on the worker, then retried
    assert pid not in starts[key][1:]
    assert sorted(len(p) for p in starts.values()) == [1] * 7 + [2]
    retried = next(r for r in runs if r.data.tags[KEY_TAG] == key)
    accuracy = client.get_metric_history(retried.info.run_id, "test/acc")
    job = next(j for j in plan.jobs["finetune"] if j.key == key)
    assert [m.step for m in accuracy] == job.config["eval_epochs"] == [1, 5, 9, 13, 16]
    retry_started = float(attempts_by_key(sweep / "trials")[key][-1].split()[0])
    print(
        f"\nworker node killed {killed_at - started:.1f} s in, during trial {key[:12]}; "
        f"restarted {retry_started - killed_wall:.1f} s later (requeued); sweep done "
        f"{time.monotonic() - killed_at:.1f} s after the kill; test/acc on the retried run: "
        + str(sorted((m.step, round(m.value, 2)) for m in accuracy))
    )
