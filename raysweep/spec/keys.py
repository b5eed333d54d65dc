"""The keys of every section of a sweep spec: which are required, which optional.

One table per mapping of the spec. The readers (:mod:`~raysweep.spec.load`,
:mod:`~raysweep.spec.sections`, :mod:`~raysweep.spec.search`) validate with these tuples and the
JSON Schema (:mod:`~raysweep.spec.json_schema`) is generated from them, so the two cannot drift.
The values a key allows come from the registries (datasets, architectures, training kinds,
norms, augmentations, probes) and are read from there by both as well.
"""

from __future__ import annotations

from typing import NamedTuple


class Keys(NamedTuple):
    """The keys of one mapping: those it must have and those it may have."""

    required: tuple[str, ...]
    optional: tuple[str, ...] = ()

    @property
    def allowed(self) -> tuple[str, ...]:
        return (*self.required, *self.optional)


#: A file's parents (composition, :mod:`~raysweep.spec.compose`); gone before validation.
EXTENDS = "extends"
#: The key of a per-target mapping (``blocks``, ``finetune.augment``) for every other target.
DEFAULT = "default"

#: The fine-tuning grid; a sweep without it only pretrains and probes.
GRID_KEYS = ("finetune", "targets", "subset_sizes", "blocks")
TOP = Keys(
    ("name", "sources"),
    (
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
    ),
)
SOURCE = Keys(
    ("name", "architecture", "dataset", "training"),
    ("checkpoint", "targets", "pretrain", "finetune"),
)
#: A PGD attack, in ``training`` (pgd, trades) and ``eval_attack``.
ATTACK = Keys(("norm", "eps", "steps"), ("step_size", "step_scale", "random_start"))
#: ``eval_attack``: an attack and what it maximises.
EVAL_ATTACK = Keys(ATTACK.required, (*ATTACK.optional, "loss"))
#: ``training`` per ``kind``.
TRAINING: dict[str, Keys] = {
    "natural": Keys(("kind",)),
    "pgd": Keys(("kind", *ATTACK.required), ATTACK.optional),
    "gaussian": Keys(("kind", "sigma"), ("radius",)),
    "trades": Keys(("kind", *ATTACK.required), (*ATTACK.optional, "beta")),
}
OPTIMIZER = Keys(("lr",), ("name", "momentum", "weight_decay", "batch_size", "nesterov"))
#: ``optimizer.name``: SGD with momentum, as in Utrera Table 3 and Terzi App. C.
OPTIMIZER_NAMES = ("sgd",)
PRETRAIN = Keys(
    ("epochs", "optimizer"),
    ("lr_milestones", "lr_decay", "augment", "eval_attack", "seed", "track_information"),
)
FINETUNE = Keys(
    ("optimizer", "rules"),
    (
        "lr_decay",
        "augment",
        "update_frozen_bn_stats",
        "head_init",
        "normalization",
        "eval_attack",
    ),
)
RULE = Keys(("epochs",), ("up_to", "eval_every", "lr_milestones", "seeds", "blocks", "lr"))
RESOURCES = Keys((), ("cpu", "gpu", "bf16", "channels_last"))
#: A probe: its name, then the parameters of raysweep.probes.PROBES[name].
PROBE_NAME = "name"
SEARCH = Keys(
    ("params", "trials"),
    (
        "group_by",
        "metric",
        "validation_fraction",
        "subset_size",
        "blocks",
        "seed",
        "scheduler",
        "max_concurrent",
    ),
)
SEARCH_PARAM = Keys(("distribution",), ("low", "high", "values", "log"))
SCHEDULER = Keys(("name",), ("grace_period", "reduction_factor"))
