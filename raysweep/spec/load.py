"""Reading a sweep spec: YAML file → :class:`~raysweep.spec.model.SweepSpec`, validated whole.

Every problem is a :class:`~raysweep.spec.reader.SpecError` whose message is one line:
``file: key.path: what is wrong; what is allowed``. Nothing runs before a spec is valid.
This module owns the file (missing, a folder, unreadable, too large, not UTF-8) and the top
level; :mod:`~raysweep.spec.yaml_loader` owns the YAML, :mod:`~raysweep.spec.sections` the rest.
"""

from __future__ import annotations

import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from raysweep.spec import sections
from raysweep.spec.model import SourceSpec, SweepSpec
from raysweep.spec.reader import Reader, SpecError
from raysweep.spec.search import read_search
from raysweep.spec.yaml_loader import read_yaml

#: Bytes of a spec file; the largest shipped spec has 3.5 kB. Read no further than this.
MAX_SPEC_BYTES = 1_000_000
EXAMPLE = "give the path of a YAML file such as search_spaces/quickstart.yaml"


def read_spec_bytes(path: Path) -> bytes:
    """The file's bytes, or a one-line SpecError saying why it cannot be read."""
    try:
        mode = path.stat().st_mode
        if stat.S_ISDIR(mode):
            raise SpecError(f"{path}: is a folder, not a spec file; {EXAMPLE}")
        if not stat.S_ISREG(mode):  # a FIFO or a device would block or never end
            raise SpecError(f"{path}: not a regular file; {EXAMPLE}")
        with path.open("rb") as handle:
            data = handle.read(MAX_SPEC_BYTES + 1)
    except (FileNotFoundError, NotADirectoryError):
        raise SpecError(f"{path}: no such spec file; {EXAMPLE}") from None
    except OSError as error:
        raise SpecError(
            f"{path}: cannot read the spec ({error.strerror or type(error).__name__}); check "
            "the path and that the file and its folders are readable"
        ) from None
    if len(data) > MAX_SPEC_BYTES:
        raise SpecError(
            f"{path}: larger than {MAX_SPEC_BYTES:,} bytes; a spec is a few kB of YAML: check "
            "that this is the spec file"
        )
    return data


def read_spec_text(path: Path) -> str:
    data = read_spec_bytes(path)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise SpecError(
            f"{path}: not UTF-8 text (byte 0x{data[error.start]:02x} at offset {error.start}); "
            "save the spec as UTF-8"
        ) from None


def load_spec(path: str | Path) -> SweepSpec:
    """Read and validate a sweep spec; every problem raises a one-line :class:`SpecError`."""
    path = Path(path)
    text = read_spec_text(path)
    try:
        return parse_spec(read_yaml(text, str(path)), str(path))
    except RecursionError:  # the loader bounds depth; this guards whatever reads values later
        raise SpecError(f"{path}: nested too deeply to read; flatten the spec") from None


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
    "log_models",
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
            "target_blocks": (),
        }
    every_source_has_targets = all(s.targets is not None for s in sources)
    for key in GRID_KEYS:
        if key not in top and not (key == "targets" and every_source_has_targets):
            raise r.fail(key, "missing: a sweep with a finetune section needs it")
    finetune = sections.read_finetune(r, top["finetune"])
    blocks, target_blocks = sections.read_grid_blocks(r, top["blocks"])
    every_target = tuple(
        dict.fromkeys(targets + tuple(t for s in sources for t in s.targets or ()))
    )
    return {
        "targets": targets,
        "finetune": finetune,
        "subset_sizes": sections.read_subset_sizes(r, top["subset_sizes"], every_target),
        "seeds": sections.read_seeds(r, top.get("seeds"), finetune),
        "blocks": blocks,
        "target_blocks": target_blocks,
    }


def parse_spec(raw: Any, source: str = "<spec>") -> SweepSpec:
    """Validate an already-parsed YAML document."""
    r = Reader(source)
    top = r.mapping(raw, "top level", required=TOP_REQUIRED, optional=TOP_OPTIONAL)
    name = r.name(top["name"], "name")
    sources = sections.read_sources(r, top["sources"], top.get("pretrain"), top.get("finetune"))
    if any(s.finetune is not None for s in sources) and "finetune" not in top:
        raise r.fail("finetune", "missing: sources with their own finetune changes need it")
    needs_training = any(s.checkpoint is None and s.pretrain is None for s in sources)
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
    log_models = r.boolean(top.get("log_models", False), "log_models")
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
        log_models=log_models,
    )
