"""Attacks, training kinds, pretraining and fine-tuning loops (no Ray, no MLflow).

Importing the package does not import torch: the driver validates specs against
the names of :mod:`raysweep.train.names`. The loops and attacks load on first access (PEP 562), so
``from raysweep.train import finetune`` works as usual.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from raysweep.lazy import lazy_attributes
from raysweep.train.names import NORMS, TRAINING_KINDS

if TYPE_CHECKING:
    from raysweep.train.attacks import PGDConfig, default_step_size, pgd_attack
    from raysweep.train.common import OptimConfig, ScheduleConfig, evaluate
    from raysweep.train.finetuning import FinetuneState, finetune
    from raysweep.train.kinds import (
        TrainingKind,
        make_training_kind,
        training_kind_names,
        training_loss,
    )
    from raysweep.train.loop import pretrain

# public name -> submodule defining it
_LAZY: dict[str, str] = {
    "PGDConfig": "attacks",
    "default_step_size": "attacks",
    "pgd_attack": "attacks",
    "OptimConfig": "common",
    "ScheduleConfig": "common",
    "evaluate": "common",
    "FinetuneState": "finetuning",
    "finetune": "finetuning",
    "TrainingKind": "kinds",
    "make_training_kind": "kinds",
    "training_kind_names": "kinds",
    "training_loss": "kinds",
    "pretrain": "loop",
}

__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)

__all__ = [
    "FinetuneState",
    "NORMS",
    "OptimConfig",
    "PGDConfig",
    "ScheduleConfig",
    "TRAINING_KINDS",
    "TrainingKind",
    "default_step_size",
    "evaluate",
    "finetune",
    "make_training_kind",
    "pgd_attack",
    "pretrain",
    "training_kind_names",
    "training_loss",
]
