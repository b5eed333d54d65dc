"""`raysweep plan SPEC --estimate`: expected compute hours of a sweep, per device type.

Cost model. A network is ``prefix(x)`` (frozen stages, run without autograd) followed by the
trainable ``suffix`` (the head and the last ``blocks`` blocks; :mod:`raysweep.models.freeze`).
Every target is resized to the architecture's input size (``to_model_input``), so per-image
times depend only on (architecture, blocks) — the target only sets the image counts. For each
distinct (architecture, blocks) of the plan a short calibration on this device measures, per
image and at the trial's batch size, on random inputs (no data set needed):

    t_fwd    eval forward of the whole network       t_pre   forward of the frozen prefix
    t_step   forward + backward + SGD step of the suffix on prefix outputs

and a fine-tune job with n training images, E epochs, V evaluations on m test images costs

    cached prefix (no augmentation):  (n + m)·t_pre + E·n·t_step + V·m·(t_fwd − t_pre)
    prefix recomputed (augmentation): m·t_pre + E·n·(t_pre + t_step) + V·m·(t_fwd − t_pre)
    head-only, store feature cache:   E·n·t_step + V·m·t_step/3
                                      + once per (source, target): (N + m)·t_fwd

plus :data:`TRIAL_OVERHEAD_S` of orchestration (bench/ measures it). The terms in m are the
evaluation's share (the test split through the prefix once, then V times through the rest):
for small subsets it dominates (100 images × 100 epochs = 10k image-steps against six
evaluations of a 10,000-image split, 60k forward passes), so ``--estimate`` prints it per
device. A source trained here
costs ``epochs·N·(1 + attack steps)·t_full`` with t_full the full-network training step (an
attack step is one forward-backward through the whole network, like a training step).

The calibration counts arithmetic only: for tiny trials (a 32×32 network, a few hundred
images) per-trial Python costs dominate and it is a lower bound (bench/'s digits micro-sweep:
calibrated 6.9 s against 29 s of recorded run time for 40 trials); for ImageNet-size networks
the arithmetic is the cost.

Recorded timings: when the sweep ran before, each FINISHED fine-tune run's duration is divided
by its predicted seconds on this device; the median ratio per (architecture, blocks) rescales
the calibration (a slower or faster device, data loading, contention), giving a second figure.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from raysweep.plan import Job, Plan

#: Driver + Tune + MLflow seconds per trial, beside its compute (bench/ measures it).
TRIAL_OVERHEAD_S = 0.05
#: Test split size as a fraction of the training split, when the data set says nothing more
#: (CIFAR-10/100, MNIST-family: 1/5–1/6).
ASSUMED_TEST_FRACTION = 0.2
CALIBRATION_BATCH = 32


@dataclass(frozen=True)
class Timing:
    """Seconds per image on one device for one (architecture, blocks)."""

    fwd: float
    pre: float
    step: float


@dataclass
class Estimate:
    """Compute seconds per stage on one device, and how they were obtained."""

    device: str
    seconds: dict[str, float] = field(default_factory=dict)
    note: str = ""
    #: The part of ``seconds["finetune"]`` spent evaluating on the test split.
    eval_seconds: float = 0.0

    @property
    def hours(self) -> float:
        return sum(self.seconds.values()) / 3600.0


def device_names() -> list[str]:
    """Devices to calibrate on: the CPU, and the first GPU when there is one."""
    return ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]


def _per_image(fn: Any, batch: int, repeats: int, device: str, bf16: bool = False) -> float:
    """Fastest of ``repeats`` timed calls after two warm-ups, per image (under bf16 autocast
    when asked, as trials run with ``resources.bf16``).

    The minimum, not the mean: other processes on the machine only ever add time.
    """
    best = float("inf")
    for i in range(repeats + 2):
        if device == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
            fn()
        if device == "cuda":
            torch.cuda.synchronize()
        if i >= 2:
            best = min(best, time.perf_counter() - started)
    return best / batch


def measure(
    architecture: str,
    blocks: int | str,
    device: str = "cpu",
    batch: int = 32,
    repeats: int = 5,
    speed: tuple[bool, bool] = (False, False),
) -> Timing:
    """Time t_fwd, t_pre and t_step (module docstring) on random inputs of the arch's size;
    ``speed`` = (bf16, channels_last) as the trials will run (``resources``)."""
    from raysweep.models import build_model
    from raysweep.models.freeze import configure_trainable, frozen_prefix_length

    bf16, channels_last = speed
    fmt = torch.channels_last if channels_last else torch.preserve_format
    model = build_model(architecture, 10, [0.5], [0.25]).to(device=device, memory_format=fmt)
    params = configure_trainable(model, blocks)
    k = frozen_prefix_length(model)
    size = model.input_size
    x = torch.rand(batch, model.input_channels, size, size, device=device).to(memory_format=fmt)
    y = torch.randint(0, 10, (batch,), device=device)
    opt = torch.optim.SGD(params, lr=1e-3, momentum=0.9)

    def forward() -> None:
        with torch.inference_mode():
            model.eval()(x)

    def prefix() -> torch.Tensor:
        with torch.no_grad():
            return model.eval().run_stages(x, 0, k)

    h = prefix()

    def step() -> None:
        model.train()
        loss = F.cross_entropy(model.run_stages(h, k), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return Timing(
        fwd=_per_image(forward, batch, repeats, device, bf16),
        pre=_per_image(prefix, batch, repeats, device, bf16) if k > 0 else 0.0,
        step=_per_image(step, batch, repeats, device, bf16),
    )


def architectures(plan: Plan) -> dict[str, str]:
    """Source key → architecture."""
    return plan.architectures()


def shapes(plan: Plan) -> set[tuple[str, int | str]]:
    """The distinct (architecture, blocks) to calibrate, pretraining included as ``full``."""
    arch = architectures(plan)
    found = {(arch[j.config["source_key"]], j.config["blocks"]) for j in plan.jobs["finetune"]}
    found |= {(j.config["architecture"], "full") for j in plan.jobs["pretrain"] if _trains(j)}
    return found


def calibrate(
    plan: Plan, device: str = "cpu", batch: int = CALIBRATION_BATCH, repeats: int = 5
) -> dict[tuple[str, int | str], Timing]:
    """One short measurement per distinct (architecture, blocks) of the plan, with the plan's
    bf16 / channels_last on a GPU (trials use them on GPUs only)."""
    res = plan.spec.resources
    speed = (res.bf16, res.channels_last) if device == "cuda" else (False, False)
    return {
        shape: measure(shape[0], shape[1], device, batch, repeats, speed)
        for shape in sorted(shapes(plan), key=str)
    }


def _trains(job: Job) -> bool:
    return "checkpoint" not in job.config


def split_sizes(target: str) -> tuple[int, int]:
    """(train, test) images of a data set: exact for built-ins, else an assumed test fraction."""
    from raysweep.data import dataset_info

    info = dataset_info(target)
    if info.builtin:
        from raysweep.data import load_dataset

        return info.train_size, len(load_dataset(target, "test"))
    return info.train_size, max(1, round(info.train_size * ASSUMED_TEST_FRACTION))


def finetune_parts(job: Job, t: Timing, sizes: tuple[int, int]) -> tuple[float, float, bool]:
    """(training seconds, evaluation seconds, uses the feature cache) of one fine-tune job,
    orchestration excluded (module docstring)."""
    c = job.config
    full, m = sizes
    n = full if c["subset_size"] is None else min(c["subset_size"], full)
    epochs, evals = c["epochs"], len(c["eval_epochs"])
    if c["blocks"] == 0 and not c["update_frozen_bn_stats"]:
        return epochs * n * t.step, evals * m * t.step / 3, True
    evaluation = m * t.pre + evals * m * max(t.fwd - t.pre, 0.0)
    if c["augment"] == "none" and not c["update_frozen_bn_stats"]:
        return n * t.pre + epochs * n * t.step, evaluation, False
    return epochs * n * (t.pre + t.step), evaluation, False


def finetune_seconds(job: Job, t: Timing, sizes: tuple[int, int]) -> tuple[float, bool]:
    """Predicted compute seconds of one fine-tune job, and whether it uses the feature cache."""
    train, evaluation, cached = finetune_parts(job, t, sizes)
    return train + evaluation + TRIAL_OVERHEAD_S, cached


def pretrain_seconds(job: Job, t: Timing) -> float:
    c = job.config
    train, test = split_sizes(c["dataset"])
    attack = c["training"].get("attack") or {}
    per_epoch = train * (1 + attack.get("steps", 0)) * t.step + test * t.fwd
    return c["pretrain"]["epochs"] * per_epoch


def estimate(
    plan: Plan, timings: dict[tuple[str, int | str], Timing], device: str = "cpu"
) -> Estimate:
    """Seconds per stage (pretrain, features, finetune) on the calibrated device."""
    arch = architectures(plan)
    result = Estimate(device=device, seconds={"pretrain": 0.0, "features": 0.0, "finetune": 0.0})
    for job in plan.jobs["pretrain"]:
        if _trains(job):
            timing = timings[(job.config["architecture"], "full")]
            result.seconds["pretrain"] += pretrain_seconds(job, timing)
    featured: set[tuple[str, str, str]] = set()
    for job in plan.jobs["finetune"]:
        c = job.config
        a = arch[c["source_key"]]
        sizes = split_sizes(c["target"])
        train, evaluation, cached = finetune_parts(job, timings[(a, c["blocks"])], sizes)
        result.seconds["finetune"] += train + evaluation + TRIAL_OVERHEAD_S
        result.eval_seconds += evaluation
        cell = (c["source_key"], c["target"], c["normalization"])
        if cached and cell not in featured:
            featured.add(cell)
            result.seconds["features"] += sum(sizes) * timings[(a, c["blocks"])].fwd
    return result


def recorded_scale(
    plan: Plan,
    timings: dict[tuple[str, int | str], Timing],
    durations: dict[str, float],
) -> dict[tuple[str, int | str], float]:
    """Median of (recorded seconds ÷ predicted seconds) per (architecture, blocks)."""
    arch = architectures(plan)
    ratios: dict[tuple[str, int | str], list[float]] = {}
    for job in plan.jobs["finetune"]:
        if job.key not in durations:
            continue
        shape = (arch[job.config["source_key"]], job.config["blocks"])
        predicted, _ = finetune_seconds(job, timings[shape], split_sizes(job.config["target"]))
        ratios.setdefault(shape, []).append(durations[job.key] / max(predicted, 1e-9))
    return {shape: statistics.median(values) for shape, values in ratios.items()}


def apply_scale(
    timings: dict[tuple[str, int | str], Timing], scale: dict[tuple[str, int | str], float]
) -> dict[tuple[str, int | str], Timing]:
    return {
        shape: Timing(t.fwd * scale.get(shape, 1.0), t.pre * scale.get(shape, 1.0),
                      t.step * scale.get(shape, 1.0))
        for shape, t in timings.items()
    }  # fmt: skip


def recorded_durations(tracking_uri: str, sweep: str) -> dict[str, float]:
    """Job key → seconds of each FINISHED fine-tune run of an earlier launch of the sweep."""
    from mlflow import MlflowClient

    from raysweep.schema import (
        KEY_TAG,
        check_reachable,
        iter_runs,
        job_filter,
        store_exists,
        sweep_experiment,
    )

    check_reachable(tracking_uri)
    if not store_exists(tracking_uri):  # never create the store it only reads
        return {}
    client = MlflowClient(tracking_uri)
    finished = job_filter("finetune", status="= 'FINISHED'")
    runs = iter_runs(client, sweep_experiment(client, sweep), finished)
    return {
        run.data.tags[KEY_TAG]: (run.info.end_time - run.info.start_time) / 1000.0
        for run in runs
        if run.info.end_time and KEY_TAG in run.data.tags
    }


def duration(seconds: float) -> str:
    """Seconds, minutes or hours, whichever reads best."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def describe(estimates: Iterable[Estimate], workers: int | None = None) -> str:
    """The lines `raysweep plan --estimate` prints, one per device (and per recorded source)."""
    lines = ["estimated compute (device time, one job at a time on the calibrated device):"]
    for e in estimates:
        total = sum(e.seconds.values())
        parts = ", ".join(f"{stage} {duration(s)}" for stage, s in e.seconds.items())
        line = f"  {e.device:<20} {duration(total):>10}  ({parts})"
        if e.seconds.get("finetune"):
            line += f"; evaluation {100 * e.eval_seconds / e.seconds['finetune']:.0f} % of finetune"
        if workers and workers > 1:
            line += f"; ≈ {duration(total / workers)} wall on {workers} parallel slots"
        lines.append(line + (f"  [{e.note}]" if e.note else ""))
    return "\n".join(lines)


