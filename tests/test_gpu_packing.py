"""resources.gpu: auto without a GPU: the packing rule, the plan from fake memory figures,
the CPU fallback, the out-of-memory retry at lower packing (fake OOMs), the spec value."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from micro_specs import one_source_spec
from test_resume import JOB, context

from raysweep.driver import finetune as stage
from raysweep.driver import gpu_packing as gp
from raysweep.driver.recorder import JobRecorder
from raysweep.plan import Job, Plan, make_plan
from raysweep.protocol import ERROR_KEY, OOM_KEY, WorkerContext, attempts_by_key
from raysweep.spec import SpecError, load_spec
from raysweep.worker import finetune as worker
from raysweep.worker.gpu_memory import measure_trials

GIB = 1 << 30
GRID = {
    "targets": ["digits"],
    "subset_sizes": [50, 100],
    "seeds": 2,
    "blocks": [0, 1],
    "finetune": {
        "optimizer": {"lr": 0.05, "batch_size": 25},
        "rules": [{"up_to": "all", "epochs": 2, "eval_every": 1}],
    },
}


def plan_of(tmp_path: Path, gpu: Any = "auto") -> Plan:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(one_source_spec("packed", **GRID, resources={"gpu": gpu})))
    return make_plan(load_spec(path))


def test_trials_per_gpu_keeps_a_margin_and_bounds() -> None:
    # 141 GiB card, 0.5 GiB context: (0.9 * 141) / (1.1 * 10 + 0.5) = 11.03 -> 11.
    assert gp.trials_per_gpu(10 * GIB, GIB // 2, 141 * GIB) == 11
    assert gp.trials_per_gpu(200 * GIB, GIB // 2, 141 * GIB) == 1  # never fewer than one
    assert gp.trials_per_gpu(GIB // 100, 0, 141 * GIB) == gp.MAX_PER_GPU
    assert [gp.lower_packing(k) for k in (8, 5, 2, 1)] == [4, 2, 1, 1]


def test_gpu_auto_is_read_validated_and_keeps_job_keys(tmp_path: Path) -> None:
    auto = plan_of(tmp_path)
    assert auto.spec.resources.gpu_auto and auto.spec.resources.uses_gpu
    assert auto.keys() == plan_of(tmp_path, 0).keys() == plan_of(tmp_path, 0.25).keys()
    for bad in ("Auto", "all", -1):
        with pytest.raises(SpecError, match="resources.gpu"):
            plan_of(tmp_path, bad)


def test_packing_plan_from_measured_figures(tmp_path: Path) -> None:
    """One measurement per kind (its largest subset); each job gets its kind's packing."""
    plan = plan_of(tmp_path)
    jobs = list(plan.jobs["finetune"])
    seen: list[list[Job]] = []

    def fake(kinds: list[Job], worker_ctx: WorkerContext) -> dict[str, Any]:
        seen.append(kinds)
        peaks = [(3 if k.config["blocks"] else 1) * 10 * GIB for k in kinds]
        return {"total": 80 * GIB, "context": 0, "peaks": peaks}

    lines: list[str] = []
    per_gpu = gp.plan_packing(plan, jobs, ctx_of(tmp_path), lines.append, 2.0, fake)
    assert len(seen) == 1 and sorted(k.config["blocks"] for k in seen[0]) == [0, 1]
    assert {k.config["subset_size"] for k in seen[0]} == {100}
    # 0.9 * 80 / 11 = 6.5 -> 6 per GPU for blocks 0; 0.9 * 80 / 33 = 2.2 -> 2 for blocks 1.
    assert per_gpu == {j.key: 6 if j.config["blocks"] == 0 else 2 for j in jobs}
    assert len(lines) == 2 and "→ 6 trials per GPU" in "".join(lines)


