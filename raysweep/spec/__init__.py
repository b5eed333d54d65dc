"""Sweep specs: YAML → validated, frozen dataclasses. Torch-free; imports nothing above it.

- :mod:`~raysweep.spec.load`: ``load_spec`` / ``parse_spec``, the top level of a spec
- :mod:`~raysweep.spec.sections`: one reader per section (sources, pretrain, finetune, ...)
- :mod:`~raysweep.spec.search`: the ``search:`` section
- :mod:`~raysweep.spec.model`: the dataclasses every later layer reads
- :mod:`~raysweep.spec.reader`: typed value readers that fail with one-line ``SpecError``
"""

from raysweep.spec.load import load_spec, parse_spec
from raysweep.spec.model import (
    SEED_BASE,
    SEED_STRIDE,
    AttackSpec,
    FinetuneSpec,
    OptimizerSpec,
    PretrainSpec,
    ResourcesSpec,
    RuleSpec,
    SourceSpec,
    SweepSpec,
    TrainingSpec,
)
from raysweep.spec.reader import SpecError
from raysweep.spec.search import ParamSpec, SchedulerSpec, SearchSpec

__all__ = [
    "SEED_BASE",
    "SEED_STRIDE",
    "AttackSpec",
    "FinetuneSpec",
    "OptimizerSpec",
    "ParamSpec",
    "PretrainSpec",
    "ResourcesSpec",
    "RuleSpec",
    "SchedulerSpec",
    "SearchSpec",
    "SourceSpec",
    "SpecError",
    "SweepSpec",
    "TrainingSpec",
    "load_spec",
    "parse_spec",
]
