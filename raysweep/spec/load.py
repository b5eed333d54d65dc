"""Reading a sweep spec: YAML files → :class:`~raysweep.spec.model.SweepSpec`, validated whole.

:func:`load_spec` composes the spec (:mod:`~raysweep.spec.compose`: ``extends``, overrides,
``${…}``), then :func:`parse_spec` validates it. A spec that cannot run raises one
:class:`~raysweep.spec.reader.SpecError` listing every problem found, one line each:
``file:line:col: key.path: what is wrong; what is allowed`` (its first line is the summary,
``3 problems in spec.yaml:``, or the one problem). Nothing runs before a spec is valid.

This module owns the top level and how the sections depend on each other;
:mod:`~raysweep.spec.files` owns the file, :mod:`~raysweep.spec.yaml_loader` the YAML,
:mod:`~raysweep.spec.sections` and :mod:`~raysweep.spec.search` the sections.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from raysweep.data import dataset_names
from raysweep.spec import sections
from raysweep.spec.compose import compose
from raysweep.spec.files import MAX_SPEC_BYTES, read_spec_bytes, read_spec_text
from raysweep.spec.keys import GRID_KEYS, TOP
from raysweep.spec.model import FinetuneSpec, SourceSpec, SweepSpec
from raysweep.spec.origins import Origins
from raysweep.spec.reader import Reader, SpecError
from raysweep.spec.search import read_search

__all__ = ["MAX_SPEC_BYTES", "load_spec", "parse_spec", "read_spec_bytes", "read_spec_text"]


def load_spec(path: str | Path, overrides: Sequence[str] = ()) -> SweepSpec:
    """Read, compose and validate a sweep spec; ``overrides`` are ``key.path=value`` changes
    applied after ``extends`` and before validation. Raises :class:`SpecError` listing every
    problem found."""
    path = Path(path)
    try:
        composed = compose(path, overrides)
        return parse_spec(composed.data, str(path), composed.origins)
    except RecursionError:  # the loader bounds depth; this guards whatever reads values later
        raise SpecError(f"{path}: nested too deeply to read; flatten the spec") from None


def parse_spec(raw: Any, source: str = "<spec>", origins: Origins | None = None) -> SweepSpec:
    """Validate a composed document; ``origins`` places each key for the problems' lines."""
    r = Reader(source, origins)
    spec = r.attempt(read_top, r, raw)
    error = r.error()
    if error is not None:
        raise error
    assert spec is not None
    return spec


def read_top(r: Reader, raw: Any) -> SweepSpec:
    """Every section, each read on even when another has problems."""
    top = r.keys(raw, "top level", TOP)
    name = r.attempt(r.name, top["name"], "name") if "name" in top else None
    pretrain = r.attempt(sections.read_pretrain, r, top["pretrain"]) if "pretrain" in top else None
    finetune = r.attempt(sections.read_finetune, r, top["finetune"]) if "finetune" in top else None
    sources = None
    if "sources" in top:
        shared = (top.get("pretrain"), top.get("finetune"))
        sources = r.attempt(sections.read_sources, r, top["sources"], *shared)
        check_sources(r, top, sources or ())
    grid = r.attempt(read_grid, r, top, sources, finetune)
    search = None
    if "search" in top and grid is not None:
        every_target = (*grid["targets"], *(t for s in sources or () for t in s.targets or ()))
        grid_targets = {**grid, "targets": tuple(set(every_target))}
        search = r.attempt(read_search, r, top["search"], grid_targets)
    probes = r.attempt(sections.read_probes, r, top.get("probes", []))
    if probes and grid is not None and sources is not None:
        if any(p.per_target for p in probes) and not any(
            grid["targets"] or s.targets for s in sources
        ):
            r.note("probes", "distance and influence probes need targets; add a targets list")
        if any(p.per_subset for p in probes) and not grid["subset_sizes"]:
            r.note("probes", "linear_probe runs per subset of the grid: add finetune and sizes")
    others = r.fields(
        resources=lambda: sections.read_resources(r, top.get("resources", {})),
        data_root=lambda: r.text(top["data_root"], "data_root") if "data_root" in top else None,
        download=lambda: r.boolean(top.get("download", False), "download"),
        log_models=lambda: r.boolean(top.get("log_models", False), "log_models"),
    )
    if r.problems:
        raise r.incomplete()
    assert name and sources and grid and probes is not None and (pretrain or "pretrain" not in top)
    return SweepSpec(
        name=name,
        path=r.source,
        sources=sources,
        pretrain=pretrain,
        **grid,
        probes=probes,
        search=search,
        **others,
    )


def check_sources(r: Reader, top: Mapping[str, Any], sources: Sequence[SourceSpec]) -> None:
    """The sections that sources need."""
    if any(s.finetune is not None for s in sources) and "finetune" not in top:
        r.note("finetune", "missing: sources with their own finetune changes need it")
    needs_training = any(s.checkpoint is None and s.pretrain is None for s in sources)
    if needs_training and "pretrain" not in top:
        r.note("pretrain", "missing: sources without a checkpoint need a pretrain section")


NO_GRID = {"finetune": None, "subset_sizes": (), "seeds": None, "blocks": (), "target_blocks": ()}


def read_grid(
    r: Reader,
    top: Mapping[str, Any],
    sources: Sequence[SourceSpec] | None,
    finetune: FinetuneSpec | None,
) -> dict[str, Any]:
    """targets, finetune, subset sizes, seeds and blocks — all given, or only targets/none.
    ``sources`` and ``finetune`` are None where they had problems (checks needing them wait)."""
    if "finetune" not in top:
        extra = [k for k in ("subset_sizes", "blocks", "seeds") if k in top]
        for key in extra:
            r.note(key, "only meaningful with a finetune section; add one or remove it")
        targets = sections.read_targets(r, top["targets"]) if "targets" in top else ()
        if extra:
            raise r.incomplete()
        return {"targets": targets, **NO_GRID}
    every_source_has_targets = sources is None or all(s.targets is not None for s in sources)
    missing = [
        key
        for key in GRID_KEYS
        if key not in top and not (key == "targets" and every_source_has_targets)
    ]
    for key in missing:
        r.note(key, "missing: a sweep with a finetune section needs it")
    reads = {
        "targets": lambda: sections.read_targets(r, top["targets"]) if "targets" in top else (),
        "blocks": lambda: sections.read_grid_blocks(r, top["blocks"]),
        "subset_sizes": lambda: sections.read_subset_sizes(
            r, top["subset_sizes"], known_targets(top, sources)
        ),
        "seeds": lambda: sections.read_seeds(r, top.get("seeds"), finetune),
    }
    wanted = [k for k in reads if k not in missing]
    grid = r.fields(**{k: reads[k] for k in wanted})
    if missing or finetune is None:
        raise r.incomplete()
    blocks, target_blocks = grid.pop("blocks")
    return {**grid, "finetune": finetune, "blocks": blocks, "target_blocks": target_blocks}


def known_targets(top: Mapping[str, Any], sources: Sequence[SourceSpec] | None) -> tuple[str, ...]:
    """Every valid target of the sweep and of its sources, in order (subset sizes are checked
    against each; a misspelled one has its own problem)."""
    raw = top.get("targets")
    names = set(dataset_names())
    listed = [t for t in raw if isinstance(t, str) and t in names] if isinstance(raw, list) else []
    per_source = [t for s in sources or () for t in s.targets or ()]
    return tuple(dict.fromkeys(listed + per_source))