def test_without_a_gpu_auto_falls_back_to_cpu_trials_in_one_line(tmp_path: Path) -> None:
    plan = plan_of(tmp_path)
    jobs, lines = list(plan.jobs["finetune"]), []

    def never(kinds: list[Job], worker_ctx: WorkerContext) -> dict[str, Any]:
        raise AssertionError("nothing to measure without a GPU")

    assert gp.plan_packing(plan, jobs, ctx_of(tmp_path), lines.append, 0.0, never) is None
    assert gp.plan_packing(plan, jobs, ctx_of(tmp_path), lines.append, 1.0, lambda *a: None) is None
    assert len(lines) == 2 and all("trials run on CPUs" in ln or "CPU trials" in ln for ln in lines)
    assert gp.unpacked_share(plan.spec.resources, 0.0) == 0.0
    assert gp.unpacked_share(plan.spec.resources, 4.0) == 1.0
    if not torch.cuda.is_available():
        assert measure_trials([], {}) is None  # the worker's side: no GPU, no figures


def ctx_of(tmp_path: Path) -> WorkerContext:
    return context(tmp_path, "trials", every_s=60.0)


class FakeTracker:
    """The recorder's view of MLflow: runs opened and ended, metrics logged."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.ended: dict[str, str | None] = {}
        self.logged: list[tuple[str, int]] = []

    def start_job(self, job: Job) -> str:
        self.started.append(job.key)
        return f"run-{job.key}"

    def end_job(self, run_id: str, error: str | None = None) -> None:
        self.ended[run_id] = error

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int) -> None:
        self.logged.append((run_id, step))

    def tag_node(self, run_id: str, node: str, host: str) -> None:
        pass


class FakeProgress:
    def tick(self, failed: bool = False) -> None:
        pass


class Trial:
    def __init__(self, key: str) -> None:
        self.config = {"job": {"key": key}}


def recorder(tracker: FakeTracker, keys: list[str], retry_oom: bool, store: Any) -> JobRecorder:
    config = {"target": "digits", "subset_size": 10, "seed": 1}  # no subset file: not logged
    jobs = {k: Job(key=k, stage="finetune", name=k, config=config) for k in keys}
    return JobRecorder(tracker, jobs, store, FakeProgress(), retry_oom)  # type: ignore[arg-type]


def test_recorder_keeps_an_out_of_memory_run_open_for_the_retry(tmp_path: Path) -> None:
    store = ctx_of(tmp_path).store
    tracker = FakeTracker()
    first = recorder(tracker, ["a"], True, store)
    first.on_trial_start(0, [], Trial("a"))
    first.record_result(Trial("a"), {"epoch": 1, "train/loss": 1.0})
    first.record_result(Trial("a"), {ERROR_KEY: "out of GPU memory", OOM_KEY: True, "epoch": 0})
    first.on_trial_complete(0, [], Trial("a"))
    assert first.out_of_memory == {"a"} and not first.failures and not tracker.ended
    retry = recorder(tracker, ["a"], False, store)
    retry.carry(first, {"a"})
    retry.on_trial_start(0, [], Trial("a"))  # the same run, not a second one
    for epoch in (1, 2):  # the resumed trial re-reports epoch 1: logged once
        retry.record_result(Trial("a"), {"epoch": epoch, "train/loss": 0.5})
    retry.on_trial_complete(0, [], Trial("a"))
    assert tracker.started == ["a"] and tracker.ended == {"run-a": None}
    assert tracker.logged == [("run-a", 1), ("run-a", 2)] and retry.finished == {"a"}
    # At one trial per GPU there is nothing lower to retry at: the job fails.
    last = recorder(tracker, ["b"], False, store)
    last.record_result(Trial("b"), {ERROR_KEY: "out of GPU memory", OOM_KEY: True, "epoch": 0})
    last.on_trial_complete(0, [], Trial("b"))
    assert last.failures == {"b": "out of GPU memory"}


def test_stage_retries_out_of_memory_jobs_at_lower_packing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Levels run most-packed first; a job out of memory at 4 runs again at 2, then 1."""
    plan = plan_of(tmp_path)
    jobs = list(plan.jobs["finetune"])
    oom_until = {jobs[0].key: 1, jobs[1].key: 2}  # fits only at this many per GPU
    calls: list[tuple[float, list[str], bool]] = []

    def fake_run_trials(ctx: Any, group: list[Job], gpu: float, progress: Any, retry_oom: bool,
                        earlier: dict[str, JobRecorder]) -> list[JobRecorder]:  # fmt: skip
        calls.append((gpu, sorted(j.key for j in group), retry_oom))
        rec = recorder(FakeTracker(), [j.key for j in group], retry_oom, None)
        rec.out_of_memory = {j.key for j in group if round(1 / gpu) > oom_until.get(j.key, 99)}
        if gpu > 0.25:  # a retry continues the runs its jobs' earlier recorder left open
            assert set(rec.jobs) <= set(earlier)
        return [rec]

    monkeypatch.setattr(stage, "node_capacities", lambda: [{"CPU": 2.0, "GPU": 1.0}])
    monkeypatch.setattr(stage, "run_trials", fake_run_trials)
    monkeypatch.setattr(stage, "plan_packing", lambda *a: {j.key: 4 for j in jobs})
    lines: list[str] = []
    ctx = type("Ctx", (), {"outcome": type("O", (), {"start": lambda self, s: None})(),
                           "spec": plan.spec, "plan": plan, "worker": None,
                           "write": lines.append, "progress": lambda self, *a: None})()  # fmt: skip
    stage.run_finetune_stage(ctx, jobs)  # type: ignore[arg-type]
    keys = sorted(j.key for j in jobs)
    assert calls == [
        (0.25, keys, True),
        (0.5, sorted(oom_until), True),
        (1.0, [jobs[0].key], False),
    ]
    assert [ln.split(":")[0] for ln in lines] == [
        "[finetune] 2 jobs ran out of GPU memory at 4 per GPU",
        "[finetune] 1 jobs ran out of GPU memory at 2 per GPU",
    ]


