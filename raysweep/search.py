"""Hyperparameter search inside a sweep: the ``search:`` spec section and its plan.

The papers fix the fine-tuning learning rate for every source and target (0.1 in Utrera et al.
2021, Table 3; 0.01 in Terzi et al. 2021, App. C). A fair robust-vs-natural comparison tunes
each source on each target: per *group* (by default one source × one target) a Ray Tune run
with ``OptunaSearch`` (TPE, Bergstra et al. 2011; seeded) and ASHA early stopping (Li et al.
2020) fine-tunes on the group's training subset minus a validation split, maximising
``val/acc``; the grid then runs with each group's best values.

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

from raysweep.plan import Job, job_key, size_label, source_axes
from raysweep.spec import SourceSpec, SweepSpec
from raysweep.validate import Reader

#: Where each tunable hyperparameter lives in a fine-tune job's config.
PARAM_PATHS: dict[str, tuple[str, ...]] = {
    "lr": ("optimizer", "lr"),
    "weight_decay": ("optimizer", "weight_decay"),
    "momentum": ("optimizer", "momentum"),
    "batch_size": ("optimizer", "batch_size"),
    "epochs": ("epochs",),
    "lr_decay": ("lr_decay",),
    "label_smoothing": ("label_smoothing",),
}
INTEGER_PARAMS = ("batch_size", "epochs")
#: Allowed range of each hyperparameter: (low, high, low is exclusive).
PARAM_RANGES: dict[str, tuple[float, float, bool]] = {
    "lr": (0.0, float("inf"), True),
    "weight_decay": (0.0, float("inf"), False),
    "momentum": (0.0, 1.0, False),
    "batch_size": (1, float("inf"), False),
    "epochs": (1, float("inf"), False),
    "lr_decay": (0.0, 1.0, False),
    "label_smoothing": (0.0, 0.99, False),
}
DISTRIBUTIONS = ("loguniform", "uniform", "int", "choice")
GROUP_AXES = ("source", "target", "subset_size", "blocks")
METRICS = ("val/acc",)
SCHEDULERS = ("asha", "none")
SEARCH_KEYS = (
    "params",
    "trials",
    "group_by",
    "metric",
    "validation_fraction",
    "subset_size",
    "blocks",
    "seed",
    "scheduler",
    "max_concurrent",
)


@dataclass(frozen=True)
class ParamSpec:
    """One tuned hyperparameter: ``loguniform``/``uniform``/``int`` in [low, high] or ``choice``."""

    name: str
    distribution: str
    low: float | None = None
    high: float | None = None
    values: tuple[float, ...] = ()
    log: bool = False


@dataclass(frozen=True)
class SchedulerSpec:
    """ASHA (Li et al. 2020): stop a trial at rung r·η^k unless it is in the top 1/η there."""

    name: str = "asha"
    grace_period: int = 1
    reduction_factor: float = 3.0


@dataclass(frozen=True)
class SearchSpec:
    params: tuple[ParamSpec, ...]
    trials: int
    group_by: tuple[str, ...]
    metric: str
    validation_fraction: float
    #: Subset size and blocks the search trains with when they are not grouped by.
    subset_size: int | None
    blocks: int | str
    seed: int
    scheduler: SchedulerSpec
    #: Trials of one group at once; 1 makes a seeded search exactly reproducible.
    max_concurrent: int


def read_param(r: Reader, name: str, raw: Any, where: str) -> ParamSpec:
    if name not in PARAM_PATHS:
        raise r.fail(where, f"unknown hyperparameter '{name}'; allowed: {', '.join(PARAM_PATHS)}")
    d = r.mapping(raw, where, required=("distribution",), optional=("low", "high", "values", "log"))
    kind = r.choice(d["distribution"], f"{where}.distribution", DISTRIBUTIONS)
    low_bound, high_bound, strict = PARAM_RANGES[name]
    integer = name in INTEGER_PARAMS

    def value(v: Any, at: str) -> float:
        if integer:
            return float(r.integer(v, at, minimum=int(low_bound)))
        number = r.number(v, at, minimum=low_bound, strict_minimum=strict)
        if number > high_bound:
            raise r.fail(at, f"must be <= {high_bound:g} for {name}, got {number:g}")
        return number

    if kind == "choice":
        if "low" in d or "high" in d:
            raise r.fail(where, "a choice takes 'values', not low/high")
        values = [
            value(v, f"{where}.values[{i}]")
            for i, v in enumerate(r.sequence(d.get("values"), f"{where}.values"))
        ]
        return ParamSpec(name, kind, values=tuple(r.unique(values, f"{where}.values")))
    if "values" in d:
        raise r.fail(where, f"a {kind} distribution takes low and high, not 'values'")
    for key in ("low", "high"):
        if key not in d:
            raise r.fail(where, f"missing required key '{key}'")
    if integer != (kind == "int"):
        need = "int or choice" if integer else "loguniform, uniform or choice"
        raise r.fail(f"{where}.distribution", f"{name} takes {need}, got {kind}")
    low, high = value(d["low"], f"{where}.low"), value(d["high"], f"{where}.high")
    if not low < high:
        raise r.fail(where, f"low ({low:g}) must be below high ({high:g})")
    if kind == "loguniform" and low <= 0:
        raise r.fail(f"{where}.low", f"loguniform needs low > 0, got {low:g}")
    log = r.boolean(d.get("log", False), f"{where}.log") if kind == "int" else kind == "loguniform"
    return ParamSpec(name, kind, low=low, high=high, log=log)


def read_scheduler(r: Reader, raw: Any) -> SchedulerSpec:
    if raw in SCHEDULERS:
        return SchedulerSpec(name=raw)
    where = "search.scheduler"
    d = r.mapping(raw, where, required=("name",), optional=("grace_period", "reduction_factor"))
    name = r.choice(d["name"], f"{where}.name", SCHEDULERS)
    if name == "none" and len(d) > 1:
        raise r.fail(where, "grace_period and reduction_factor belong to asha")
    return SchedulerSpec(
        name=name,
        grace_period=r.integer(d.get("grace_period", 1), f"{where}.grace_period", minimum=1),
        reduction_factor=r.number(
            d.get("reduction_factor", 3),
            f"{where}.reduction_factor",
            minimum=1.0,
            strict_minimum=True,
        ),
    )


def read_group_by(r: Reader, raw: Any) -> tuple[str, ...]:
    axes = [
        r.choice(a, f"search.group_by[{i}]", GROUP_AXES)
        for i, a in enumerate(r.sequence(raw, "search.group_by"))
    ]
    r.unique(axes, "search.group_by")
    if "source" not in axes or "target" not in axes:
        raise r.fail(
            "search.group_by",
            "must include source and target (a search trains one source on "
            f"one target); allowed axes: {', '.join(GROUP_AXES)}",
        )
    return tuple(a for a in GROUP_AXES if a in axes)


def largest(sizes: tuple[int | None, ...]) -> int | None:
    """The grid's largest subset size; ``None`` ('all') is the largest of all."""
    return None if None in sizes else max(s for s in sizes if s is not None)


