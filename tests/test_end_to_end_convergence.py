"""A micro sweep records convergence on every fine-tune run and runs the linear probe per subset;
its report counts the converged runs and sets the probe's gap beside the fine-tuned one."""

from __future__ import annotations

import pytest
import yaml
from mlflow.tracking import MlflowClient

from raysweep.driver.launcher import launch
from raysweep.schema import (
    CONVERGED_METRIC,
    CONVERGED_TAG,
    LINEAR_PROBE_ACC,
    LOSS_CHANGE_METRIC,
    STEPS_METRIC,
    TAIL_SHARE_METRIC,
    experiment_name,
)

pytestmark = pytest.mark.slow

SOURCE = {"architecture": "small_cnn", "dataset": "textures"}
MICRO = {
    "name": "conv",
    "sources": [
        {"name": "natural", **SOURCE, "training": {"kind": "natural"}},
        {"name": "linf", **SOURCE, "training": {"kind": "pgd", "norm": "linf", "eps": "8/255",
                                                 "steps": 1}},  # fmt: skip
    ],
    "pretrain": {"epochs": 1, "optimizer": {"lr": 0.05, "batch_size": 128}, "augment": "none"},
    "targets": ["digits"],
    "subset_sizes": [50],
    "seeds": 2,
    "blocks": [0],
    "finetune": {
        "optimizer": {"lr": 0.05, "batch_size": 16},
        "rules": [{"up_to": "all", "epochs": 10, "eval_every": 5}],
    },
    "probes": [{"name": "linear_probe", "folds": 3, "cs": [0.01, 1.0, 100.0]}],
    "resources": {"cpu": 1},
}


@pytest.fixture(scope="module")
def sweep(local_ray: None, tmp_path_factory: pytest.TempPathFactory) -> dict:
    folder = tmp_path_factory.mktemp("conv")
    spec_path = folder / "conv.yaml"
    spec_path.write_text(yaml.safe_dump(MICRO))
    root = folder / "runs"
    outcome = launch(spec_path, root=root, write=lambda _: None)
    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'conv' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(experiment_name("conv"))
    runs = client.search_runs([experiment.experiment_id], "tags.`raysweep.role` = 'job'")
    return {"root": root, "outcome": outcome, "client": client, "runs": runs}


def stage(sweep: dict, name: str) -> list:
    return [r for r in sweep["runs"] if r.data.tags["raysweep.stage"] == name]


def test_every_finetune_run_has_its_convergence_record_and_tag(sweep: dict) -> None:
    assert sweep["outcome"].ran == {"pretrain": 2, "probe": 4, "finetune": 4}
    for run in stage(sweep, "finetune"):
        metrics = run.data.metrics
        assert metrics[STEPS_METRIC] == 10 * 4  # 10 epochs of ⌈50 / 16⌉ batches
        assert {LOSS_CHANGE_METRIC, TAIL_SHARE_METRIC, "train/loss", "train/acc"} <= set(metrics)
        verdict = abs(metrics[TAIL_SHARE_METRIC]) <= 0.01
        assert metrics[CONVERGED_METRIC] == float(verdict)
        assert run.data.tags[CONVERGED_TAG] == ("true" if verdict else "false")
        # Logged once, with the final epoch.
        history = sweep["client"].get_metric_history(run.info.run_id, CONVERGED_METRIC)
        assert [m.step for m in history] == [10]


def test_linear_probe_runs_once_per_subset_and_seed(sweep: dict) -> None:
    probes = stage(sweep, "probe")
    cells = sorted((r.data.params["source"], r.data.params["seed"]) for r in probes)
    assert cells == [("linf", "20000000"), ("linf", "20100000"),
                     ("natural", "20000000"), ("natural", "20100000")]  # fmt: skip
    for run in probes:
        assert run.data.params["subset_size"] == "50" and run.data.tags["probe"] == "linear_probe"
        assert 10.0 < run.data.metrics[LINEAR_PROBE_ACC] <= 100.0  # 10 classes: chance is 10 %
        assert run.data.metrics["probe/linear_images"] == 50
        assert run.data.metrics["probe/linear_c"] in (0.01, 1.0, 100.0)
        assert run.data.metrics["probe/linear_converged"] == 1.0


def test_report_counts_converged_runs_and_shows_the_probe_gap(sweep: dict) -> None:
    report = (sweep["root"] / "conv" / "report" / "report.md").read_text()
    done = sum(r.data.metrics[CONVERGED_METRIC] for r in stage(sweep, "finetune"))
    assert f"- finetune: **{int(done)} of 4** runs converged" in report
    assert "(linear probe)" in report
    if done < 4:
        assert "†" in report
