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
OOM_KEYS_ENV = "RAYSWEEP_OOM_KEYS"


def cached_source(store: Store, key: str) -> TransferNet:
    """Source ``key`` from the store, its sha256 checked against its record once per process."""
    return _load_source(str(store.verified_checkpoint(key)))


@functools.lru_cache(maxsize=4)
def _load_source(path: str) -> TransferNet:
    model, _ = load_checkpoint(Path(path))
    return model


def make_prepare(
    model: TransferNet, channels_last: bool = False
) -> Callable[[torch.Tensor], torch.Tensor]:
    """uint8 batch -> ``model``'s float32 input, on the device the batch is on (the training
    loops send uint8 there first, :func:`raysweep.train.common.to_device`). With
    ``channels_last`` the batch comes out NHWC, as the model's weights (resources).

    Float32, not bf16, even under ``resources.bf16``: autocast casts at the first convolution,
    and attacks and augmentation keep their [0, 1] pixels exact.
    """
    prepare = functools.partial(
        to_model_input, size=model.input_size, channels=model.input_channels
    )
    if not channels_last:
        return prepare
    return lambda x: prepare(x).contiguous(memory_format=torch.channels_last)


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


def injected_faults(variable: str = NAN_KEYS_ENV) -> set[str]:
    """Job keys listed in $RAYSWEEP_NAN_KEYS train with a NaN learning rate; those listed in
    $RAYSWEEP_OOM_KEYS run out of GPU memory at their first attempt.

    Fault injection for resilience tests and drills: it drives the real divergence path (a
    non-finite loss) or the out-of-memory retry (``resources.gpu: auto``, also without a GPU)
    without changing the job's config, so its key stays the same.
    """
    return {key for key in os.environ.get(variable, "").split(",") if key}


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