def read_search(r: Reader, raw: Any, grid: Mapping[str, Any]) -> SearchSpec:
    """Validate ``search:``; ``grid`` holds the parsed targets, subset sizes and blocks."""
    if grid.get("finetune") is None:
        raise r.fail("search", "needs a finetune section: the search tunes the fine-tuning grid")
    d = r.mapping(raw, "search", required=("params", "trials"), optional=SEARCH_KEYS)
    p = d["params"]
    if not isinstance(p, Mapping) or not p:
        raise r.fail(
            "search.params",
            f"must be a non-empty mapping name → distribution; tunable: {', '.join(PARAM_PATHS)}",
        )
    params = tuple(read_param(r, str(k), v, f"search.params.{k}") for k, v in p.items())
    group_by = read_group_by(r, d.get("group_by", ["source", "target"]))
    size = largest(grid["subset_sizes"])
    if "subset_size" in d:
        raw_size = d["subset_size"]
        size = None if raw_size == "all" else r.integer(raw_size, "search.subset_size", minimum=1)
    blocks = grid["blocks"][0]
    if "blocks" in d:
        from raysweep.spec import TERZI_MODES

        raw_blocks = d["blocks"]
        blocks = (
            r.choice(raw_blocks, "search.blocks", TERZI_MODES)
            if isinstance(raw_blocks, str)
            else r.integer(raw_blocks, "search.blocks", minimum=0)
        )
    fraction = r.number(
        d.get("validation_fraction", 0.2),
        "search.validation_fraction",
        minimum=0.0,
        maximum=0.9,
        strict_minimum=True,
    )
    spec = SearchSpec(
        params=params,
        trials=r.integer(d["trials"], "search.trials", minimum=1),
        group_by=group_by,
        metric=r.choice(d.get("metric", "val/acc"), "search.metric", METRICS),
        validation_fraction=fraction,
        subset_size=size,
        blocks=blocks,
        seed=r.integer(d.get("seed", 0), "search.seed", minimum=0),
        scheduler=read_scheduler(r, d.get("scheduler", "asha")),
        max_concurrent=r.integer(d.get("max_concurrent", 1), "search.max_concurrent", minimum=1),
    )
    check_search_sizes(r, spec, grid)
    return spec


def validation_count(size: int, fraction: float) -> int:
    """Images carved off for validation: round(fraction · size), at least one."""
    return max(1, round(fraction * size))


def check_search_sizes(r: Reader, spec: SearchSpec, grid: Mapping[str, Any]) -> None:
    """Each search subset must leave every class an image for training after the split."""
    from raysweep.data import dataset_info

    sizes = grid["subset_sizes"] if "subset_size" in spec.group_by else (spec.subset_size,)
    for target in grid["targets"]:
        info = dataset_info(target)
        for size in sizes:
            n = info.train_size if size is None else size
            if n - validation_count(n, spec.validation_fraction) < info.num_classes:
                raise r.fail(
                    "search.validation_fraction",
                    f"{spec.validation_fraction:g} of {n} images of '{target}' leaves fewer "
                    f"training images than its {info.num_classes} classes; use a smaller "
                    "fraction or a larger search.subset_size",
                )


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
    from raysweep.plan import finetune_config

    assert spec.search is not None and spec.finetune is not None
    s, ft = spec.search, spec.finetune
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
        "subset_size": size_label(size),
        "blocks": str(blocks),
        "search_group": key,
    }
    name = f"{source.name}→{target} n={size_label(size)} blocks={blocks}"
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
                for blocks in spec.blocks:
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
