"""Reading a sweep spec: YAML file → :class:`~raysweep.spec.model.SweepSpec`, validated whole.

Every problem is a :class:`~raysweep.spec.reader.SpecError` whose message is one line:
``file: key.path: what is wrong; what is allowed``. Nothing runs before a spec is valid.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from raysweep.spec import sections
from raysweep.spec.model import SourceSpec, SweepSpec
from raysweep.spec.reader import Reader, SpecError
from raysweep.spec.search import read_search


def load_spec(path: str | Path) -> SweepSpec:
    """Read and validate a sweep spec; every problem raises a one-line :class:`SpecError`."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(
            f"{path}: no such spec file; give the path of a YAML file such as "
            "search_spaces/quickstart.yaml"
        )
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        place = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "somewhere"
        problem = getattr(error, "problem", None) or "invalid YAML"
        raise SpecError(f"{path}: malformed YAML at {place}: {problem}; fix the syntax") from None
    return parse_spec(raw, str(path))

TOP_REQUIRED = ("name", "sources")
#: The fine-tuning grid; a sweep without it only pretrains and probes.
GRID_KEYS = ("finetune", "targets", "subset_sizes", "blocks")
TOP_OPTIONAL = (
    *GRID_KEYS,
    "seeds",
    "pretrain",
    "probes",
    "resources",
    "data_root",
    "download",
    "description",
    "search",
)


def read_grid(r: Reader, top: Mapping[str, Any], sources: tuple[SourceSpec, ...]) -> dict[str, Any]:
    """targets, finetune, subset sizes, seeds and blocks — all given, or only targets/none."""
    targets = sections.read_targets(r, top["targets"]) if "targets" in top else ()
    if "finetune" not in top:
        extra = [k for k in ("subset_sizes", "blocks", "seeds") if k in top]
        if extra:
            raise r.fail(extra[0], "only meaningful with a finetune section; add one or remove it")
        return {
            "targets": targets,
            "finetune": None,
            "subset_sizes": (),
            "seeds": None,
            "blocks": (),
        }
    for key in GRID_KEYS:
        if key not in top:
            raise r.fail(key, "missing: a sweep with a finetune section needs it")
    finetune = sections.read_finetune(r, top["finetune"])
    every_target = tuple(
        dict.fromkeys(targets + tuple(t for s in sources for t in s.targets or ()))
    )
    return {
        "targets": targets,
        "finetune": finetune,
        "subset_sizes": sections.read_subset_sizes(r, top["subset_sizes"], every_target),
        "seeds": sections.read_seeds(r, top.get("seeds"), finetune),
        "blocks": sections.read_blocks(r, top["blocks"]),
    }


def parse_spec(raw: Any, source: str = "<spec>") -> SweepSpec:
    """Validate an already-parsed YAML document."""
    r = Reader(source)
    top = r.mapping(raw, "top level", required=TOP_REQUIRED, optional=TOP_OPTIONAL)
    name = r.text(top["name"], "name")
    if not all(c.isalnum() or c in "-_." for c in name):
        raise r.fail("name", f"{name!r} may only contain letters, digits, '-', '_' and '.'")
    sources = sections.read_sources(r, top["sources"])
    needs_training = any(s.checkpoint is None for s in sources)
    if needs_training and "pretrain" not in top:
        raise r.fail("pretrain", "missing: sources without a checkpoint need a pretrain section")
    pretrain = sections.read_pretrain(r, top["pretrain"]) if "pretrain" in top else None
    grid = read_grid(r, top, sources)
    search = None
    if "search" in top:
        every_target = (*grid["targets"], *(t for s in sources for t in s.targets or ()))
        search = read_search(r, top["search"], {**grid, "targets": tuple(set(every_target))})
    probes = sections.read_probes(r, top.get("probes", []))
    if any(p.per_target for p in probes) and not any(grid["targets"] or s.targets for s in sources):
        raise r.fail("probes", "distance and influence probes need targets; add a targets list")
    resources = sections.read_resources(r, top.get("resources", {}))
    data_root = r.text(top["data_root"], "data_root") if "data_root" in top else None
    download = r.boolean(top["download"], "download") if "download" in top else False
    return SweepSpec(
        name=name,
        path=source,
        sources=sources,
        pretrain=pretrain,
        **grid,
        probes=probes,
        resources=resources,
        data_root=data_root,
        download=download,
        search=search,
    )
