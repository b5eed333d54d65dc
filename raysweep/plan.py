"""Expand a validated spec into jobs, each with a stable key.

A job's key is a hash of its normalised configuration (never of its display name), so the same
work always has the same key: launching a spec twice, resuming, or a second sweep that shares a
source model all find the work already done.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from raysweep.spec import FinetuneSpec, SourceSpec, SweepSpec

#: Bump when the meaning of a job's configuration changes, so that old results are not reused.
PROTOCOL_VERSION = 1
STAGES = ("pretrain", "probe", "search", "finetune")


def job_key(stage: str, config: dict[str, Any]) -> str:
    """First 16 hex digits of SHA-256 over the canonical JSON of (protocol, stage, config)."""
    payload = json.dumps(
        {"protocol": PROTOCOL_VERSION, "stage": stage, "config": config},
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Job:
    """One unit of work: its stage, stable key, JSON-able config and the axes to record."""

    stage: str
    key: str
    name: str
    config: dict[str, Any]
    axes: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Plan:
    spec: SweepSpec
    jobs: dict[str, tuple[Job, ...]]

    def __iter__(self) -> Iterator[Job]:
        for stage in STAGES:
            yield from self.jobs.get(stage, ())

    @property
    def total(self) -> int:
        return sum(len(jobs) for jobs in self.jobs.values())

    def keys(self) -> set[str]:
        return {job.key for job in self}


def size_label(size: int | None) -> str:
    return "all" if size is None else str(size)


def source_config(spec: SweepSpec, source: SourceSpec) -> dict[str, Any]:
    """What determines a source model: architecture, data, training, and how it was made."""
    config: dict[str, Any] = {
        "architecture": source.architecture,
        "dataset": source.dataset,
        "training": asdict(source.training),
    }
    if source.checkpoint is not None:
        config["checkpoint"] = source.checkpoint
    else:
        assert spec.pretrain is not None
        config["pretrain"] = asdict(spec.pretrain)
        if not spec.pretrain.track_information:  # added later: absent unless used (stable keys)
            del config["pretrain"]["track_information"]
    return config


def source_axes(source: SourceSpec) -> dict[str, str]:
    return {
        "source": source.name,
        "source_training": source.training.kind,
        "source_norm": source.training.norm,
        "source_eps": f"{source.training.eps:g}",
        "source_architecture": source.architecture,
        "source_dataset": source.dataset,
    }


def eval_epochs(epochs: int, every: int) -> list[int]:
    """Utrera A.4: with frequency 20 over 100 epochs, test after epochs 1, 21, 41, 61, 81, 100."""
    return sorted({*range(1, epochs + 1, every), epochs})


def pretrain_jobs(spec: SweepSpec) -> dict[str, Job]:
    jobs: dict[str, Job] = {}
    for source in spec.sources:
        config = source_config(spec, source)
        key = job_key("pretrain", config)
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


def finetune_config(
    ft: FinetuneSpec,
    source_key: str,
    target: str,
    size: int | None,
    seed: int,
    blocks: int | str,
    eval_every: int,
) -> dict[str, Any]:
    """What a fine-tune job computes: source, target subset, seed, blocks and the recipe."""
    rule = ft.rule_for(size)
    return {
        "source_key": source_key,
        "target": target,
        "subset_size": size,
        "seed": seed,
        "blocks": blocks,
        "epochs": rule.epochs,
        "eval_epochs": eval_epochs(rule.epochs, eval_every),
        "lr_milestones": list(rule.lr_milestones),
        "lr_decay": ft.lr_decay,
        "optimizer": asdict(ft.optimizer),
        "augment": ft.augment,
        "update_frozen_bn_stats": ft.update_frozen_bn_stats,
        "head_init": ft.head_init,
        "normalization": ft.normalization,
    }


def finetune_jobs(spec: SweepSpec, sources: dict[str, Job]) -> list[Job]:
    from raysweep.search import group_for, search_groups

    ft = spec.finetune
    jobs: list[Job] = []
    if ft is None:
        return jobs
    groups = search_groups(spec, sources)
    for source in spec.sources:
        source_key = sources[source.name].key
        for target in spec.targets_for(source):
            for size in spec.subset_sizes:
                rule = ft.rule_for(size)
                for blocks in spec.blocks:
                    for seed in spec.seeds_for(size):
                        config = finetune_config(
                            ft, source_key, target, size, seed, blocks, rule.eval_every
                        )
                        # Options added after the first release enter the config only when
                        # set, so that the keys of existing jobs stay what they were.
                        if ft.eval_attack is not None:
                            config["eval_attack"] = asdict(ft.eval_attack)
                        if groups:  # keyed on the search, not on the values it will find
                            group = group_for(spec, groups, source.name, target, size, blocks)
                            config["search"] = group.key
                        axes = {
                            **source_axes(source),
                            "target": target,
                            "subset_size": size_label(size),
                            "seed": str(seed),
                            "blocks": str(blocks),
                            "epochs": str(rule.epochs),
                        }
                        jobs.append(
                            Job(
                                stage="finetune",
                                key=job_key("finetune", config),
                                name=f"{source.name}→{target} n={size_label(size)} "
                                f"blocks={blocks} seed={seed}",
                                config=config,
                                axes=axes,
                            )
                        )
    return jobs


def make_plan(spec: SweepSpec) -> Plan:
    sources = pretrain_jobs(spec)
    jobs = {
        "pretrain": tuple(sources.values()),
        "probe": tuple(probe_jobs(spec, sources)),
    }
    if spec.search is not None:  # a stage of its own only when searched: status stays as it was
        from raysweep.search import search_groups, search_jobs

        jobs["search"] = tuple(search_jobs(spec, search_groups(spec, sources)))
    jobs["finetune"] = tuple(finetune_jobs(spec, sources))
    return Plan(spec=spec, jobs=jobs)


def describe_plan(plan: Plan) -> str:
    """The text `raysweep plan` prints: jobs per stage, with the grid's shape, and the total."""
    spec = plan.spec
    lines = [f"sweep '{spec.name}' ({spec.path})"]
    trained = sum(1 for s in spec.sources if s.checkpoint is None)
    loaded = len(spec.sources) - trained
    lines.append(
        f"  pretrain   {len(plan.jobs['pretrain']):>7,} Ray tasks "
        f"({trained} to train, {loaded} from checkpoints)"
    )
    probes = ", ".join(p.name for p in spec.probes) or "none"
    lines.append(f"  probe      {len(plan.jobs['probe']):>7,} Ray tasks (probes: {probes})")
    if spec.finetune is None:
        lines.append("  finetune         0 (no finetune section)")
        lines.append(f"  total      {plan.total:>7,} jobs")
        return "\n".join(lines)
    if spec.search is not None:
        trials = len(plan.jobs["search"])
        groups = trials // spec.search.trials
        lines.append(
            f"  search     {trials:>7,} Ray Tune trials = {groups} groups "
            f"(by {', '.join(spec.search.group_by)}) × {spec.search.trials} trials"
        )
    seed_counts = {size_label(s): len(spec.seeds_for(s)) for s in spec.subset_sizes}
    pairs = sum(len(spec.targets_for(s)) for s in spec.sources)
    seeds_text = ", ".join(f"{k}:{v}" for k, v in seed_counts.items())
    lines.append(
        f"  finetune   {len(plan.jobs['finetune']):>7,} Ray Tune trials "
        f"= {pairs} source→target pairs × {len(spec.blocks)} block settings × "
        f"seeds per subset size ({seeds_text})"
    )
    lines.append(f"  total      {plan.total:>7,} jobs")
    return "\n".join(lines)
