"""raysweep.analysis end to end on a real MLflow sqlite store laid out like the orchestrator's."""

from __future__ import annotations

import math
import re
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag

from raysweep.analysis.report import NothingToAnalyze, analyze_sweep, write_sweep_report
from raysweep.analysis.results import (
    cache_results,
    count_unfinished,
    load_cached,
    metric_history,
    sweep_runs,
)

SWEEP = "mini"
SCRIPT = Path(__file__).resolve().parents[1] / "analysis" / "accuracy_vs_subset.py"
SOURCES = {"nat": ("natural", "", "0"), "l2_3": ("pgd", "l2", "3.0")}
# final test/acc per (source, subset, seed); earlier epochs log lower values
FINAL = {
    ("nat", "100", 0): 40.0,
    ("nat", "100", 1): 44.0,
    ("nat", "all", 0): 80.0,
    ("nat", "all", 1): 82.0,
    ("l2_3", "100", 0): 46.0,
    ("l2_3", "100", 1): 47.0,
    ("l2_3", "all", 0): 81.0,
    ("l2_3", "all", 1): 85.0,
}


def cell_params(source: str, subset: str, seed: int) -> dict[str, str]:
    training, norm, eps = SOURCES[source]
    return {
        "source": source,
        "source_training": training,
        "source_norm": norm,
        "source_eps": eps,
        "source_architecture": "resnet18",
        "source_dataset": "cifar10",
        "target": "svhn",
        "subset_size": subset,
        "n_train": "100" if subset == "all" else subset,  # 'all' of a tiny target: 100 too
        "seed": str(seed),
        "blocks": "3",
        "epochs": "41",
    }


def child(
    client: MlflowClient, experiment: str, parent: str, key: str, stage: str, params: dict
) -> str:
    tags = {"mlflow.parentRunId": parent, "raysweep.sweep": SWEEP, "raysweep.role": "job"}
    tags |= {"raysweep.key": key, "raysweep.stage": stage}
    run_id = client.create_run(experiment, tags=tags).info.run_id
    client.log_batch(
        run_id,
        params=[Param(k, v) for k, v in params.items()],
        tags=[RunTag(k, v) for k, v in params.items()],
    )
    return run_id


def log_curve(client: MlflowClient, run_id: str, final: float) -> None:
    now = int(time.time() * 1000)
    metrics = [Metric("test/acc", final - 10 + 5 * i, now, step) for i, step in enumerate([1, 21])]
    metrics += [Metric("test/acc", final, now, 41), Metric("train/loss", 0.5, now, 41)]
    metrics += [Metric("train/acc", 90.0, now, 41)]
    client.log_batch(run_id, metrics=metrics)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> dict:
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/mlflow.db"
    client = MlflowClient(uri)
    experiment = client.create_experiment(f"raysweep/{SWEEP}")
    parent = client.create_run(
        experiment, tags={"raysweep.sweep": SWEEP, "raysweep.role": "sweep"}
    ).info.run_id
    ids = {}

    def finetune(source: str, subset: str, seed: int) -> str:
        params = cell_params(source, subset, seed)
        return child(client, experiment, parent, f"ft-{source}-{subset}-{seed}", "finetune", params)

    for (source, subset, seed), final in FINAL.items():
        key = f"ft-{source}-{subset}-{seed}"
        run_id = finetune(source, subset, seed)
        log_curve(client, run_id, final)
        client.set_terminated(run_id)
        ids[key] = run_id
    # a stale FINISHED duplicate of one key (crash + rerun): the newer run must win
    stale = finetune("nat", "100", 0)
    log_curve(client, stale, 0.0)
    client.set_terminated(stale, end_time=1)
    # a running job and a pretrain job: neither is a fine-tuning result
    running = finetune("nat", "100", 2)
    log_curve(client, running, 99.0)
    pretrain = child(client, experiment, parent, "pt-nat", "pretrain", {"source": "nat"})
    client.log_batch(pretrain, metrics=[Metric("adv/acc", 1.0, 0, 1)])
    client.set_terminated(pretrain)
    return {"uri": uri, "ids": ids, "stale": stale}


