"""Attacks, training kinds, pretraining and fine-tuning loops (no Ray, no MLflow)."""

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

__all__ = [
    "FinetuneState",
    "OptimConfig",
    "PGDConfig",
    "ScheduleConfig",
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