def test_worker_reports_out_of_memory_as_such(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def out_of_memory(*args: Any) -> None:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(worker, "run_finetune", out_of_memory)
    rows: list[dict[str, Any]] = []
    worker.finetune_job({**JOB}, ctx_of(tmp_path), rows.append)
    assert rows == [{ERROR_KEY: "out of GPU memory", OOM_KEY: True, "epoch": 0}]


@pytest.mark.slow
def test_launch_retries_an_out_of_memory_trial_in_the_same_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through Ray Tune and MLflow, on a CPU: Ray is told of one (fake) GPU, the measurement
    is faked at 2 trials per GPU, and one job's first attempt runs out of memory
    ($RAYSWEEP_OOM_KEYS). It runs again at 1 per GPU: one FINISHED run per job, no failure."""
    import ray
    from mlflow import MlflowClient

    from raysweep.driver.launcher import launch
    from raysweep.schema import KEY_TAG, experiment_name
    from raysweep.worker.inputs import OOM_KEYS_ENV

    path = tmp_path / "oom.yaml"
    grid = {**GRID, "subset_sizes": [50], "seeds": 1}
    path.write_text(yaml.safe_dump(one_source_spec("oom", **grid, resources={"gpu": "auto"})))
    plan = make_plan(load_spec(path))
    victim = plan.jobs["finetune"][0].key
    figures = {"total": 10 * GIB, "context": 0, "peaks": [4 * GIB] * 2}  # 0.9*10/4.4 -> 2
    monkeypatch.setattr(gp, "measure_on_gpu", lambda kinds, ctx: figures)
    monkeypatch.setenv(OOM_KEYS_ENV, victim)  # Ray's workers inherit it at init
    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False)
    lines: list[str] = []
    try:
        outcome = launch(path, root=tmp_path / "runs", write=lines.append)
    finally:
        ray.shutdown()
    assert outcome.ok and outcome.ran["finetune"] == 2
    text = "\n".join(lines)
    assert "→ 2 trials per GPU" in text and "0.5 GPU each" in text
    assert "1 jobs ran out of GPU memory at 2 per GPU: running them again at 1 per GPU" in text
    client = MlflowClient(f"sqlite:///{tmp_path / 'runs' / 'oom' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(experiment_name("oom"))
    runs = client.search_runs([experiment.experiment_id], "tags.`raysweep.stage` = 'finetune'")
    keys = sorted(j.key for j in plan.jobs["finetune"])
    assert sorted(r.data.tags[KEY_TAG] for r in runs) == keys  # one run per job
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert len(attempts_by_key(tmp_path / "runs" / "oom" / "trials")[victim]) == 2
