"""Sweep specs: YAML → validated, frozen dataclasses. Torch-free; imports nothing above it.

- :mod:`~raysweep.spec.load`: ``load_spec`` / ``parse_spec``, the top level of a spec
- :mod:`~raysweep.spec.compose`: ``extends``, ``key=value`` overrides, ``${…}``, ``null``;
  ``resolved_yaml``, the composed spec as a sweep keeps it
- :mod:`~raysweep.spec.json_schema`: ``spec_json_schema``, the JSON Schema for editors
- :mod:`~raysweep.spec.keys`: every section's keys (read by the readers and the schema)
- :mod:`~raysweep.spec.origins`: where each key was written (file, line, column; override)
- :mod:`~raysweep.spec.files`: a spec file's text (missing, unreadable, too large, not UTF-8)
- :mod:`~raysweep.spec.sections`: one reader per section (sources, pretrain, finetune, ...)
- :mod:`~raysweep.spec.search`: the ``search:`` section
- :mod:`~raysweep.spec.model`: the dataclasses every later layer reads
- :mod:`~raysweep.spec.reader`: typed value readers; ``SpecError`` and its ``Problem`` lines
- :mod:`~raysweep.spec.yaml_loader`: strict YAML (size, depth and duplicate keys bounded)
"""

from raysweep.spec.compose import Composed, compose, resolved_yaml
from raysweep.spec.json_schema import spec_json_schema
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
from raysweep.spec.reader import Problem, SpecError
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
    "Composed",
    "FinetuneSpec",
    "OptimizerSpec",
    "ParamSpec",
    "Problem",
    "PretrainSpec",
    "ResourcesSpec",
    "RuleSpec",
    "SchedulerSpec",
    "SearchSpec",
    "SourceSpec",
    "SpecError",
    "SweepSpec",
    "TrainingSpec",
    "compose",
    "load_spec",
    "parse_spec",
    "read_yaml",
    "resolved_yaml",
    "spec_json_schema",
]
