"""Sweep specs: YAML → validated, frozen dataclasses.

A spec is validated completely before anything runs. Every problem is a :class:`SpecError`
whose message is one line: ``file: key.path: what is wrong; what is allowed``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from raysweep.validate import Reader, SpecError

if TYPE_CHECKING:
    from raysweep.probes import ProbeSpec
    from raysweep.search import SearchSpec

__all__ = [
    "SpecError",
    "TrainingSpec",
    "AttackSpec",
    "OptimizerSpec",
    "PretrainSpec",
    "SourceSpec",
    "RuleSpec",
    "FinetuneSpec",
    "ResourcesSpec",
    "SweepSpec",
    "load_spec",
    "parse_spec",
    "TERZI_MODES",
    "SEED_BASE",
    "SEED_STRIDE",
]

#: Utrera et al. eq. (6): S_k = {20000000 + 100000·i : i < k}.
SEED_BASE = 20_000_000
SEED_STRIDE = 100_000
#: Terzi et al. App. C transfer modes 0, 1, 2 under names that say what is trained.
TERZI_MODES = ("head_bn", "all_bn", "full")
NORMS = ("l2", "linf")
AUGMENTATIONS = ("none", "flip_crop", "crop_rotate")
HEAD_INITS = ("normal", "default")
NORMALIZATIONS = ("source", "target")


@dataclass(frozen=True)
class AttackSpec:
    """A PGD attack: ``steps`` steps of ``step_size`` inside the ``norm`` ball of radius eps."""

    norm: str
    eps: float
    steps: int
    step_size: float
    random_start: bool = True


@dataclass(frozen=True)
class TrainingSpec:
    """How a source was (or is to be) trained: ``natural``, ``pgd``, ``gaussian`` or ``trades``."""

    kind: str
    attack: AttackSpec | None = None
    sigma: float | None = None
    beta: float | None = None

    @property
    def norm(self) -> str:
        return self.attack.norm if self.attack else ""

    @property
    def eps(self) -> float:
        return self.attack.eps if self.attack else 0.0


@dataclass(frozen=True)
class OptimizerSpec:
    """SGD with momentum, as in Utrera Table 3 and Terzi App. C."""

    lr: float
    momentum: float
    weight_decay: float
    batch_size: int
    nesterov: bool = False


@dataclass(frozen=True)
class PretrainSpec:
    """How sources without a checkpoint are trained."""

    epochs: int
    optimizer: OptimizerSpec
    lr_milestones: tuple[int, ...]
    lr_decay: float
    augment: str
    eval_attack: AttackSpec | None
    seed: int
    #: Test images on which to log input-Fisher F-norm and CCKL every epoch (0 = off);
    #: the CCKL paper's Fig. 3–4, 7–8.
    track_information: int = 0


@dataclass(frozen=True)
class SourceSpec:
    name: str
    architecture: str
    dataset: str
    training: TrainingSpec
    checkpoint: str | None = None
    #: Targets for this source only (Terzi Table 1 transfers each CIFAR source to the other
    #: datasets); None = the sweep's ``targets``.
    targets: tuple[str, ...] | None = None


@dataclass(frozen=True)
class RuleSpec:
    """Fine-tuning settings for subset sizes up to ``up_to`` images (None: every size, ``all``)."""

    up_to: int | None
    epochs: int
    eval_every: int
    lr_milestones: tuple[int, ...]
    seeds: int | None


@dataclass(frozen=True)
class FinetuneSpec:
    optimizer: OptimizerSpec
    lr_decay: float
    augment: str
    update_frozen_bn_stats: bool
    head_init: str
    normalization: str
    rules: tuple[RuleSpec, ...]
    #: Also measure accuracy under this attack at every evaluation epoch (``adv/acc``).
    eval_attack: AttackSpec | None = None

    def rule_for(self, size: int | None) -> RuleSpec:
        """The first rule whose ``up_to`` covers ``size`` (None = the whole training set)."""
        for rule in self.rules:
            if rule.up_to is None or (size is not None and size <= rule.up_to):
                return rule
        raise AssertionError("validated specs always end with a rule that covers 'all'")


@dataclass(frozen=True)
class ResourcesSpec:
    cpu: float
    gpu: float
    #: Speed switches for GPU trials (how a job runs, not what it computes: not in job keys).
    #: bf16: fine-tune under ``torch.autocast(dtype=bfloat16)``; channels_last: NHWC weights.
    bf16: bool = False
    channels_last: bool = False


@dataclass(frozen=True)
class SweepSpec:
    name: str
    path: str
    sources: tuple[SourceSpec, ...]
    pretrain: PretrainSpec | None
    targets: tuple[str, ...]
    subset_sizes: tuple[int | None, ...]
    seeds: tuple[int, ...] | int | None
    blocks: tuple[int | str, ...]
    finetune: FinetuneSpec | None
    probes: tuple[ProbeSpec, ...]
    resources: ResourcesSpec
    data_root: str | None
    download: bool
    #: Per-group hyperparameter search before the grid (raysweep.search); None = grid only.
    search: SearchSpec | None = None

    def targets_for(self, source: SourceSpec) -> tuple[str, ...]:
        return source.targets if source.targets is not None else self.targets

    def seeds_for(self, size: int | None) -> tuple[int, ...]:
        """Explicit seeds, or the first k of Utrera's S_k for a count (global or per rule)."""
        if isinstance(self.seeds, tuple):
            return self.seeds
        assert self.finetune is not None, "seeds belong to the fine-tuning grid"
        count = self.seeds if isinstance(self.seeds, int) else self.finetune.rule_for(size).seeds
        assert count is not None, "validated: seeds are given globally or in every rule"
        return tuple(SEED_BASE + SEED_STRIDE * i for i in range(count))


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
    from raysweep import spec_sections as sections

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
    from raysweep import spec_sections as sections

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
        from raysweep.search import read_search

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
