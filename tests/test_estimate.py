"""`raysweep plan --estimate`: calibration, the cost model, recorded timings, the CLI line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from raysweep import estimate as est
from raysweep.cli import main
from raysweep.driver.tracker import SweepTracker
from raysweep.plan import Job, Plan, make_plan
from raysweep.spec import load_spec
from raysweep.sweepdir import SweepDir
from tests.micro_specs import one_source_spec

SPEC = one_source_spec(
    "estimated",
    targets=["digits"],
    subset_sizes=[100, "all"],
    seeds=2,
    blocks=[0, 1],
    finetune={
        "optimizer": {"lr": 0.05, "batch_size": 32},
        "rules": [{"up_to": "all", "epochs": 4, "eval_every": 2}],
    },
)
T = est.Timing(fwd=0.004, pre=0.003, step=0.002)
FAKE = {("small_cnn", "full"): T, ("small_cnn", 0): T, ("small_cnn", 1): T}
DIGITS = (1347, 450)  # train, test


def plan_of(tmp_path: Path, spec: dict[str, Any] = SPEC) -> tuple[Path, Plan]:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path, make_plan(load_spec(path))


def fine(plan: Plan, **axes: Any) -> Job:
    return next(j for j in plan.jobs["finetune"] if all(j.config[k] == v for k, v in axes.items()))


def test_cost_model_per_job(tmp_path: Path) -> None:
    _, plan = plan_of(tmp_path)
    assert fine(plan, blocks=0).config["eval_epochs"] == [1, 3, 4]
    head, cached = est.finetune_seconds(fine(plan, blocks=0, subset_size=100), T, DIGITS)
    assert cached and head == pytest.approx(4 * 100 * 0.002 + 3 * 450 * 0.002 / 3 + 0.05)
    block, cached = est.finetune_seconds(fine(plan, blocks=1, subset_size=None), T, DIGITS)
    expected = (1347 + 450) * 0.003 + 4 * 1347 * 0.002 + 3 * 450 * 0.001 + 0.05
    assert not cached and block == pytest.approx(expected)
    original = fine(plan, blocks=1, subset_size=100)
    augmented = Job("finetune", "k", "n", {**original.config, "augment": "flip_crop"})
    seconds, _ = est.finetune_seconds(augmented, T, DIGITS)
    assert seconds == pytest.approx(450 * 0.003 + 4 * 100 * 0.005 + 3 * 450 * 0.001 + 0.05)


def test_plan_estimate_counts_features_once_per_source_and_target(tmp_path: Path) -> None:
    _, plan = plan_of(tmp_path)
    result = est.estimate(plan, FAKE)
    assert result.seconds["features"] == pytest.approx((1347 + 450) * 0.004)
    jobs = [est.finetune_seconds(j, T, DIGITS)[0] for j in plan.jobs["finetune"]]
    assert len(jobs) == 8 and result.seconds["finetune"] == pytest.approx(sum(jobs))
    textures = (3000, 1000)  # one epoch of natural training, then a test pass
    assert result.seconds["pretrain"] == pytest.approx(3000 * 0.002 + 1000 * 0.004)
    assert result.hours == pytest.approx(sum(result.seconds.values()) / 3600)
    assert est.split_sizes("textures") == textures


def test_evaluation_share_of_each_job_and_of_the_plan(tmp_path: Path) -> None:
    _, plan = plan_of(tmp_path)
    train, evaluation, cached = est.finetune_parts(fine(plan, blocks=1, subset_size=100), T, DIGITS)
    # The test split through the prefix once, then three times through the rest.
    assert not cached and evaluation == pytest.approx(450 * 0.003 + 3 * 450 * 0.001)
    assert train == pytest.approx(100 * 0.003 + 4 * 100 * 0.002)
    result = est.estimate(plan, FAKE)
    parts = [est.finetune_parts(j, T, DIGITS)[1] for j in plan.jobs["finetune"]]
    assert result.eval_seconds == pytest.approx(sum(parts))
    share = 100 * result.eval_seconds / result.seconds["finetune"]
    assert f"evaluation {share:.0f} % of finetune" in est.describe([result])


def test_measured_timings_are_positive_and_small() -> None:
    # Orderings (pre < fwd) hold on an idle machine but not under the test suite's load.
    for blocks in (0, 1):
        t = est.measure("small_cnn", blocks, batch=8, repeats=1)
        assert all(0 < v < 1.0 for v in (t.fwd, t.pre, t.step)), t
    nhwc = est.measure("small_cnn", 1, batch=8, repeats=1, speed=(False, True))
    assert all(0 < v < 1.0 for v in (nhwc.fwd, nhwc.pre, nhwc.step)), nhwc


def test_recorded_runs_rescale_the_calibration(tmp_path: Path) -> None:
    spec_path, plan = plan_of(tmp_path)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tracker = SweepTracker(uri, "estimated", tmp_path / "artifacts")
    tracker.open_parent(spec_path)
    for job in plan.jobs["finetune"][:4]:
        tracker.end_job(tracker.start_job(job))
    durations = est.recorded_durations(uri, "estimated")
    assert set(durations) == {job.key for job in plan.jobs["finetune"][:4]}
    by_key = {job.key: job for job in plan.jobs["finetune"]}
    doubled = {k: 2 * est.finetune_seconds(by_key[k], T, DIGITS)[0] for k in durations}
    scale = est.recorded_scale(plan, FAKE, doubled)
    assert scale and all(v == pytest.approx(2.0) for v in scale.values())
    scaled = est.apply_scale(FAKE, scale)
    shape = next(iter(scale))
    assert scaled[shape].step == pytest.approx(2 * T.step)


def test_cli_plan_estimate_prints_hours_per_device(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    spec_path, _ = plan_of(tmp_path)
    monkeypatch.setattr(est, "measure", lambda arch, blocks, *a, **k: FAKE[(arch, blocks)])
    assert main(["--root", str(tmp_path / "runs"), "plan", str(spec_path), "--estimate"]) == 0
    out = capsys.readouterr().out
    assert "8 Ray Tune trials" in out
    line = next(ln for ln in out.splitlines() if ln.strip().startswith("cpu ("))
    assert "pretrain 10.0 s" in line and "finetune" in line and "features" in line
    assert "% of finetune" in line  # the evaluation's share
    assert not SweepDir(tmp_path / "runs", "estimated").exists()  # planning writes nothing
