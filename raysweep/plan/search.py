"""Hyperparameter search in the plan: search groups, their keys, and one job per trial slot.

Per *group* (by default one source × one target; ``search.group_by``) a Ray Tune run with
``OptunaSearch`` fine-tunes on the group's training subset minus a validation split; the grid
then runs with each group's best values (:mod:`raysweep.driver.search`).

Keys. A group's key hashes everything its search depends on (source key, target, subset size,
blocks, base fine-tuning settings, search space, budget, seed, scheduler). Its grid jobs carry
``"search": <group key>`` in their config — the found values are unknown at plan time, so the
keys stay stable across resumes. Grid-only sweeps get no such entry: their keys are unchanged.
The ``search`` stage of the plan has one job per trial slot (``trials`` per group), so
``raysweep plan`` and ``raysweep status`` count trials.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from raysweep.plan.jobs import Job, cell_name, job_key
from raysweep.plan.recipe import finetune_config, source_axes
from raysweep.schema import subset_label
from raysweep.spec import SourceSpec, SweepSpec
from raysweep.spec.search import INTEGER_PARAMS, PARAM_PATHS


@dataclass(frozen=True)
class SearchGroup:
    """One study: a source, a target and the subset size / blocks its trials train with."""

    key: str
    name: str
    config: dict[str, Any]
    axes: dict[str, str]


def group_values(spec: SweepSpec, size: int | None, blocks: int | str) -> tuple[Any, Any]:
    """The subset size and blocks a group trains with: its own if grouped by, else the search's."""
    assert spec.search is not None
    s = spec.search
    return (
        size if "subset_size" in s.group_by else s.subset_size,
        blocks if "blocks" in s.group_by else s.blocks,
    )


def make_group(
    spec: SweepSpec,
    source: SourceSpec,
    source_key: str,
    target: str,
    size: int | None,
    blocks: int | str,
) -> SearchGroup:
    """The base fine-tune config of a group's trials; the key also covers the search itself."""
    assert spec.search is not None and spec.finetune is not None
    s, ft = spec.search, spec.finetune_for(source)
    # Every epoch reports val/acc: ASHA's rungs and Optuna's history need it.
    config = finetune_config(ft, source_key, target, size, s.seed, blocks, eval_every=1)
    config["validation_fraction"] = s.validation_fraction
    search = {
        "params": [asdict(p) for p in s.params],
        "trials": s.trials,
        "metric": s.metric,
        "scheduler": asdict(s.scheduler),
        "max_concurrent": s.max_concurrent,
    }
    key = job_key("search", {"base": config, "search": search})
    axes = {
        **source_axes(source),
        "target": target,
        "subset_size": subset_label(size),
        "blocks": str(blocks),
        "search_group": key,
    }
    name = cell_name(source.name, target, size, blocks)
    return SearchGroup(key=key, name=name, config={**config, "search": search}, axes=axes)


def search_groups(
    spec: SweepSpec, sources: Mapping[str, Job]
) -> dict[tuple[Any, ...], SearchGroup]:
    """Every group, by its grid cell (source, target, subset size, blocks) reduced to group_by."""
    groups: dict[tuple[Any, ...], SearchGroup] = {}
    if spec.search is None:
        return groups
    for source in spec.sources:
        for target in spec.targets_for(source):
            for size in spec.subset_sizes:
                for blocks in spec.blocks_for(target):
                    cell = (source.name, target, *group_values(spec, size, blocks))
                    if cell not in groups:
                        groups[cell] = make_group(
                            spec, source, sources[source.name].key, target, *cell[2:]
                        )
    return groups


def group_for(
    spec: SweepSpec,
    groups: Mapping[tuple[Any, ...], SearchGroup],
    source: str,
    target: str,
    size: int | None,
    blocks: int | str,
) -> SearchGroup:
    return groups[(source, target, *group_values(spec, size, blocks))]


def slot_key(group_key: str, index: int) -> str:
    """The key of the ``index``-th finished trial of a group (0-based)."""
    return job_key("search", {"group": group_key, "trial": index})


def search_jobs(spec: SweepSpec, groups: Mapping[tuple[Any, ...], SearchGroup]) -> list[Job]:
    """One job per trial slot: a group's i-th finished trial is recorded under slot i."""
    assert spec.search is not None or not groups
    jobs = []
    for group in groups.values():
        for i in range(group.config["search"]["trials"]):
            jobs.append(
                Job(
                    stage="search",
                    key=slot_key(group.key, i),
                    name=f"search {group.name} #{i}",
                    # The space rides along (not in the key) so analysis can rebuild the study.
                    config={"group": group.key, "trial": i, "space": group.config["search"]},
                    axes={**group.axes, "search_trial": str(i)},
                )
            )
    return jobs


def apply_values(config: dict[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """A fine-tune job config with tuned values put in place (epochs also move eval epochs)."""

    out = {**config, "optimizer": dict(config["optimizer"])}
    for name, value in values.items():
        path = PARAM_PATHS[name]
        value = int(value) if name in INTEGER_PARAMS else float(value)
        (out["optimizer"] if len(path) == 2 else out)[path[-1]] = value
    if "epochs" in values:
        epochs = out["epochs"]
        if "validation_fraction" in config:  # a search trial evaluates every epoch
            out["eval_epochs"] = list(range(1, epochs + 1))
        else:
            out["eval_epochs"] = sorted(
                {*(e for e in config["eval_epochs"] if e <= epochs), epochs}
            )
        out["lr_milestones"] = [m for m in config["lr_milestones"] if m < epochs]
    return out


def max_epochs(group_config: Mapping[str, Any]) -> int:
    """ASHA's max_t: the most epochs a trial of the group can run."""
    for p in group_config["search"]["params"]:
        if p["name"] == "epochs":
            return int(max(p["values"]) if p["distribution"] == "choice" else p["high"])
    return int(group_config["epochs"])
