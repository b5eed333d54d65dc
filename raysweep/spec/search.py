"""The ``search:`` section of a spec: what is tuned, how, with what budget (validated).

The papers fix the fine-tuning learning rate for every source and target (0.1 in Utrera et al.
2021, Table 3; 0.01 in Terzi et al. 2021, App. C). A fair robust-vs-natural comparison tunes
each source on each target: per *group* (by default one source × one target) a Ray Tune run
with ``OptunaSearch`` (TPE, Bergstra et al. 2011; seeded) and ASHA early stopping (Li et al.
2020) fine-tunes on the group's training subset minus a validation split, maximising
``val/acc``; the grid then runs with each group's best values.

How the section becomes search groups and trial slots: :mod:`raysweep.plan.search`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from raysweep.spec import keys
from raysweep.spec.model import MAX_EPOCHS
from raysweep.spec.reader import Reader, clip, did_you_mean

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
    "epochs": (1, MAX_EPOCHS, False),
    "lr_decay": (0.0, 1.0, False),
    "label_smoothing": (0.0, 0.99, False),
}
DISTRIBUTIONS = ("loguniform", "uniform", "int", "choice")
GROUP_AXES = ("source", "target", "subset_size", "blocks")
METRICS = ("val/acc",)
SCHEDULERS = ("asha", "none")
SEARCH_KEYS = keys.SEARCH.allowed


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
        raise r.fail(
            where,
            f"unknown hyperparameter '{clip(name, 60)}'; {did_you_mean(name, PARAM_PATHS)}"
            f"allowed: {', '.join(PARAM_PATHS)}",
        )
    d = r.keys(raw, where, keys.SEARCH_PARAM)
    kind = r.choice(d["distribution"], f"{where}.distribution", DISTRIBUTIONS)
    low_bound, high_bound, strict = PARAM_RANGES[name]
    integer = name in INTEGER_PARAMS

    def value(v: Any, at: str) -> float:
        if integer:
            top = None if high_bound == float("inf") else int(high_bound)
            return float(r.integer(v, at, minimum=int(low_bound), maximum=top))
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
    d = r.keys(raw, where, keys.SCHEDULER)
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


def read_params(r: Reader, p: Any) -> tuple[ParamSpec, ...]:
    """``search.params``: each tuned hyperparameter read on its own."""
    if not isinstance(p, Mapping) or not p:
        raise r.fail(
            "search.params",
            f"must be a non-empty mapping name → distribution; tunable: {', '.join(PARAM_PATHS)}",
        )
    found = [
        r.attempt(read_param, r, str(k), v, f"search.params.{clip(str(k), 60)}")
        for k, v in p.items()
    ]
    if any(param is None for param in found):
        raise r.incomplete()
    return tuple(param for param in found if param is not None)


def read_search(r: Reader, raw: Any, grid: Mapping[str, Any]) -> SearchSpec:
    """Validate ``search:``; ``grid`` holds the parsed targets, subset sizes and blocks."""
    if grid.get("finetune") is None:
        raise r.fail("search", "needs a finetune section: the search tunes the fine-tuning grid")
    d = r.keys(raw, "search", keys.SEARCH)
    params = r.attempt(read_params, r, d["params"])
    group_by = read_group_by(r, d.get("group_by", ["source", "target"]))
    size = largest(grid["subset_sizes"])
    if "subset_size" in d:
        size = r.size_or_all(d["subset_size"], "search.subset_size")
    blocks = r.blocks(d["blocks"], "search.blocks") if "blocks" in d else grid["blocks"][0]
    fraction = r.number(
        d.get("validation_fraction", 0.2),
        "search.validation_fraction",
        minimum=0.0,
        maximum=0.9,
        strict_minimum=True,
    )
    if params is None:
        raise r.incomplete()
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


def check_search_sizes(r: Reader, spec: SearchSpec, grid: Mapping[str, Any]) -> None:
    """Each search subset must leave every class an image for training after the split."""
    from raysweep.data import dataset_info
    from raysweep.data.subsets import validation_count

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