def estimate_report(plan: Plan, root: str | None = None, repeats: int = 5) -> str:
    """Calibrate on every local device, add the recorded-timings figure when the sweep ran."""
    import math
    import os

    from raysweep.sweepdir import SweepDir, resolve_root

    # A CPU calibration uses torch's threads; that many cores make one slot.
    slots = max(1, math.floor((os.cpu_count() or 1) / torch.get_num_threads()))
    estimates, cpu_timings = [], None
    for device in device_names():
        started = time.perf_counter()
        timings = calibrate(plan, device, repeats=repeats)
        cpu_timings = cpu_timings or timings
        e = estimate(plan, timings, _device_label(device))
        e.note = f"calibrated in {time.perf_counter() - started:.0f} s"
        estimates.append(e)
    sweep = SweepDir(resolve_root(root), plan.spec.name)
    uri = sweep.tracking_uri() if sweep.exists() else None
    durations = recorded_durations(uri, sweep.name) if uri else {}
    if durations and cpu_timings is not None:
        scale = recorded_scale(plan, cpu_timings, durations)
        e = estimate(plan, apply_scale(cpu_timings, scale), "recorded runs")
        e.note = f"{len(durations)} finished runs of '{sweep.name}' rescale the cpu figure"
        estimates.append(e)
    return describe(estimates, workers=slots)


def _device_label(device: str) -> str:
    if device == "cuda":
        return f"cuda ({torch.cuda.get_device_name(0)})"
    return f"cpu ({torch.get_num_threads()} threads)"