def test_sweep_runs_types_and_filters(store: dict) -> None:
    df = sweep_runs(store["uri"], SWEEP)
    assert len(df) == 8
    assert set(df["run_id"]) == set(store["ids"].values())  # no stale, running or pretrain run
    assert set(df["status"]) == {"FINISHED"}
    assert df["seed"].dtype == "int64" and df["n_train"].dtype == "int64"
    assert df["epochs"].dtype == "int64" and df["source_eps"].dtype == "float64"
    assert set(df["subset_size"]) == {"100", "all"} and set(df["blocks"]) == {"3"}
    assert set(df["source_norm"]) == {"", "l2"}
    got = {(r.source, r.subset_size, r.seed): r.test_acc for r in df.itertuples()}
    assert got == FINAL  # the last logged test/acc, not the max or the first
    assert set(df["train_loss"]) == {0.5} and set(df["train_acc"]) == {90.0}
    paged = sweep_runs(store["uri"], SWEEP, page_size=3)  # 4 pages of search_runs
    assert paged["run_id"].tolist() == df["run_id"].tolist()
    pretrain = sweep_runs(store["uri"], SWEEP, stage="pretrain")
    assert pretrain["adv_acc"].tolist() == [1.0]


def test_unknown_sweep_gives_empty_frame_with_columns(store: dict) -> None:
    df = sweep_runs(store["uri"], "nope")
    assert df.empty and {"run_id", "key", "seed", "blocks", "test_acc"} <= set(df.columns)
    assert count_unfinished(store["uri"], "nope") == {}


def test_count_unfinished_and_history(store: dict) -> None:
    assert count_unfinished(store["uri"], SWEEP, page_size=1) == {"RUNNING": 1}
    run_id = store["ids"]["ft-l2_3-all-1"]
    hist = metric_history(store["uri"], [run_id, store["ids"]["ft-nat-100-0"]])
    mine = hist[hist["run_id"] == run_id]
    assert mine["step"].tolist() == [1, 21, 41]
    assert mine["value"].tolist() == [75.0, 80.0, 85.0]
    assert len(hist) == 6 and list(hist.columns) == ["run_id", "step", "value"]


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_cache_round_trip(store: dict, tmp_path: Path, suffix: str) -> None:
    df = sweep_runs(store["uri"], SWEEP)
    path = tmp_path / "sweep" / f"runs{suffix}"
    cache_results(df, path)
    back = load_cached(path)
    pd.testing.assert_frame_equal(back, df, check_dtype=False)
    assert back["subset_size"].tolist() == df["subset_size"].tolist()  # "100" stays a str
    assert back["blocks"].map(type).eq(str).all() and back["seed"].dtype == "int64"


def test_write_sweep_report(store: dict, tmp_path: Path) -> None:
    paths = write_sweep_report(store["uri"], SWEEP, tmp_path / "report")
    names = {p.name for p in paths}
    assert paths[-1].name == "report.md"
    assert {"accuracy_summary.csv", "gap_table.csv", "gap_table.md"} <= names
    assert {"accuracy_vs_subset_blocks-3.png", "delta_vs_subset_blocks-3.pdf"} <= names
    assert all(p.exists() and p.stat().st_size > 0 for p in paths)
    gap = pd.read_csv(tmp_path / "report" / "gap_table.csv", dtype={"subset_size": str})
    gap = gap.set_index("subset_size")
    assert gap.loc["100", "delta"] == pytest.approx(4.5)  # (46-40 + 47-44) / 2
    assert gap.loc["all", "delta"] == pytest.approx(2.0)  # (81-80 + 85-82) / 2
    s = math.sqrt(((6 - 4.5) ** 2 + (3 - 4.5) ** 2) / 1)  # sample sd of deltas 6 and 3
    assert gap.loc["100", "ci95"] == pytest.approx(12.706204736174707 * s / math.sqrt(2))
    report = (tmp_path / "report" / "report.md").read_text()
    assert "finished fine-tuning runs: **8** (other runs, not counted: RUNNING: 1)" in report
    assert "![accuracy_vs_subset_blocks-3](accuracy_vs_subset_blocks-3.png)" in report
    # Sources by their training, natural first; the best accuracy of a row in bold.
    assert "| target | subset_size | natural | ℓ₂ ε=3 |" in report
    assert "| svhn | 100 | 42.00 ± 25.41 (n=2) | **46.50 ± 6.35 (n=2)** |" in report
    assert "| ℓ₂ ε=3 | l2_3 | pgd | ℓ₂ | 3 | 4 |" in report  # coverage: label and spec name
    # The gap table: signed, never bold, its sign convention said.
    gap_section = report.split("## Robust − natural gap [pp]")[1].split("\n## ")[0]
    assert "| svhn | 100 | +4.50 ± 19.06 (n=2) |" in gap_section and "**" not in gap_section
    assert "positive = the robust source is more accurate" in gap_section


