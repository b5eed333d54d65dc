"""A micro sweep on a real two-node Ray cluster, recorded on a real MLflow tracking server.

Everything is started by the test and stopped by pid: two `ray start --block` nodes (one CPU and
one custom resource each), and `mlflow server` on 127.0.0.1 with a SQLite backend and its own
artifact folder, serving artifacts. The sweep is launched as a user would from the head:
`raysweep launch SPEC --address auto --tracking-uri http://…`, with RAY_ADDRESS naming the
cluster (what `auto` reads when the cluster is not in /tmp/ray).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import mlflow
import pytest
import yaml
from cluster_utils import CLUSTER_ENV, local_cluster, mlflow_server, node_ids
from micro_specs import one_source_spec
from mlflow.tracking import MlflowClient

from raysweep.plan import make_plan
from raysweep.schema import HOST_TAG, KEY_TAG, NODE_TAG, STAGE_TAG, experiment_name
from raysweep.spec import load_spec

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

#: 4 fine-tune trials of 1 CPU on two 1-CPU nodes: two run at once, necessarily one per node.
SPEC = one_source_spec(
    "onserver",
    targets=["digits"],
    subset_sizes=[100],
    seeds=2,
    blocks=[1, 2],
    finetune={
        "optimizer": {"lr": 0.05, "batch_size": 32},
        "rules": [{"up_to": "all", "epochs": 2, "eval_every": 1}],
    },
    probes=[{"name": "distance", "images_per_class": 10}],
    resources={"cpu": 1},
)


@pytest.fixture(scope="module")
def sweep_on_server(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Launch the sweep once; keep what the assertions need, after everything is stopped."""
    folder = tmp_path_factory.mktemp("onserver")
    spec = folder / "onserver.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    started = time.monotonic()
    with mlflow_server(folder / "mlflow") as uri, local_cluster(folder / "cluster") as cluster:
        nodes = node_ids(cluster.address)
        command = [sys.executable, "-m", "raysweep.cli", "--root", str(folder / "runs")]
        done = subprocess.run(
            [*command, "launch", str(spec), "--address", "auto", "--tracking-uri", uri],
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=240,
            env={**os.environ, **CLUSTER_ENV, "RAY_ADDRESS": cluster.address},
        )
        launched = time.monotonic()
        client = MlflowClient(tracking_uri=uri)
        experiment = client.get_experiment_by_name(experiment_name("onserver"))
        runs = client.search_runs([experiment.experiment_id], "tags.`raysweep.role` = 'job'")
        parent = client.search_runs([experiment.experiment_id], "tags.`raysweep.role` = 'sweep'")
        subset_run = next(r for r in runs if r.data.tags[STAGE_TAG] == "finetune")
        downloaded = mlflow.artifacts.download_artifacts(
            run_id=subset_run.info.run_id,
            artifact_path="subset",
            dst_path=str(folder / "downloaded"),
            tracking_uri=uri,
        )
    print(f"\nlaunch on the 2-node cluster took {launched - started:.1f} s (with startup)")
    return {
        "folder": folder,
        "spec": spec,
        "uri": uri,
        "nodes": nodes,
        "done": done,
        "experiment": experiment,
        "runs": runs,
        "parent": parent,
        "downloaded": Path(downloaded),
    }


def test_the_launch_succeeds_and_every_job_is_a_finished_run_on_the_server(
    sweep_on_server: dict,
) -> None:
    done = sweep_on_server["done"]
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert f"(tracking: {sweep_on_server['uri']})" in done.stdout
    assert "View run" not in done.stdout  # MLflow's per-run links would bury the progress
    plan = make_plan(load_spec(sweep_on_server["spec"]))
    runs = sweep_on_server["runs"]
    per_key = Counter(run.data.tags[KEY_TAG] for run in runs)
    assert set(per_key) == plan.keys() and set(per_key.values()) == {1}
    assert len(runs) == 1 + 1 + 4  # pretrain, distance probe, fine-tune trials
    assert {run.info.status for run in runs} == {"FINISHED"}
    assert [run.info.status for run in sweep_on_server["parent"]] == ["FINISHED"]
    # The server chose the artifact location (proxied), not a local folder of the driver.
    assert sweep_on_server["experiment"].artifact_location.startswith("mlflow-artifacts:")


def test_trials_ran_on_both_nodes_and_each_run_names_its_node(sweep_on_server: dict) -> None:
    head, worker = sweep_on_server["nodes"]
    runs = sweep_on_server["runs"]
    trials = [run for run in runs if run.data.tags[STAGE_TAG] == "finetune"]
    assert {run.data.tags[NODE_TAG] for run in trials} == {head, worker}
    others = [run for run in runs if run.data.tags[STAGE_TAG] in ("pretrain", "probe")]
    assert {run.data.tags[STAGE_TAG] for run in others} == {"pretrain", "probe"}
    assert all(run.data.tags[NODE_TAG] in (head, worker) for run in others)
    assert all(run.data.tags[HOST_TAG] for run in trials + others)


def test_artifacts_download_through_the_server(sweep_on_server: dict) -> None:
    folder, downloaded = sweep_on_server["folder"], sweep_on_server["downloaded"]
    files = sorted(downloaded.glob("*.json"))
    assert len(files) == 1 and files[0].name.startswith("n100-seed")
    indices = json.loads(files[0].read_text())["indices"]
    assert len(indices) == 100 and len(set(indices)) == 100
    # The bytes live in the server's artifact destination; the launch wrote no local copy.
    stored = list((folder / "mlflow" / "artifacts").rglob(files[0].name))
    assert stored and stored[0].read_bytes() == files[0].read_bytes()
    assert not (folder / "mlartifacts").exists()
    assert not (folder / "runs" / "onserver" / "mlflow.db").exists()
