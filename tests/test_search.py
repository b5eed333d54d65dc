"""Hyperparameter search (issue #9): spec, plan, validation split, the search stage on local Ray.

The Ray tests load their source from a checkpoint file (a seeded, untrained small_cnn: no
pretraining, so the file stays fast) and fine-tune all of it on 200 built-in `digits` images.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
import torch
import yaml
from micro_specs import one_source_spec
from mlflow.tracking import MlflowClient

from raysweep.analysis.search_plots import search_plots
from raysweep.analysis.sweepdata import NotSupported, SweepData
from raysweep.data import cache, dataset_info, validation_split
from raysweep.driver import studies
from raysweep.driver.launcher import launch
from raysweep.models import build_model, save_checkpoint
from raysweep.plan import describe_plan, make_plan, pretrain_jobs
from raysweep.plan.search import apply_values, search_groups
from raysweep.protocol import WorkerContext
from raysweep.schema import KEY_TAG, experiment_name
from raysweep.spec import SpecError, parse_spec
from raysweep.store import Store
from raysweep.worker.finetune import finetune_job

SEARCH = {
    "params": {"lr": {"distribution": "loguniform", "low": 1e-3, "high": 0.3}},
    "trials": 4,
    "validation_fraction": 0.25,
    "scheduler": {"name": "asha", "grace_period": 1, "reduction_factor": 2},
}
GRID = {
    "targets": ["digits"],
    "subset_sizes": [200],
    "seeds": [0],
    "blocks": ["full"],
    "finetune": {
        "optimizer": {"lr": 0.05, "batch_size": 32},
        "rules": [{"up_to": "all", "epochs": 3}],
    },
}


def search_spec(name: str, checkpoint: Path | None = None, **search: Any) -> dict[str, Any]:
    raw = one_source_spec(name, **copy.deepcopy(GRID), search={**copy.deepcopy(SEARCH), **search})
    if checkpoint is not None:  # loaded, not trained
        raw["sources"] = [{**raw["sources"][0], "checkpoint": str(checkpoint)}]
        del raw["pretrain"]
    return raw


# --- spec and plan -------------------------------------------------------------------------


UNIFORM_01 = {"distribution": "uniform", "low": 0, "high": 1}
BAD_SEARCH = [
    ({"params": {"gamma": UNIFORM_01}}, "search.params.gamma: unknown hyperparameter 'gamma'"),
    (
        {"params": {"lr": {**UNIFORM_01, "distribution": "normal"}}},
        "search.params.lr.distribution: unknown value 'normal'; did you mean 'uniform'? "
        "allowed: loguniform, uniform,",
    ),
    (
        {"params": {"lr": {"distribution": "loguniform", "low": 0.5, "high": 0.1}}},
        "search.params.lr: low (0.5) must be below high (0.1)",
    ),
    (
        {"params": {"epochs": {**UNIFORM_01, "low": 1, "high": 4}}},
        "search.params.epochs.distribution: epochs takes int or choice, got uniform",
    ),
    ({"params": {}}, "search.params: must be a non-empty mapping"),
    ({"group_by": ["target"]}, "search.group_by: must include source and target"),
    ({"group_by": ["source", "target", "seed"]}, "search.group_by[2]: unknown value 'seed'"),
    (
        {"validation_fraction": 0.9, "subset_size": 20},
        "search.validation_fraction: 0.9 of 20 images of 'digits' leaves fewer",
    ),
    ({"metric": "test/acc"}, "search.metric: unknown value 'test/acc'; allowed: val/acc"),
    ({"scheduler": {"name": "hyperband"}}, "search.scheduler.name: unknown value 'hyperband'"),
    ({"budget": 3}, "search: unknown key 'budget'; allowed keys:"),
]


@pytest.mark.parametrize(("change", "message"), BAD_SEARCH)
def test_search_spec_errors_are_one_line(change: dict[str, Any], message: str) -> None:
    raw = search_spec("bad", **change)
    with pytest.raises(SpecError) as error:
        parse_spec(raw, "bad.yaml")
    text = str(error.value)
    assert text.startswith(f"bad.yaml: {message}") and "\n" not in text


def test_search_needs_a_finetune_grid() -> None:
    raw = one_source_spec("nogrid", search=SEARCH)
    with pytest.raises(SpecError, match="bad.yaml: search: needs a finetune section"):
        parse_spec(raw, "bad.yaml")


def test_search_defaults_come_from_the_grid() -> None:
    raw = search_spec("defaults")
    raw["subset_sizes"] = [100, 200, "all"]
    raw["blocks"] = ["head_bn", 1]
    search = parse_spec(raw).search
    assert search is not None
    assert search.subset_size is None and search.blocks == "head_bn"  # the largest: 'all'
    assert search.group_by == ("source", "target") and search.seed == 0
    assert (search.scheduler.name, search.scheduler.grace_period) == ("asha", 1)
    assert search.metric == "val/acc" and search.max_concurrent == 1


def test_plan_counts_search_trials_before_finetune() -> None:
    raw = search_spec("plan")
    raw["targets"] = ["digits", "shapes_outline"]
    raw["subset_sizes"] = [100, 200]
    plan = make_plan(parse_spec(raw))
    assert list(plan.jobs) == ["pretrain", "probe", "search", "finetune"]
    assert len(plan.jobs["search"]) == 2 * 4  # 2 groups (one source × 2 targets) × 4 trials
    assert len({job.key for job in plan.jobs["search"]}) == 8
    text = describe_plan(plan)
    assert "search           8 Ray Tune trials = 2 groups (by source, target) × 4 trials" in text
    assert text.index("search ") < text.index("finetune ")
    groups = {job.config["search"] for job in plan.jobs["finetune"]}
    assert groups == {job.config["group"] for job in plan.jobs["search"]}
    raw["search"]["group_by"] = ["source", "target", "subset_size"]
    assert len(make_plan(parse_spec(raw)).jobs["search"]) == 4 * 4


def test_grid_keys_without_search_stay_and_with_search_are_stable() -> None:
    with_search = search_spec("keys")
    without = copy.deepcopy(with_search)
    del without["search"]
    plain = make_plan(parse_spec(without))
    assert "search" not in plain.jobs
    assert all("search" not in job.config for job in plain.jobs["finetune"])
    searched = make_plan(parse_spec(with_search))
    assert make_plan(parse_spec(with_search)).keys() == searched.keys()  # deterministic
    assert not {j.key for j in plain.jobs["finetune"]} & {j.key for j in searched.jobs["finetune"]}
    more = copy.deepcopy(with_search)
    more["search"]["trials"] = 5  # another search: other grid keys
    other = make_plan(parse_spec(more))
    assert {j.key for j in other.jobs["finetune"]} != {j.key for j in searched.jobs["finetune"]}


def test_apply_values_puts_tuned_values_in_place() -> None:
    spec = parse_spec(search_spec("apply"))
    job = make_plan(spec).jobs["finetune"][0].config
    tuned = apply_values(
        {**job, "eval_epochs": [1, 3], "lr_milestones": [2]}, {"lr": 0.02, "epochs": 2}
    )
    assert tuned["optimizer"]["lr"] == 0.02 and job["optimizer"]["lr"] == 0.05
    assert tuned["epochs"] == 2 and tuned["eval_epochs"] == [1, 2] and tuned["lr_milestones"] == []


def test_validation_split_is_disjoint_seeded_and_keeps_every_class() -> None:
    labels = np.repeat(np.arange(10), 30)
    subset = np.arange(0, 300, 3)  # 100 rows, 10 per class
    fit, held = validation_split(subset, labels, 0.25, seed=7, num_classes=10)
    assert len(held) == 25 and len(fit) == 75
    assert np.array_equal(np.sort(np.concatenate([fit, held])), subset)
    assert set(labels[fit]) == set(range(10))
    again, _ = validation_split(subset, labels, 0.25, seed=7, num_classes=10)
    other, _ = validation_split(subset, labels, 0.25, seed=8, num_classes=10)
    assert np.array_equal(fit, again) and not np.array_equal(fit, other)
    with pytest.raises(ValueError, match="lower search.validation_fraction"):
        validation_split(np.arange(0, 300, 30), labels, 0.5, seed=0, num_classes=10)


# --- a search trial in this process: the test split is never read ---------------------------


def untrained_source(path: Path) -> Path:
    """A seeded, untrained small_cnn with `textures` input statistics, saved at ``path``."""
    info = dataset_info("textures")
    torch.manual_seed(0)
    model = build_model("small_cnn", info.num_classes, info.mean, info.std)
    save_checkpoint(path, model, {"key": "src", "source": "natural"})
    return path


def fake_store(tmp_path: Path) -> tuple[WorkerContext, str]:
    """A store holding one untrained small_cnn source under key ``src``."""
    store = Store(tmp_path / "store")
    untrained_source(store.checkpoint("src"))
    ctx = WorkerContext(str(store.root), None, False, 1, str(tmp_path / "trials"))
    return ctx, "src"


def search_job(spec_raw: dict[str, Any], source_key: str, lr: float, key: str) -> dict[str, Any]:
    spec = parse_spec(spec_raw)
    group = next(iter(search_groups(spec, pretrain_jobs(spec)).values()))
    base = {k: v for k, v in group.config.items() if k != "search"}
    return {**apply_values({**base, "source_key": source_key}, {"lr": lr}), "key": key}


def test_search_trial_never_reads_the_test_split(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx, source = fake_store(tmp_path)
    splits: list[tuple[str, str]] = []
    real = cache.load_dataset

    def spy(name: str, split: str, **kwargs: Any) -> Any:
        splits.append((name, split))
        return real(name, split, **kwargs)

    monkeypatch.setattr(cache, "load_dataset", spy)
    cache.cached_dataset.cache_clear()
    rows: list[dict[str, Any]] = []
    job = search_job(search_spec("spy"), source, lr=0.05, key="trial-a")
    finetune_job(job, ctx, rows.append)
    assert splits == [("digits", "train")]
    assert [row["epoch"] for row in rows] == [1, 2, 3]
    assert all("val/acc" in row and "test/acc" not in row for row in rows)
    assert rows[-1]["n_train"] == 150  # 200 minus the 25 % validation split
    # The control: a grid job of the same cell does read the test split.
    grid = {**{k: v for k, v in job.items() if k != "validation_fraction"}, "key": "grid-a"}
    finetune_job(grid, ctx, rows.append)
    assert ("digits", "test") in splits and "test/acc" in rows[-1]
    cache.cached_dataset.cache_clear()


# --- the search stage on local Ray ------------------------------------------------------------


def write_spec(folder: Path, raw: dict[str, Any]) -> Path:
    path = folder / f"{raw['name']}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def study_trials(root: Path, sweep: str) -> list[optuna.trial.FrozenTrial]:
    url = f"sqlite:///{root / sweep / 'search' / 'optuna.db'}"
    (summary,) = optuna.get_all_study_summaries(url)
    return optuna.load_study(study_name=summary.study_name, storage=url).get_trials()


def stage_runs(root: Path, sweep: str, stage: str) -> list:
    client = MlflowClient(tracking_uri=f"sqlite:///{root / sweep / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(experiment_name(sweep))
    query = f"tags.`raysweep.stage` = '{stage}' AND attributes.status = 'FINISHED'"
    return client.search_runs([experiment.experiment_id], query)


@pytest.fixture(scope="module")
def searched(local_ray: None, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("search")
    root = folder / "runs"
    source = untrained_source(folder / "source.pt")
    spec = write_spec(folder, search_spec("srch", source))
    outcome = launch(spec, root=root, write=lambda line: None)
    return {"folder": folder, "root": root, "spec": spec, "outcome": outcome, "source": source}


@pytest.mark.slow
def test_search_runs_and_grid_gets_the_best_values(searched: dict[str, Any]) -> None:
    root, outcome = searched["root"], searched["outcome"]
    assert outcome.ran == {"pretrain": 1, "probe": 0, "search": 4, "finetune": 1}
    trials = study_trials(root, "srch")
    assert [t.state.name for t in trials] == ["COMPLETE"] * 4
    runs = stage_runs(root, "srch", "search")
    assert len(runs) == 4
    plan = make_plan(parse_spec(yaml.safe_load(searched["spec"].read_text())))
    assert sorted(r.data.tags[KEY_TAG] for r in runs) == sorted(j.key for j in plan.jobs["search"])
    for run in runs:
        assert run.data.tags["source"] == "natural" and run.data.tags["target"] == "digits"
        assert 1e-3 <= float(run.data.params["search.lr"]) <= 0.3
        assert 0.0 <= run.data.metrics["search/value"] <= 100.0
    best = max(trials, key=lambda t: t.value)
    (grid,) = stage_runs(root, "srch", "finetune")
    assert float(grid.data.params["search.lr"]) == pytest.approx(best.params["params/lr"], rel=1e-5)
    assert f'"lr": {best.params["params/lr"]!r}' in grid.data.params["config"]


@pytest.mark.slow
def test_search_beats_the_worst_grid_value(searched: dict[str, Any], tmp_path: Path) -> None:
    """The best searched lr scores above the worst of a fixed lr grid, on the same split."""
    root = searched["root"]
    best = max(t.value for t in study_trials(root, "srch"))
    raw = yaml.safe_load(searched["spec"].read_text())
    (source,) = make_plan(parse_spec(raw)).jobs["pretrain"]
    ctx = WorkerContext(str(root / "store"), None, False, 1, str(tmp_path / "trials"))
    grid = {}
    for lr in (1e-5, 1e-3, 0.1):
        rows: list[dict[str, Any]] = []
        finetune_job(search_job(raw, source.key, lr, f"grid-{lr}"), ctx, rows.append)
        grid[lr] = rows[-1]["val/acc"]
    assert best > min(grid.values()), (best, grid)


@pytest.mark.slow
def test_seeded_search_is_reproducible(searched: dict[str, Any]) -> None:
    root = searched["root"]
    again = write_spec(searched["folder"], search_spec("repro", searched["source"]))
    launch(again, root=root, write=lambda line: None)
    first, second = study_trials(root, "srch"), study_trials(root, "repro")
    assert [t.params for t in first] == [t.params for t in second]
    assert [t.value for t in first] == pytest.approx([t.value for t in second])


@pytest.mark.slow
def test_interrupted_search_resumes_with_the_same_total(
    searched: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    root = searched["root"]
    spec = write_spec(searched["folder"], search_spec("resume", searched["source"]))
    sync = studies.StudyLogger.sync

    def interrupt_after_two(self: studies.StudyLogger, url: str) -> None:
        sync(self, url)
        if self.count >= 2:
            raise KeyboardInterrupt("the driver is stopped after two trials")

    monkeypatch.setattr(studies.StudyLogger, "sync", interrupt_after_two)
    with pytest.raises(KeyboardInterrupt):
        launch(spec, root=root, write=lambda line: None)
    monkeypatch.setattr(studies.StudyLogger, "sync", sync)
    assert [t.state.name for t in study_trials(root, "resume")] == ["COMPLETE"] * 2
    url = f"sqlite:///{root / 'resume' / 'search' / 'optuna.db'}"
    (summary,) = optuna.get_all_study_summaries(url)
    optuna.load_study(study_name=summary.study_name, storage=url).ask()  # in flight at the stop
    outcome = launch(spec, root=root, write=lambda line: None)
    assert (outcome.skipped["search"], outcome.ran["search"]) == (2, 2)
    states = [t.state.name for t in study_trials(root, "resume")]
    assert states == ["COMPLETE", "COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]
    runs = stage_runs(root, "resume", "search")
    assert len(runs) == 4 and len({r.data.tags[KEY_TAG] for r in runs}) == 4
    assert sorted(int(r.data.params["search.optuna_trial"]) for r in runs) == [0, 1, 3, 4]
    assert len(stage_runs(root, "resume", "finetune")) == 1


@pytest.mark.slow
def test_search_plots_per_group(searched: dict[str, Any], tmp_path: Path) -> None:
    uri = f"sqlite:///{searched['root'] / 'srch' / 'mlflow.db'}"
    section = search_plots(SweepData(uri, "srch"), tmp_path)
    names = sorted(p.name for p in section.paths)
    assert names[-2:] == ["search_importances.csv", "search_trials.csv"]
    assert sum(name.endswith(".png") for name in names) == 1
    assert "4 trials, best validation accuracy" in section.body
    importances = (tmp_path / "search_importances.csv").read_text().splitlines()
    assert importances[1].endswith(",lr,1.0")
    with pytest.raises(NotSupported, match="no finished search trials"):
        search_plots(SweepData(uri, "no_such_sweep"), tmp_path)
