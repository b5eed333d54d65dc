"""What every stage of a launch is handed: one frozen :class:`StageContext`, and the
:class:`Outcome` the stages fill in.

A stage function takes ``(ctx, jobs)`` and nothing else positional: the plan, the MLflow
tracker, the worker context, the sweep folder, the outcome and the line writer travel together.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from raysweep.driver.progress import Progress, Write
from raysweep.driver.tracker import SweepTracker
from raysweep.plan import STAGES, Plan
from raysweep.protocol import WorkerContext
from raysweep.spec import SweepSpec
from raysweep.sweepdir import SweepDir

#: Trials per Tuner: Tune's driver rewrites every trial at each snapshot (REFERENCE.md).
TRIALS_PER_EXPERIMENT = 1000


@dataclass
class Outcome:
    """What a launch did, per stage: run now, skipped as already done, failed."""

    sweep: str
    tracking_uri: str
    ran: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    failed: dict[str, list[str]] = field(default_factory=dict)
    report: list[Path] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(self.failed.values())

    def metrics(self, plan: Plan, seconds: float) -> dict[str, float]:
        """The parent run's summary of this launch: jobs done (now or before), failed, still
        pending, and its wall time."""
        done = sum(self.ran.get(s, 0) + self.skipped.get(s, 0) for s in plan.jobs)
        failed = sum(len(v) for v in self.failed.values())
        return {
            "sweep/jobs_done": float(done),
            "sweep/jobs_failed": float(failed),
            "sweep/jobs_pending": float(max(plan.total - done - failed, 0)),
            "sweep/launch_seconds": seconds,
        }

    def start(self, stage: str) -> None:
        """A stage begins: nothing ran or failed in it yet."""
        self.ran[stage], self.failed[stage] = 0, []

    def summary(self, stages: Sequence[str] = STAGES) -> str:
        """One line per stage: ran, skipped as done, failed."""
        lines = []
        for stage in stages:
            if stage == "search" and stage not in self.skipped:
                continue  # grid-only sweeps have no search stage
            failed = self.failed.get(stage, [])
            lines.append(
                f"  {stage:<9} ran {self.ran.get(stage, 0):>6}  skipped (done) "
                f"{self.skipped.get(stage, 0):>6}  failed {len(failed):>4}"
            )
        return "\n".join(lines)


@dataclass(frozen=True)
class StageContext:
    """Everything a stage needs besides its jobs."""

    plan: Plan
    tracker: SweepTracker
    worker: WorkerContext
    sweep: SweepDir
    outcome: Outcome
    write: Write
    #: Live bars on the terminal instead of progress lines (the console, attached to a tty).
    bars: bool = False

    @property
    def spec(self) -> SweepSpec:
        return self.plan.spec

    def progress(self, stage: str, total: int, every_s: float = 5.0) -> Progress:
        """The stage's progress display: a live bar on a terminal, else lines."""
        return Progress(stage, total, every_s=every_s, write=None if self.bars else self.write)


def worker_context(spec: SweepSpec, sweep: SweepDir) -> WorkerContext:
    """The worker context of a sweep: its store, data, threads per trial, GPU switches."""
    return WorkerContext(
        store_root=str(sweep.store.root),
        data_root=spec.data_root,
        download=spec.download,
        threads=max(1, math.floor(spec.resources.cpu)),
        trials_root=str(sweep.trials_dir),
        gpu=spec.resources.uses_gpu,
        bf16=spec.resources.bf16,
        channels_last=spec.resources.channels_last,
    )
