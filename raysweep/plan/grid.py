"""Expand a validated spec into its jobs, stage by stage: sources, probes, search, fine-tunes.

``make_plan`` first checks the plan's size arithmetically (:mod:`raysweep.plan.size`), so an
oversized spec is refused before a single job is built."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from raysweep.plan.jobs import Job, Plan, cell_name, job_key
from raysweep.plan.recipe import (
    attacks_config,
    finetune_config,
    source_axes,
    source_config,
    source_key_config,
)
from raysweep.plan.search import group_for, search_groups, search_jobs
from raysweep.plan.size import MAX_JOBS, check_plan_size
from raysweep.probes import ProbeSpec
from raysweep.schema import subset_label
from raysweep.spec import SourceSpec, SweepSpec


def pretrain_jobs(spec: SweepSpec) -> dict[str, Job]:
    jobs: dict[str, Job] = {}
    for source in spec.sources:
        config = source_config(spec, source)
        key = job_key("pretrain", source_key_config(config))
        verb = "load" if source.checkpoint else "train"
        jobs[source.name] = Job(
            stage="pretrain",
            key=key,
            name=f"{verb} {source.name}",
            config={**config, "source": source.name},
            axes=source_axes(source),
        )
    return jobs


def probe_jobs(spec: SweepSpec, sources: dict[str, Job]) -> list[Job]:
    """One job per (probe, source), per (probe, source, target) for distance/influence, or per
    (probe, source, target, subset size, seed) for linear_probe (:func:`subset_cells`)."""
    jobs: list[Job] = []
    for probe in spec.probes:
        for source in spec.sources:
            targets: tuple[str | None, ...] = (
                spec.targets_for(source) if probe.per_target else (None,)
            )
            for target in targets:
                for cell in subset_cells(spec, probe, source) if target else [{}]:
                    config: dict[str, Any] = {
                        "source_key": sources[source.name].key,
                        "probe": {"name": probe.name, "params": probe.params},
                    }
                    axes = {**source_axes(source), "probe": probe.name}
                    if target is not None:
                        config["target"] = axes["target"] = target
                    # Entered only for per-subset probes: the keys of the others stay.
                    config.update(cell)
                    axes.update(cell_axes(cell))
                    jobs.append(
                        Job(
                            stage="probe",
                            key=job_key("probe", config),
                            name=probe_job_name(probe.name, source.name, target, cell),
                            config=config,
                            axes=axes,
                        )
                    )
    return jobs


def subset_cells(spec: SweepSpec, probe: ProbeSpec, source: SourceSpec) -> list[dict[str, Any]]:
    """``[{}]`` for a probe that is not per subset; else one entry per subset size and seed of
    the fine-tuning grid, ``{"subset_size", "seed", "normalization"}``: the subset the
    fine-tune trials of that cell draw (``sample_subset(labels, size, seed)``), seen through
    the source's fine-tuning input normalisation."""
    if not probe.per_subset:
        return [{}]
    if spec.finetune is None:
        return []
    normalization = spec.finetune_for(source).normalization
    return [
        {"subset_size": size, "seed": seed, "normalization": normalization}
        for size in spec.subset_sizes
        for seed in spec.seeds_for(size)
    ]


def cell_axes(cell: dict[str, Any]) -> dict[str, str]:
    """The subset axes of a per-subset probe job, written as the fine-tune jobs write them."""
    if not cell:
        return {}
    return {"subset_size": subset_label(cell["subset_size"]), "seed": str(cell["seed"])}


def probe_job_name(probe: str, source: str, target: str | None, cell: dict[str, Any]) -> str:
    """``distance natural→digits``; per subset ``linear_probe natural→digits n100 s20000000``."""
    where = f"{source}→{target}" if target else source
    if cell:
        where += f" n{subset_label(cell['subset_size'])} s{cell['seed']}"
    return f"{probe} {where}"


def finetune_jobs(spec: SweepSpec, sources: dict[str, Job]) -> list[Job]:
    """Every fine-tune of the grid: source × its targets × subset sizes × blocks × seeds."""
    jobs: list[Job] = []
    if spec.finetune is None:
        return jobs
    groups = search_groups(spec, sources)
    for source in spec.sources:
        for target in spec.targets_for(source):
            for size in spec.subset_sizes:
                for blocks in spec.blocks_for(target):
                    for index, seed in enumerate(spec.seeds_for(size)):
                        cell = Cell(source, sources[source.name].key, target, size, blocks)
                        jobs.append(finetune_job(spec, groups, cell, seed, index))
    return jobs


@dataclass(frozen=True)
class Cell:
    """One cell of the fine-tuning grid, before its seed."""

    source: SourceSpec
    source_key: str
    target: str
    size: int | None
    blocks: int | str


def finetune_job(spec: SweepSpec, groups: Any, cell: Cell, seed: int, index: int) -> Job:
    """The job of one cell and seed; its name carries the seed's index (``s2``), its params the
    seed itself."""
    ft = spec.finetune_for(cell.source)
    rule = ft.rule_for(cell.size, cell.blocks)
    config = finetune_config(
        ft, cell.source_key, cell.target, cell.size, seed, cell.blocks, rule.eval_every
    )
    # Options added after the first release enter the config only when set, so that the keys
    # of existing jobs stay what they were.
    if ft.eval_attacks:
        config["eval_attack"] = attacks_config(ft.eval_attacks)
    if groups:  # keyed on the search, not on the values it will find
        group = group_for(spec, groups, cell.source.name, cell.target, cell.size, cell.blocks)
        config["search"] = group.key
    axes = {
        **source_axes(cell.source),
        "target": cell.target,
        "subset_size": subset_label(cell.size),
        "seed": str(seed),
        "blocks": str(cell.blocks),
        "epochs": str(rule.epochs),
    }
    name = f"{cell_name(cell.source.name, cell.target, cell.size, cell.blocks)} s{index}"
    return Job("finetune", job_key("finetune", config), name, config, axes)


def make_plan(spec: SweepSpec, max_jobs: int | None = MAX_JOBS) -> Plan:
    """Every job of ``spec``, per stage; a one-line SpecError instead when the plan would hold
    more than ``max_jobs`` jobs (None: no limit; see raysweep.plan.size)."""
    if max_jobs is not None:
        check_plan_size(spec, max_jobs)
    sources = pretrain_jobs(spec)
    jobs = {
        "pretrain": tuple(sources.values()),
        "probe": tuple(probe_jobs(spec, sources)),
    }
    if spec.search is not None:  # a stage of its own only when searched: status stays as it was
        jobs["search"] = tuple(search_jobs(spec, search_groups(spec, sources)))
    jobs["finetune"] = tuple(finetune_jobs(spec, sources))
    return Plan(spec=spec, jobs=jobs)
