"""Sweep specs: YAML → validated, frozen dataclasses. Torch-free; imports nothing above it.

- :mod:`~raysweep.spec.load`: ``load_spec`` / ``parse_spec``, the top level of a spec
- :mod:`~raysweep.spec.sections`: one reader per section (sources, pretrain, finetune, ...)
- :mod:`~raysweep.spec.search`: the ``search:`` section
- :mod:`~raysweep.spec.model`: the dataclasses every later layer reads
- :mod:`~raysweep.spec.reader`: typed value readers that fail with one-line ``SpecError``
- :mod:`~raysweep.spec.yaml_loader`: strict YAML (size, depth and duplicate keys bounded)
"""

from raysweep.spec.load import MAX_SPEC_BYTES, load_spec, parse_spec
from raysweep.spec.model import (
    MAX_EPOCHS,
    MAX_SEEDS,
    SEED_BASE,
    SEED_STRIDE,
    AttackSpec,
    EvalAttackSpec,
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
from raysweep.spec.yaml_loader import MAX_DEPTH, MAX_NODES, MAX_TEXT, read_yaml

__all__ = [
    "EvalAttackSpec",
    "MAX_DEPTH",
    "MAX_EPOCHS",
    "MAX_NODES",
    "MAX_SEEDS",
    "MAX_SPEC_BYTES",
    "MAX_TEXT",
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
    "read_yaml",
]
