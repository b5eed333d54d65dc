"""A micro sweep on local Ray, checked through MlflowClient; then a relaunch that redoes nothing."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from raysweep.driver.launcher import launch
from raysweep.plan import make_plan
from raysweep.schema import KEY_TAG, experiment_name
from raysweep.spec import load_spec

pytestmark = pytest.mark.slow

MICRO = {
    "name": "micro",
    "sources": [
        {
            "name": "natural",
            "architecture": "small_cnn",
            "dataset": "textures",
            "training": {"kind": "natural"},
        },
        {
            "name": "linf",
            "architecture": "small_cnn",
            "dataset": "textures",
            "training": {"kind": "pgd", "norm": "linf", "eps": "8/255", "steps": 2},
        },
    ],
    "pretrain": {
        "epochs": 1,
        "optimizer": {"lr": 0.05, "batch_size": 128},
        "augment": "none",
        "eval_attack": {"norm": "linf", "eps": "8/255", "steps": 2},
    },
    "targets": ["digits", "shapes_outline"],
    "subset_sizes": [50, 100],
    "seeds": 2,
    "blocks": [0, 1],
    "finetune": {
        "optimizer": {"lr": 0.05, "batch_size": 32},
        "rules": [{"up_to": "all", "epochs": 3, "eval_every": 2}],
    },
    "probes": [
        {"name": "distance", "images_per_class": 20},
        {"name": "input_fisher", "images": 16},
    ],
    "resources": {"cpu": 1},
}


@pytest.fixture(scope="module")
def micro_sweep(local_ray: None, tmp_path_factory: pytest.TempPathFactory) -> dict:
    folder = tmp_path_factory.mktemp("e2e")
    spec_path = folder / "micro.yaml"
    spec_path.write_text(yaml.safe_dump(MICRO))
    root = folder / "runs"
    lines: list[str] = []
    outcome = launch(spec_path, root=root, write=lines.append)
    return {"spec": spec_path, "root": root, "outcome": outcome, "lines": lines}


def job_runs(root: Path) -> tuple[MlflowClient, list]:
    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'micro' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(experiment_name("micro"))
    runs = client.search_runs([experiment.experiment_id], "tags.`raysweep.role` = 'job'")
    return client, runs


def test_every_job_has_exactly_one_finished_run(micro_sweep: dict) -> None:
    plan = make_plan(load_spec(micro_sweep["spec"]))
    _, runs = job_runs(micro_sweep["root"])
    keys = [run.data.tags[KEY_TAG] for run in runs]
    assert sorted(keys) == sorted(plan.keys())
    assert {run.info.status for run in runs} == {"FINISHED"}
    assert micro_sweep["outcome"].ran == {"pretrain": 2, "probe": 6, "finetune": 32}


def test_finetune_runs_carry_axes_and_per_epoch_accuracy(micro_sweep: dict) -> None:
    client, runs = job_runs(micro_sweep["root"])
    finetune = [r for r in runs if r.data.tags["raysweep.stage"] == "finetune"]
    run = finetune[0]
    for axis in ("source", "target", "subset_size", "seed", "blocks", "source_eps"):
        assert axis in run.data.params and axis in run.data.tags
    history = client.get_metric_history(run.info.run_id, "test/acc")
    assert [m.step for m in history] == [1, 3]
    assert all(0.0 <= m.value <= 100.0 for m in history)
    parent = run.data.tags["mlflow.parentRunId"]
    assert client.get_run(parent).data.tags["raysweep.role"] == "sweep"
    subset = client.list_artifacts(run.info.run_id, "subset")
    assert len(subset) == 1


def test_pretrain_runs_log_robustness_per_epoch(micro_sweep: dict) -> None:
    client, runs = job_runs(micro_sweep["root"])
    pretrain = [r for r in runs if r.data.tags["raysweep.stage"] == "pretrain"]
    assert len(pretrain) == 2
    for run in pretrain:
        for metric in ("train/loss", "test/acc", "adv/acc", "train/weight_norm"):
            assert [m.step for m in client.get_metric_history(run.info.run_id, metric)] == [1]


def test_probes_are_runs_and_land_on_the_source_run(micro_sweep: dict) -> None:
    client, runs = job_runs(micro_sweep["root"])
    probes = [r for r in runs if r.data.tags["raysweep.stage"] == "probe"]
    assert sorted(r.data.tags["probe"] for r in probes) == ["distance"] * 4 + ["input_fisher"] * 2
    emd = [r.data.metrics["probe/emd"] for r in probes if r.data.tags["probe"] == "distance"]
    assert all(value > 0 for value in emd)
    sources = [r for r in runs if r.data.tags["raysweep.stage"] == "pretrain"]
    for run in sources:
        assert run.data.metrics["probe/emd/digits"] > 0
        assert run.data.metrics["probe/fx_fnorm"] > 0


def test_parent_run_has_spec_and_report(micro_sweep: dict) -> None:
    client, runs = job_runs(micro_sweep["root"])
    parent = client.get_run(runs[0].data.tags["mlflow.parentRunId"])
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["raysweep.git_sha"]
    assert [a.path for a in client.list_artifacts(parent.info.run_id, "spec")] == ["spec/spec.yaml"]
    report = [a.path for a in client.list_artifacts(parent.info.run_id, "report")]
    assert any(path.endswith(".png") for path in report)
    assert any("[finetune] 32/32" in line for line in micro_sweep["lines"])


def test_relaunch_redoes_nothing(micro_sweep: dict) -> None:
    again = launch(micro_sweep["spec"], root=micro_sweep["root"], write=lambda _: None)
    assert again.ran == {"pretrain": 0, "probe": 0, "finetune": 0}
    assert again.skipped == {"pretrain": 2, "probe": 6, "finetune": 32}
    _, runs = job_runs(micro_sweep["root"])
    assert len(runs) == 40


def test_store_reuses_a_trained_source_without_training(micro_sweep: dict) -> None:
    from raysweep.protocol import WorkerContext
    from raysweep.worker.sources import pretrain_source

    job = make_plan(load_spec(micro_sweep["spec"])).jobs["pretrain"][1]
    ctx = WorkerContext(
        store_root=str(micro_sweep["root"] / "store"),
        data_root=None,
        download=False,
        threads=1,
        trials_root=str(micro_sweep["root"] / "micro" / "trials"),
    )
    record = pretrain_source(job.key, job.config, ctx)
    assert record["reused"] is True
    client, runs = job_runs(micro_sweep["root"])
    run = next(r for r in runs if r.data.tags[KEY_TAG] == job.key)
    logged = client.get_metric_history(run.info.run_id, "adv/acc")
    assert [m.value for m in logged] == pytest.approx([row["adv/acc"] for row in record["history"]])


def test_another_sweep_records_stored_sources_without_retraining(micro_sweep: dict) -> None:
    """A new sweep over the same sources records them from the store; no checkpoint is rewritten."""
    grid = ("finetune", "probes", "targets", "subset_sizes", "seeds", "blocks")
    spec = {k: v for k, v in MICRO.items() if k not in grid}
    spec_path = micro_sweep["spec"].with_name("sources_only.yaml")
    spec_path.write_text(yaml.safe_dump({**spec, "name": "sources_only"}))
    checkpoints = sorted((micro_sweep["root"] / "store" / "checkpoints").glob("*.pt"))
    written = [path.stat().st_mtime_ns for path in checkpoints]
    lines: list[str] = []
    outcome = launch(spec_path, root=micro_sweep["root"], write=lines.append)
    assert outcome.ran["pretrain"] == 2 and not outcome.failed["pretrain"]
    assert any("(2 already in the store: recorded, not retrained)" in line for line in lines)
    assert [path.stat().st_mtime_ns for path in checkpoints] == written


def test_status_and_resume(micro_sweep: dict, capsys: pytest.CaptureFixture[str]) -> None:
    from raysweep.cli import main

    root = str(micro_sweep["root"])
    assert main(["--root", root, "status", "micro"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"pretrain\s+2\s+0\s+0\s+0\s+2\n", out)
    assert re.search(r"probe\s+6\s+0\s+0\s+0\s+6\n", out)
    assert re.search(r"finetune\s+32\s+0\s+0\s+0\s+32\n", out)
    assert main(["--root", root, "resume", "micro"]) == 0
    assert re.search(r"finetune\s+ran\s+0\s+skipped \(done\)\s+32", capsys.readouterr().out)


def test_analyze_redraws_into_a_folder_and_logs_on_the_parent_run(
    micro_sweep: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from raysweep.cli import main

    out = tmp_path / "figures"
    assert main(["--root", str(micro_sweep["root"]), "analyze", "micro", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"files in {out}" in printed and "gap_vs_distance: 4 files" in printed
    report = (out / "report.md").read_text(encoding="utf-8")
    for png in out.glob("*.png"):  # every figure is shown in the report, with its PDF beside it
        assert f"({png.name})" in report and png.with_suffix(".pdf").is_file()
    assert {"accuracy_vs_subset_blocks-0.png", "gap_vs_distance.png"} <= {
        p.name for p in out.glob("*.png")
    }
    client, runs = job_runs(micro_sweep["root"])
    parent = runs[0].data.tags["mlflow.parentRunId"]
    logged = {Path(a.path).name for a in client.list_artifacts(parent, "report")}
    assert {p.name for p in out.iterdir()} <= logged