def test_report_has_no_absolute_paths(store: dict, tmp_path: Path) -> None:
    """report.md travels (MLflow artifact, copied between machines): every link and the
    tracking store are relative to the report folder."""
    out = tmp_path / "somewhere" / "report"
    write_sweep_report(store["uri"], SWEEP, out)
    report = (out / "report.md").read_text(encoding="utf-8")
    store_dir = store["uri"].removeprefix("sqlite:///").rsplit("/", 1)[0]
    assert str(tmp_path) not in report and store_dir not in report
    assert "local SQLite store `../../../" in report
    for target in re.findall(r"\]\(([^)]+)\)", report):
        assert not target.startswith("/") and (out / target).exists(), target


def test_not_drawn_reasons_are_in_user_terms(store: dict, tmp_path: Path) -> None:
    """A sweep without probes: every probe family says which probe to add, never a column."""
    report = analyze_sweep(store["uri"], SWEEP, tmp_path)
    reasons = report.skipped
    assert {"fisher_vs_eps", "gap_vs_distance", "accuracy_vs_blocks", "tsne_embeddings"} <= set(
        reasons
    )
    for name, reason in reasons.items():
        for internal in ("probe_", "probe/", "train/", "test/", "missing columns"):
            assert internal not in reason, (name, reason)
    assert "add a `weight_fisher` probe to the spec" in reasons["fisher_vs_eps"]
    assert "add a `distance` probe to the spec" in reasons["gap_vs_distance"]
    assert "needs ≥ 2 `blocks` values" in reasons["accuracy_vs_blocks"]
    text = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "## Not drawn" in text and "probe_" not in text.split("## Not drawn")[1]


def test_report_without_runs_raises(store: dict, tmp_path: Path) -> None:
    message = "sweep 'nope' has no finished runs yet: run `raysweep status nope`"
    with pytest.raises(NothingToAnalyze) as info:
        write_sweep_report(store["uri"], "nope", tmp_path)
    assert str(info.value) == message
    assert not any(tmp_path.iterdir())


def run_script(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, str(SCRIPT), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def test_script_draws_its_family(store: dict, tmp_path: Path) -> None:
    args = ["--tracking-uri", store["uri"], "--sweep", SWEEP, "--out", str(tmp_path)]
    done = run_script(*args)
    assert done.returncode == 0, done.stderr
    printed = done.stdout.split()
    assert str(tmp_path / "delta_vs_subset_blocks-3.png") in printed
    assert (tmp_path / "accuracy_summary.csv").exists()
    missing = run_script("--tracking-uri", store["uri"], "--sweep", "x", "--out", str(tmp_path))
    assert missing.returncode == 2
    assert missing.stderr.strip() == (
        "error: accuracy vs. subset size: the sweep has no finished fine-tuning runs yet"
    )
    unknown = run_script("--root", str(tmp_path), "--sweep", "x")
    assert unknown.returncode == 2 and "no sweep named 'x'" in unknown.stderr


def test_tracking_store_is_named_without_machine_paths(tmp_path: Path) -> None:
    from raysweep.analysis.report import tracking_text

    out = tmp_path / "sweep" / "report"
    db = tmp_path / "sweep" / "mlflow.db"
    assert tracking_text(f"sqlite:///{db}", out) == (
        "local SQLite store `../mlflow.db` (relative to this report)"
    )
    assert tracking_text((tmp_path / "mlruns").as_uri(), out).startswith("local file store `../../")
    assert tracking_text(str(tmp_path / "mlruns"), out).startswith("local file store `../../")
    # A server keeps its address, never a password that came with it.
    assert tracking_text("http://user:secret@tracking:5000/", out) == "`http://tracking:5000/`"
