"""``resources.gpu: auto``: how many fine-tune trials share one GPU, from measured memory.

A trial's kind is (architecture, batch size, blocks, update_frozen_bn_stats): the
architecture sets the resolution (every target is resized to its input size) and the blocks
how much of the network keeps activations for backward. Before the grid runs, one Ray task
holding a whole GPU runs one representative job per kind (its largest subset) for one epoch
and one evaluation (:mod:`raysweep.worker.gpu_memory`) and reports its peak reserved memory
p, the memory in use on the card before it ran c (a CUDA context per process) and the
card's size M. A kind then packs

    k = clamp(⌊(1 − MEMORY_MARGIN)·M / (PEAK_HEADROOM·p + c)⌋, 1, MAX_PER_GPU)

trials per GPU, each asking Ray for 1/k GPU. Ray's fractional GPUs are summed per node
(ray#5902), but a request ≤ 1 lands on one card and k shares of 1/k fill a card exactly, so
the packing holds per card; kinds with different k run as successive experiments, never on
one card at once. A trial that runs out of memory anyway (another target's larger splits, a
neighbour's peak) is run again at ⌊k/2⌋ per GPU from its saved state, in the same MLflow
run: not a failure of the job. At one per GPU an out-of-memory error fails the job.

Without a GPU in the Ray cluster, ``auto`` falls back to CPU trials (``resources.cpu`` each)
and says so in one line at launch: the same spec runs on a laptop and on a GPU cluster.
The figures come from the first GPU the task gets: a cluster with several GPU models packs
for that one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from raysweep.plan import Job, Plan
from raysweep.protocol import WorkerContext
from raysweep.spec import ResourcesSpec

#: Share of each card kept free, and the factor on each measured peak (data sets of the same
#: kind differ in split size; the allocator's fragmentation grows with neighbours).
MEMORY_MARGIN = 0.10
PEAK_HEADROOM = 1.10
MAX_PER_GPU = 16
GIB = 1 << 30

Kind = tuple[str, int, int | str, bool]
#: (representative jobs, worker context) → the worker's figures (a Ray task; tests fake it).
Measure = Callable[[list[Job], WorkerContext], dict[str, Any] | None]


def trial_kind(job: Job, architectures: dict[str, str]) -> Kind:
    c = job.config
    arch = architectures[c["source_key"]]
    return arch, int(c["optimizer"]["batch_size"]), c["blocks"], bool(c["update_frozen_bn_stats"])


def representatives(jobs: list[Job], architectures: dict[str, str]) -> dict[Kind, Job]:
    """One job per kind: its largest training subset (``all`` counts as largest)."""

    def size(job: Job) -> float:
        subset = job.config["subset_size"]
        return float("inf") if subset is None else float(subset)

    chosen: dict[Kind, Job] = {}
    for job in jobs:
        kind = trial_kind(job, architectures)
        if kind not in chosen or size(job) > size(chosen[kind]):
            chosen[kind] = job
    return chosen


def trials_per_gpu(peak: int, context: int, total: int) -> int:
    """k of the module docstring."""
    per_trial = PEAK_HEADROOM * peak + context
    fits = int((1 - MEMORY_MARGIN) * total // max(per_trial, 1))
    return max(1, min(MAX_PER_GPU, fits))


def lower_packing(per_gpu: int) -> int:
    """Trials per GPU for a retry after running out of memory at ``per_gpu``."""
    return max(1, per_gpu // 2)


def measure_on_gpu(jobs: list[Job], worker: WorkerContext) -> dict[str, Any] | None:
    """Run :func:`raysweep.worker.gpu_memory.measure_trials` as a Ray task on one whole GPU."""
    import ray

    from raysweep.driver.entrypoints import gpu_memory_task

    task = ray.remote(num_gpus=1, num_cpus=1, max_retries=0)(gpu_memory_task)
    configs = [{**job.config, "key": job.key} for job in jobs]
    return ray.get(task.remote(configs, asdict(worker)))


def plan_packing(
    plan: Plan,
    jobs: list[Job],
    worker: WorkerContext,
    write: Callable[[str], None],
    cluster_gpus: float,
    measure: Measure | None = None,
) -> dict[str, int] | None:
    """Job key → trials per GPU, or None: no GPU to pack on (trials run on CPUs; one line
    says so). ``measure``: :func:`measure_on_gpu` unless given."""
    if cluster_gpus <= 0:
        write("[finetune] resources.gpu is auto but the Ray cluster has no GPU: trials run on CPUs")
        return None
    arch = plan.architectures()
    kinds = representatives(jobs, arch)
    figures = (measure or measure_on_gpu)(list(kinds.values()), worker)
    if figures is None:
        write("[finetune] resources.gpu is auto but the measuring worker saw no GPU: CPU trials")
        return None
    total, context = int(figures["total"]), int(figures["context"])
    per_kind: dict[Kind, int] = {}
    for kind, peak in zip(kinds, figures["peaks"], strict=True):
        per_kind[kind] = trials_per_gpu(int(peak), context, total)
        write(
            f"[finetune] gpu auto: {kind[0]} batch {kind[1]} blocks {kind[2]}: peak "
            f"{peak / GIB:.1f} GiB (+{context / GIB:.1f} GiB context) of {total / GIB:.0f} GiB "
            f"→ {per_kind[kind]} trials per GPU"
        )
    return {job.key: per_kind[trial_kind(job, arch)] for job in jobs}


def unpacked_share(resources: ResourcesSpec, cluster_gpus: float) -> float:
    """GPUs per trial where nothing was measured (search trials): the spec's share; under
    ``auto`` one whole GPU, or none in a cluster without GPUs."""
    if not resources.gpu_auto:
        return float(resources.gpu)
    return 1.0 if cluster_gpus > 0 else 0.0
