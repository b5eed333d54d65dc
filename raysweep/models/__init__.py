"""Architectures as TransferNets, fine-tuning surgery and checkpoints."""

from raysweep.models.checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from raysweep.models.freeze import (
    FINETUNE_MODES,
    configure_trainable,
    frozen_prefix_length,
    replace_head,
    set_finetune_mode,
    trainable_modules,
)
from raysweep.models.net import Normalize, TransferNet
from raysweep.models.registry import architecture_names, build_model

__all__ = [
    "FINETUNE_MODES",
    "CheckpointError",
    "Normalize",
    "TransferNet",
    "architecture_names",
    "build_model",
    "configure_trainable",
    "frozen_prefix_length",
    "load_checkpoint",
    "replace_head",
    "save_checkpoint",
    "set_finetune_mode",
    "trainable_modules",
]
