"""What a worker turns a job into: the source model it reads (cached per process) and the typed
configs of :mod:`raysweep.train` built from the job's JSON config.

Shared by source tasks (:mod:`raysweep.worker.sources`), fine-tune trials
(:mod:`raysweep.worker.finetune`) and search trials.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from raysweep.data import augment_batch, to_model_input
from raysweep.models import TransferNet
from raysweep.models.checkpoints import load_checkpoint
from raysweep.store import Store
from raysweep.train.attacks import PGDConfig
from raysweep.train.common import OptimConfig
from raysweep.train.kinds import TrainingKind, make_training_kind

NAN_KEYS_ENV = "RAYSWEEP_NAN_KEYS"


def cached_source(store: Store, key: str) -> TransferNet:
    """Source ``key`` from the store, its sha256 checked against its record once per process."""
    return _load_source(str(store.verified_checkpoint(key)))


@functools.lru_cache(maxsize=4)
def _load_source(path: str) -> TransferNet:
    model, _ = load_checkpoint(Path(path))
    return model


def make_prepare(model: TransferNet) -> Callable[[torch.Tensor], torch.Tensor]:
    return functools.partial(to_model_input, size=model.input_size, channels=model.input_channels)


def make_augment(kind: str) -> Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None:
    if kind == "none":
        return None
    return lambda x, generator: augment_batch(x, kind, generator)


def attack_config(raw: dict[str, Any] | None) -> PGDConfig | None:
    """A job's attack dict (``loss`` only on evaluation attacks, ``ce`` when absent)."""
    if raw is None:
        return None
    return PGDConfig(
        norm=raw["norm"],
        eps=raw["eps"],
        steps=raw["steps"],
        step_size=raw["step_size"],
        random_start=raw["random_start"],
        objective=raw.get("loss", "ce"),
    )


def eval_attacks(raw: dict[str, Any] | list[dict[str, Any]] | None) -> tuple[PGDConfig, ...]:
    """A job's ``eval_attack`` entry: none, one attack, or a list of them."""
    if raw is None:
        return ()
    items = raw if isinstance(raw, list) else [raw]
    return tuple(a for a in map(attack_config, items) if a is not None)


def injected_faults() -> set[str]:
    """Job keys listed in $RAYSWEEP_NAN_KEYS train with a NaN learning rate.

    Fault injection for resilience tests and drills: it drives the real divergence path (a
    non-finite loss) without changing the job's config, so its key stays the same.
    """
    return {key for key in os.environ.get(NAN_KEYS_ENV, "").split(",") if key}


def optim_config(raw: dict[str, Any], poisoned: bool = False) -> OptimConfig:
    return OptimConfig(
        lr=float("nan") if poisoned else raw["lr"],
        momentum=raw["momentum"],
        weight_decay=raw["weight_decay"],
        batch_size=raw["batch_size"],
        nesterov=raw["nesterov"],
    )


def training_kind(raw: dict[str, Any]) -> TrainingKind:
    params: dict[str, Any] = {}
    if raw.get("attack") is not None:
        params["attack"] = attack_config(raw["attack"])
    for name in ("sigma", "beta", "radius"):
        if raw.get(name) is not None:
            params[name] = raw[name]
    return make_training_kind(raw["kind"], **params)
