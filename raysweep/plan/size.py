"""How big a plan is, computed from the spec alone, and the limits ``make_plan`` enforces.

A spec of a few lines can describe millions of jobs (``seeds: 10000`` × a large grid), and
building them takes memory and minutes before anything runs. :func:`count_jobs` counts the
jobs of each stage arithmetically, exactly as :func:`raysweep.plan.grid.make_plan` would build
them (``tests/test_spec_limits.py`` checks it on every shipped spec), so an oversized plan is
refused in microseconds. Torch-free.

Two limits, both raised by ``max_jobs`` (``--max-jobs N``): the jobs, and the evaluation
epochs the configs list (one per epoch at worst: 10,000 epochs with ``eval_every: 1`` make a
job's config 10,000 entries, so 1,444 such jobs already took 2.1 s and 550 MB).

Measured (2-core machine, shared; peak RSS of the process, 44 MB before the plan) on Utrera
et al.'s grid with more seeds, 199,684 jobs: 8.3 s and 438 MB with its own 6–16 evaluation
epochs per job; 9.9 s and 786 MB with 50 per job up to epoch 10,000 (the worst both limits
allow: 9,984,000 evaluation epochs).
"""

from __future__ import annotations

from raysweep.spec import SpecError, SweepSpec

#: Jobs of one plan, all stages together; ``--max-jobs N`` raises it. Utrera et al.'s grid
#: has 14,400; 200,000 build in ~8 s and ~440 MB (see the module docstring).
MAX_JOBS = 200_000
#: Evaluation epochs the fine-tune and search configs may list per job of ``max_jobs`` on
#: average (Utrera: 6 to 16 per job): 10,000,000 at the default limit.
EVALUATIONS_PER_JOB = 50


def evaluation_count(epochs: int, every: int) -> int:
    """``len(eval_epochs(epochs, every))``: epochs 1, 1+every, … and always the last."""
    return -(-epochs // every) + (0 if (epochs - 1) % every == 0 else 1)


def source_target_pairs(spec: SweepSpec) -> int:
    return sum(len(spec.targets_for(source)) for source in spec.sources)


def probe_count(spec: SweepSpec) -> int:
    """One job per (probe, source), per (probe, source, target) for per-target probes, and per
    (probe, source, target, subset size, seed) for per-subset ones (none without a grid)."""
    per_target = sum(1 for probe in spec.probes if probe.per_target and not probe.per_subset)
    per_subset = sum(1 for probe in spec.probes if probe.per_subset)
    cells = 0
    if per_subset and spec.finetune is not None:
        cells = sum(spec.seed_count(size) for size in spec.subset_sizes)
    pairs = source_target_pairs(spec)
    once = len(spec.probes) - per_target - per_subset
    return once * len(spec.sources) + per_target * pairs + per_subset * pairs * cells


def search_group_sizes(spec: SweepSpec, target: str) -> tuple[tuple[int | None, ...], int]:
    """The subset sizes a search's groups of ``target`` train with, and how many block settings
    per size.

    Mirrors :func:`raysweep.plan.search.search_groups`: the grid's subset sizes and blocks
    (all distinct, validated) when grouped by, else the one the search trains with."""
    assert spec.search is not None
    by = spec.search.group_by
    if "subset_size" in by:
        sizes = spec.subset_sizes
    else:
        sizes = (spec.search.subset_size,) if spec.subset_sizes else ()
    settings = len(spec.blocks_for(target))
    blocks = settings if "blocks" in by else min(1, settings)
    return sizes, blocks


def target_pairs(spec: SweepSpec) -> list[str]:
    """The target of every source → target pair, repeated per pair."""
    return [target for source in spec.sources for target in spec.targets_for(source)]


def search_group_count(spec: SweepSpec) -> int:
    if spec.search is None:
        return 0
    groups = 0
    for target in target_pairs(spec):
        sizes, blocks = search_group_sizes(spec, target)
        groups += len(sizes) * blocks
    return groups


def finetune_count(spec: SweepSpec) -> int:
    """Sources × their targets × Σ over subset sizes of (block settings × that size's seeds)."""
    if spec.finetune is None:
        return 0
    seeds = sum(spec.seed_count(size) for size in spec.subset_sizes)
    return sum(seeds * len(spec.blocks_for(target)) for target in target_pairs(spec))


def count_jobs(spec: SweepSpec) -> dict[str, int]:
    """Jobs per stage, as ``make_plan(spec).jobs`` would hold them, without building any."""
    counts = {"pretrain": len(spec.sources), "probe": probe_count(spec)}
    if spec.search is not None:  # a stage of its own only when searched, as in make_plan
        counts["search"] = search_group_count(spec) * spec.search.trials
    counts["finetune"] = finetune_count(spec)
    return counts


def count_evaluations(spec: SweepSpec) -> int:
    """Evaluation epochs listed in all fine-tune job configs and search group configs."""
    if spec.finetune is None:
        return 0
    total = 0
    for source in spec.sources:
        ft = spec.finetune_for(source)
        for target in spec.targets_for(source):
            total += sum(
                evaluation_count(rule.epochs, rule.eval_every) * spec.seed_count(size)
                for size in spec.subset_sizes
                for rule in (ft.rule_for(size, b) for b in spec.blocks_for(target))
            )
            if spec.search is not None:  # a group's trials evaluate every epoch
                sizes, blocks = search_group_sizes(spec, target)
                total += sum(ft.rule_for(size).epochs for size in sizes) * blocks
    return total


def check_plan_size(spec: SweepSpec, max_jobs: int) -> None:
    """A one-line SpecError when the plan of ``spec`` would exceed ``max_jobs`` jobs, or list
    more than ``EVALUATIONS_PER_JOB`` evaluation epochs per allowed job."""
    counts = count_jobs(spec)
    total = sum(counts.values())
    if total > max_jobs:
        stages = ", ".join(f"{stage} {n:,}" for stage, n in counts.items())
        raise SpecError(
            f"{spec.path}: the plan has {total:,} jobs ({stages}), above the limit of "
            f"{max_jobs:,}; shrink the grid (sources, targets, subset_sizes, blocks, seeds, "
            "search.trials) or pass --max-jobs N to allow more"
        )
    evaluations, allowed = count_evaluations(spec), max_jobs * EVALUATIONS_PER_JOB
    if evaluations > allowed:
        raise SpecError(
            f"{spec.path}: the configs of the plan's {counts['finetune']:,} fine-tune jobs "
            f"list {evaluations:,} evaluation epochs, above the limit of {allowed:,} "
            f"({EVALUATIONS_PER_JOB} per job of --max-jobs {max_jobs:,}); evaluate less often "
            "(raise eval_every) or pass --max-jobs N to allow more"
        )
