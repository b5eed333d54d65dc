"""Issue #16: a sweep in MLflow as a researcher uses it — on a real `mlflow server`, read back
through its REST API, `search_runs` and (marked `browser`) headless Chromium."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cluster_utils import mlflow_server
from micro_specs import one_source_spec
from mlflow.tracking import MlflowClient

from raysweep.driver.launcher import launch
from raysweep.schema import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, experiment_name

pytestmark = pytest.mark.slow

SPEC = one_source_spec(
    "layout",
    targets=["digits"],
    subset_sizes=[50],
    seeds=2,
    blocks=[0],
    finetune={
        "optimizer": {"lr": 0.05, "batch_size": 25},
        "rules": [{"up_to": "all", "epochs": 2}],
    },
    probes=[{"name": "distance", "images_per_class": 10}],
    log_models=True,
)
SPEC["pretrain"] = {**SPEC["pretrain"], "epochs": 3}


def rest(uri: str, path: str, **query: str) -> dict[str, Any]:
    url = f"{uri}/api/2.0/mlflow/{path}?{urllib.parse.urlencode(query)}"
    with urllib.request.urlopen(url) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The micro sweep launched once onto a real tracking server, kept up for the checks."""
    import ray

    folder = tmp_path_factory.mktemp("layout")
    spec = folder / "layout.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    with mlflow_server(folder / "mlflow") as uri:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            outcome = launch(spec, root=folder / "runs", tracking_uri=uri, write=lambda _: None)
        finally:
            ray.shutdown()
        client = MlflowClient(uri)
        experiment = client.get_experiment_by_name(experiment_name("layout"))
        yield {"uri": uri, "client": client, "experiment": experiment, "outcome": outcome,
               "root": folder / "runs"}  # fmt: skip


def runs(recorded: dict[str, Any], filter_string: str = "") -> list[Any]:
    experiment_id = recorded["experiment"].experiment_id
    return recorded["client"].search_runs([experiment_id], filter_string)


def test_the_experiment_opens_on_its_training_runs(recorded: dict[str, Any]) -> None:
    assert recorded["outcome"].ok
    got = rest(recorded["uri"], "experiments/get-by-name", experiment_name="raysweep/layout")
    tags = {t["key"]: t["value"] for t in got["experiment"]["tags"]}
    assert tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND == "custom_model_development"


def test_every_run_fills_the_source_user_and_version_columns(recorded: dict[str, Any]) -> None:
    found = runs(recorded)
    assert len(found) == 1 + 1 + 1 + 2  # parent, source, distance probe, two fine-tunes
    for run in found:
        tags = run.data.tags
        assert tags["mlflow.source.name"] == "raysweep" and tags["mlflow.user"]
        assert re.fullmatch(r"[0-9a-f]{40}|unknown", tags["mlflow.source.git.commit"])


def test_the_recipe_is_searchable_as_flat_params(recorded: dict[str, Any]) -> None:
    fine = runs(recorded, "params.`finetune.lr` = '0.05' AND params.`finetune.epochs` = '2'")
    assert len(fine) == 2 and {r.data.tags["raysweep.stage"] for r in fine} == {"finetune"}
    assert runs(recorded, "params.`finetune.lr` = '0.1'") == []
    (source,) = runs(recorded, "params.`pretrain.kind` = 'natural'")
    assert source.data.params["pretrain.epochs"] == "3"
    assert source.data.params["pretrain.lr"] == "0.05"
    (probe,) = runs(recorded, "params.`probe.images_per_class` = '10'")
    assert probe.data.tags["raysweep.stage"] == "probe"


def test_the_parent_run_has_the_sweeps_params_and_summary(recorded: dict[str, Any]) -> None:
    (parent,) = runs(recorded, "tags.`raysweep.role` = 'sweep'")
    assert parent.data.params["sweep.jobs"] == "4"  # the source, its probe, two fine-tunes
    assert parent.data.params["sweep.targets"] == "digits"
    assert parent.data.params["sweep.jobs.finetune"] == "2"
    metrics = parent.data.metrics
    assert metrics["sweep/jobs_done"] == 4 and metrics["sweep/jobs_failed"] == 0
    assert metrics["sweep/jobs_pending"] == 0 and metrics["sweep/launch_seconds"] > 0


def test_short_run_names_with_the_seed_index(recorded: dict[str, Any]) -> None:
    names = sorted(r.info.run_name for r in runs(recorded, "tags.`raysweep.stage` = 'finetune'"))
    assert names == ["natural→digits n50 b0 s0", "natural→digits n50 b0 s1"]
    seeds = {r.data.params["seed"] for r in runs(recorded, "tags.`raysweep.stage` = 'finetune'")}
    assert seeds == {"20000000", "20100000"}  # full values stay in params


def test_a_source_run_lasts_its_training_and_streams_its_epochs(recorded: dict[str, Any]) -> None:
    (source,) = runs(recorded, "tags.`raysweep.stage` = 'pretrain'")
    seconds = source.data.metrics["time/seconds"]
    duration = (source.info.end_time - source.info.start_time) / 1000
    assert seconds > 0.5 and duration >= 0.8 * seconds  # the run started when training did
    history = recorded["client"].get_metric_history(source.info.run_id, "train/loss")
    assert [m.step for m in history] == [1, 2, 3]
    stamps = [m.timestamp for m in history]
    assert stamps == sorted(stamps) and stamps[-1] - stamps[0] > 0  # logged as epochs ended


def test_source_runs_carry_their_checkpoint(recorded: dict[str, Any], tmp_path: Path) -> None:
    (source,) = runs(recorded, "tags.`raysweep.stage` = 'pretrain'")
    reference = recorded["client"].download_artifacts(
        source.info.run_id, "source/checkpoint.json", str(tmp_path)
    )
    info = json.loads(Path(reference).read_text())
    key = source.data.tags["raysweep.key"]
    record = json.loads((recorded["root"] / "store" / "checkpoints" / f"{key}.json").read_text())
    assert info["key"] == key and info["sha256"] == record["sha256"]
    files = {a.path for a in recorded["client"].list_artifacts(source.info.run_id, "source")}
    assert files == {"source/checkpoint.json", f"source/{key}.pt"}  # log_models: true


@pytest.mark.browser
def test_the_sweeps_page_in_a_browser_lists_its_runs(recorded: dict[str, Any]) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("needs Chromium: apt-get install chromium (scripts in .ci/run install it)")
    page = f"{recorded['uri']}/#/experiments/{recorded['experiment'].experiment_id}/runs"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--disable-background-networking", "--no-first-run", "--disable-component-update",
             "--virtual-time-budget=20000", "--dump-dom"]  # fmt: skip
    dom = subprocess.run(
        [browser, *flags, page], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    visible = re.sub(r"(?s)<(style|script).*?</\1>", "", dom)
    text = " ".join(re.sub(r"<[^>]+>", " ", visible).split())
    # The training-runs table (the parent run, its jobs nested under it), not the GenAI
    # overview of traces, latency and token usage.
    assert "Training runs" in text and "5 matching runs" in text and "layout" in text
    assert "Token Usage" not in text and "Latency" not in text
