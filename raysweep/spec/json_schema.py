"""The JSON Schema (draft 2020-12) of a sweep spec, for editors: ``spec_json_schema()``.

Generated from what the readers validate with, so that the two cannot drift: every mapping's
required and allowed keys from :mod:`raysweep.spec.keys` (generation fails if a key has no
schema here), the names a key allows from the registries (datasets, architectures, training
kinds, norms, augmentation recipes, head inits, fine-tune modes, the probe table
:data:`raysweep.probes.PROBES` with each probe's parameters, the search's distributions) and the
bounds of :mod:`raysweep.spec.model`. What a schema cannot say (milestones before the last
epoch, subset sizes within each target's training set, which sections need which) the readers
still check: a spec the schema accepts may still be refused, with a line saying why.

Each mapping comes in three forms: a whole spec; the changes a source makes to the sweep's
``pretrain`` / ``finetune`` (every key optional); and a file that ``extends`` another (every key
optional, ``null`` removes a parent's key). List items are always whole: a list replaces its
parent's. Numbers may be fractions written as text (``"8/255"``) where the readers allow them,
and any value an interpolation (``${oc.env:VAR}``). ``spec.schema.json`` at the repository root
is this document (``raysweep schema``; a test keeps the two equal).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from raysweep.data import AUGMENTATIONS, dataset_names
from raysweep.models import FINETUNE_MODES, HEAD_INITS, architecture_names
from raysweep.models.sources import published_names
from raysweep.probes import PROBES, probe_names
from raysweep.probes.table import FISHER_STARTS, PERTURBATIONS
from raysweep.schema import ALL_IMAGES
from raysweep.spec import keys
from raysweep.spec.keys import Keys
from raysweep.spec.model import GPU_AUTO, MAX_EPOCHS, MAX_SEEDS, NORMALIZATIONS
from raysweep.spec.search import DISTRIBUTIONS, GROUP_AXES, METRICS, PARAM_PATHS, SCHEDULERS
from raysweep.spec.sections import ATTACK_LOSSES
from raysweep.sweepdir import NAME_PATTERN
from raysweep.train.names import NORMS, TRAINING_KINDS

DIALECT = "https://json-schema.org/draft/2020-12/schema"
#: The forms of a mapping, as suffixes of their $defs names.
WHOLE, CHANGES, LAYER = "", "_changes", "_layer"
#: A number written as text, as the readers accept it: 8/255, 0.5, 1e-3.
FRACTION = r"^\s*[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?(\s*/\s*\d+)?\s*$"
INTERPOLATION = {"$ref": "#/$defs/interpolation"}
DATASET = {"$ref": "#/$defs/dataset"}


def leaf(schema: dict[str, Any]) -> dict[str, Any]:
    """A value as written, or an interpolation that resolves to one."""
    return {"anyOf": [schema, INTERPOLATION]}


def number(**bounds: float) -> dict[str, Any]:
    """A number, or one written as text (``"8/255"``); ``bounds``: JSON Schema keywords."""
    return {"anyOf": [{"type": "number", **bounds}, {"$ref": "#/$defs/fraction"}, INTERPOLATION]}


def integer(minimum: int = 0, maximum: int | None = None) -> dict[str, Any]:
    bound = {} if maximum is None else {"maximum": maximum}
    return leaf({"type": "integer", "minimum": minimum, **bound})


def choice(values: Iterable[str]) -> dict[str, Any]:
    return leaf({"enum": list(values)})


BOOLEAN = leaf({"type": "boolean"})
TEXT = {"type": "string"}
EPOCHS = integer(1, MAX_EPOCHS)
SEED_COUNT = integer(1, MAX_SEEDS)
SIZE_OR_ALL = {"anyOf": [{"type": "integer", "minimum": 1}, {"const": ALL_IMAGES}, INTERPOLATION]}
BLOCK = {
    "anyOf": [{"type": "integer", "minimum": 0}, {"enum": list(FINETUNE_MODES)}, INTERPOLATION]
}
MILESTONES = {"type": "array", "items": integer(1), "uniqueItems": True}
#: Probe parameter kinds (raysweep.probes.table) as schemas.
PROBE_KINDS: dict[str, dict[str, Any]] = {
    "count": integer(1),
    "positive": leaf({"type": "number", "exclusiveMinimum": 0}),
    "nonneg": leaf({"type": "number", "minimum": 0}),
    "positives": {
        "type": "array",
        "minItems": 1,
        "items": {
            "anyOf": [
                {"type": "number", "exclusiveMinimum": 0},
                {"type": "string", "pattern": r"^\s*\d{1,12}\s*/\s*\d{1,12}\s*$"},
            ]
        },
    },
    "norm": choice(NORMS),
    "perturbation": choice(PERTURBATIONS),
    "start": choice(FISHER_STARTS),
}


class Builder:
    """Builds each named definition once per form, on first reference."""

    def __init__(self) -> None:
        self.defs: dict[str, Any] = {
            "fraction": {
                "type": "string",
                "pattern": FRACTION,
                "description": "a number written as text: 8/255, 0.5, 1e-3",
            },
            "dataset": {"enum": dataset_names(), "description": "a dataset of raysweep.data"},
            "interpolation": {
                "type": "string",
                "pattern": r"\$\{",
                "description": "an OmegaConf interpolation: ${key.path}, ${oc.env:VAR,default}",
            },
        }

    def ref(self, name: str, form: str = WHOLE) -> dict[str, Any]:
        key = name + form
        if key not in self.defs:
            self.defs[key] = {}  # taken, while it is built
            self.defs[key] = getattr(self, f"build_{name}")(form)
        return {"$ref": f"#/$defs/{key}"}

    @staticmethod
    def mapping(table: Keys, properties: dict[str, Any], form: str) -> dict[str, Any]:
        """An object with exactly the keys of ``table`` (required ones in a whole form)."""
        missing = set(table.allowed) ^ set(properties)
        assert not missing, f"the schema and raysweep.spec.keys differ on {sorted(missing)}"
        if form == LAYER:
            properties = {k: {"anyOf": [v, {"type": "null"}]} for k, v in properties.items()}
        schema = {"type": "object", "properties": properties, "additionalProperties": False}
        if form == WHOLE and table.required:
            schema["required"] = list(table.required)
        return schema

    @staticmethod
    def per_target(value: dict[str, Any], form: str, *, default: bool) -> dict[str, Any]:
        """``{default: …, <target>: …}``: a value per target dataset."""
        schema = {
            "type": "object",
            "propertyNames": {"anyOf": [{"const": keys.DEFAULT}, DATASET]},
            "additionalProperties": {"anyOf": [value, {"type": "null"}]}
            if form == LAYER
            else value,
        }
        return {**schema, "required": [keys.DEFAULT]} if default and form == WHOLE else schema

    def eval_attack(self, form: str) -> dict[str, Any]:
        whole = self.ref("attack")
        return {"anyOf": [self.ref("attack", form), {"type": "array", "items": whole}]}

    def build_spec(self, form: str) -> dict[str, Any]:
        table = keys.TOP if form == WHOLE else Keys((), (*keys.TOP.allowed, keys.EXTENDS))
        blocks_list = {"type": "array", "minItems": 1, "items": BLOCK}
        seeds_list = {"type": "array", "minItems": 1, "maxItems": MAX_SEEDS, "items": integer()}
        properties = {
            "name": {"type": "string", "pattern": rf"^\s*{NAME_PATTERN.pattern}\s*$"},
            "description": TEXT,
            "sources": {"type": "array", "minItems": 1, "items": self.ref("source")},
            "pretrain": self.ref("pretrain", form),
            "targets": self.targets(),
            "subset_sizes": {"type": "array", "minItems": 1, "items": SIZE_OR_ALL},
            "seeds": {"anyOf": [SEED_COUNT, seeds_list]},
            "blocks": {"anyOf": [blocks_list, self.per_target(blocks_list, form, default=True)]},
            "finetune": self.ref("finetune", form),
            "probes": {"type": "array", "items": self.ref("probe")},
            "search": self.ref("search", form),
            "resources": self.ref("resources", form),
            "data_root": TEXT,
            "download": BOOLEAN,
            "log_models": BOOLEAN,
        }
        if form == LAYER:
            names = {"type": "string", "minLength": 1}
            extends = {"anyOf": [names, {"type": "array", "minItems": 1, "items": names}]}
            properties[keys.EXTENDS] = extends
        return self.mapping(table, properties, form)

    @staticmethod
    def targets() -> dict[str, Any]:
        return {
            "type": "array",
            "minItems": 1,
            "uniqueItems": True,
            "items": {"enum": dataset_names()},
        }

    def build_source(self, form: str) -> dict[str, Any]:
        properties = {
            "name": {"type": "string", "pattern": rf"^\s*{NAME_PATTERN.pattern}\s*$"},
            "architecture": choice(architecture_names()),
            "dataset": leaf(DATASET),
            "training": self.ref("training"),
            "checkpoint": {**TEXT, "examples": published_names()},
            "targets": self.targets(),
            "pretrain": self.ref("pretrain", CHANGES),
            "finetune": self.ref("finetune", CHANGES),
        }
        return self.mapping(keys.SOURCE, properties, form)

    def build_training(self, form: str) -> dict[str, Any]:
        assert set(keys.TRAINING) == set(TRAINING_KINDS), "a training kind without its keys"
        attack = self.attack_properties()
        values = {
            "sigma": number(exclusiveMinimum=0),
            "radius": number(exclusiveMinimum=0),
            "beta": number(exclusiveMinimum=0),
            **attack,
        }
        kinds = []
        for kind in TRAINING_KINDS:
            table = keys.TRAINING[kind]
            properties = {k: {"const": kind} if k == "kind" else values[k] for k in table.allowed}
            when = {"properties": {"kind": {"const": kind}}, "required": ["kind"]}
            kinds.append({"if": when, "then": self.mapping(table, properties, form)})
        return {
            "type": "object",
            "required": ["kind"],
            "properties": {"kind": {"enum": list(TRAINING_KINDS)}},
            "allOf": kinds,
        }

    @staticmethod
    def attack_properties() -> dict[str, Any]:
        return {
            "norm": choice(NORMS),
            "eps": number(exclusiveMinimum=0),
            "steps": integer(1),
            "step_size": number(exclusiveMinimum=0),
            "step_scale": number(exclusiveMinimum=0),
            "random_start": BOOLEAN,
        }

    def build_attack(self, form: str) -> dict[str, Any]:
        properties = {**self.attack_properties(), "loss": choice(ATTACK_LOSSES)}
        return self.mapping(keys.EVAL_ATTACK, properties, form)

    def build_optimizer(self, form: str) -> dict[str, Any]:
        properties = {
            "name": choice(keys.OPTIMIZER_NAMES),
            "lr": number(exclusiveMinimum=0),
            "momentum": number(minimum=0, maximum=1),
            "weight_decay": number(minimum=0),
            "batch_size": integer(1),
            "nesterov": BOOLEAN,
        }
        return self.mapping(keys.OPTIMIZER, properties, form)

    def build_pretrain(self, form: str) -> dict[str, Any]:
        properties = {
            "epochs": EPOCHS,
            "optimizer": self.ref("optimizer", form),
            "lr_milestones": MILESTONES,
            "lr_decay": number(minimum=0, maximum=1),
            "augment": choice(AUGMENTATIONS),
            "eval_attack": self.eval_attack(form),
            "seed": integer(),
            "track_information": integer(),
        }
        return self.mapping(keys.PRETRAIN, properties, form)

    def build_finetune(self, form: str) -> dict[str, Any]:
        recipe = choice(AUGMENTATIONS)
        properties = {
            "optimizer": self.ref("optimizer", form),
            "rules": {"type": "array", "minItems": 1, "items": self.ref("rule")},
            "lr_decay": number(minimum=0, maximum=1),
            "augment": {"anyOf": [recipe, self.per_target(recipe, form, default=False)]},
            "update_frozen_bn_stats": BOOLEAN,
            "head_init": choice(HEAD_INITS),
            "normalization": choice(NORMALIZATIONS),
            "eval_attack": self.eval_attack(form),
        }
        return self.mapping(keys.FINETUNE, properties, form)

    def build_rule(self, form: str) -> dict[str, Any]:
        properties = {
            "epochs": EPOCHS,
            "up_to": SIZE_OR_ALL,
            "eval_every": integer(1),
            "lr_milestones": MILESTONES,
            "seeds": SEED_COUNT,
            "blocks": {"type": "array", "minItems": 1, "items": BLOCK},
            "lr": number(exclusiveMinimum=0),
        }
        return self.mapping(keys.RULE, properties, form)

    def build_resources(self, form: str) -> dict[str, Any]:
        properties = {
            "cpu": number(exclusiveMinimum=0),
            "gpu": {"anyOf": [*number(minimum=0)["anyOf"], {"const": GPU_AUTO}]},
            "bf16": BOOLEAN,
            "channels_last": BOOLEAN,
        }
        return self.mapping(keys.RESOURCES, properties, form)

    def build_probe(self, form: str) -> dict[str, Any]:
        """Each probe of the table, with its own parameters (``name`` picks which)."""
        probes = []
        for name in probe_names():
            params = PROBES[name].params
            table = Keys((keys.PROBE_NAME,), tuple(params))
            properties = {keys.PROBE_NAME: {"const": name}}
            properties.update({k: PROBE_KINDS[kind] for k, (kind, _) in params.items()})
            when = {"properties": {keys.PROBE_NAME: {"const": name}}, "required": ["name"]}
            probes.append({"if": when, "then": self.mapping(table, properties, form)})
        return {
            "type": "object",
            "required": [keys.PROBE_NAME],
            "properties": {keys.PROBE_NAME: {"enum": probe_names()}},
            "allOf": probes,
        }

    def build_search(self, form: str) -> dict[str, Any]:
        params = {
            "type": "object",
            "propertyNames": {"enum": list(PARAM_PATHS)},
            "additionalProperties": self.ref("param", form),
        }
        properties = {
            "params": {**params, "minProperties": 1} if form == WHOLE else params,
            "trials": integer(1),
            "group_by": {"type": "array", "uniqueItems": True, "items": choice(GROUP_AXES)},
            "metric": choice(METRICS),
            "validation_fraction": number(exclusiveMinimum=0, maximum=0.9),
            "subset_size": SIZE_OR_ALL,
            "blocks": BLOCK,
            "seed": integer(),
            "scheduler": {"anyOf": [choice(SCHEDULERS), self.ref("scheduler", form)]},
            "max_concurrent": integer(1),
        }
        return self.mapping(keys.SEARCH, properties, form)

    def build_param(self, form: str) -> dict[str, Any]:
        properties = {
            "distribution": choice(DISTRIBUTIONS),
            "low": number(),
            "high": number(),
            "values": {"type": "array", "minItems": 1, "items": number()},
            "log": BOOLEAN,
        }
        return self.mapping(keys.SEARCH_PARAM, properties, form)

    def build_scheduler(self, form: str) -> dict[str, Any]:
        properties = {
            "name": choice(SCHEDULERS),
            "grace_period": integer(1),
            "reduction_factor": number(exclusiveMinimum=1),
        }
        return self.mapping(keys.SCHEDULER, properties, form)


def spec_json_schema() -> dict[str, Any]:
    """The JSON Schema of a spec file: a whole spec, or (with ``extends``) changes to one."""
    builder = Builder()
    whole, layer = builder.ref("spec"), builder.ref("spec", LAYER)
    return {
        "$schema": DIALECT,
        "title": "raysweep sweep spec",
        "description": (
            "A sweep of transfer-learning experiments (raysweep plan|launch SPEC). Generated by "
            "`raysweep schema`; the readers check what a schema cannot (README, Writing a sweep)."
        ),
        "if": {"type": "object", "required": [keys.EXTENDS]},
        "then": layer,
        "else": whole,
        "$defs": dict(sorted(builder.defs.items())),
    }
