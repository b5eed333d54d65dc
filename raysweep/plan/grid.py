"""Expand a validated spec into its jobs, stage by stage: sources, probes, search, fine-tunes.

``make_plan`` first checks the plan's size arithmetically (:mod:`raysweep.plan.size`), so an
oversized spec is refused before a single job is built."""

from __future__ import annotations

from typing import Any

from raysweep.plan.jobs import Job, Plan, job_key
from raysweep.plan.recipe import (
    attacks_config,
    finetune_config,
    source_axes,
    source_config,
    source_key_config,
)
from raysweep.plan.search import group_for, search_groups, search_jobs
from raysweep.plan.size import MAX_JOBS, check_plan_size
from raysweep.schema import subset_label
from raysweep.spec import SweepSpec


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
    """One job per (probe, source), or per (probe, source, target) for distance/influence."""
    jobs: list[Job] = []
    for probe in spec.probes:
        for source in spec.sources:
            targets: tuple[str | None, ...] = (
                spec.targets_for(source) if probe.per_target else (None,)
            )
            for target in targets:
                config: dict[str, Any] = {
                    "source_key": sources[source.name].key,
                    "probe": {"name": probe.name, "params": probe.params},
                }
                axes = {**source_axes(source), "probe": probe.name}
                if target is not None:
                    config["target"] = axes["target"] = target
                where = f"{source.name}→{target}" if target else source.name
                jobs.append(
                    Job(
                        stage="probe",
                        key=job_key("probe", config),
                        name=f"{probe.name} {where}",
                        config=config,
                        axes=axes,
                    )
                )
    return jobs


def finetune_jobs(spec: SweepSpec, sources: dict[str, Job]) -> list[Job]:
    jobs: list[Job] = []
    if spec.finetune is None:
        return jobs
    groups = search_groups(spec, sources)
    for source in spec.sources:
        ft = spec.finetune_for(source)
        source_key = sources[source.name].key
        for target in spec.targets_for(source):
            for size in spec.subset_sizes:
                rule = ft.rule_for(size)
                for blocks in spec.blocks_for(target):
                    for seed in spec.seeds_for(size):
                        config = finetune_config(
                            ft, source_key, target, size, seed, blocks, rule.eval_every
                        )
                        # Options added after the first release enter the config only when
                        # set, so that the keys of existing jobs stay what they were.
                        if ft.eval_attacks:
                            config["eval_attack"] = attacks_config(ft.eval_attacks)
                        if groups:  # keyed on the search, not on the values it will find
                            group = group_for(spec, groups, source.name, target, size, blocks)
                            config["search"] = group.key
                        axes = {
                            **source_axes(source),
                            "target": target,
                            "subset_size": subset_label(size),
                            "seed": str(seed),
                            "blocks": str(blocks),
                            "epochs": str(rule.epochs),
                        }
                        jobs.append(
                            Job(
                                stage="finetune",
                                key=job_key("finetune", config),
                                name=f"{source.name}→{target} n={subset_label(size)} "
                                f"blocks={blocks} seed={seed}",
                                config=config,
                                axes=axes,
                            )
                        )
    return jobs


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
