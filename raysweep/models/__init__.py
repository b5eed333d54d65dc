"""Architectures as TransferNets, fine-tuning surgery and checkpoints.

Only the torch-free name table is imported eagerly: the driver validates specs with
``architecture_names`` and must not pay for torch (≈510 MiB RSS). Everything else is
loaded on first access (PEP 562), so ``from raysweep.models import build_model`` still works.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from raysweep.lazy import lazy_attributes
from raysweep.models.names import FINETUNE_MODES, HEAD_INITS, architecture_names

if TYPE_CHECKING:
    from raysweep.models.checkpoints import CheckpointError, load_checkpoint, save_checkpoint
    from raysweep.models.freeze import (
        configure_trainable,
        frozen_prefix_length,
        replace_head,
        set_finetune_mode,
        trainable_modules,
    )
    from raysweep.models.net import Normalize, TransferNet
    from raysweep.models.registry import build_model

# public name -> submodule defining it
_LAZY: dict[str, str] = {
    "CheckpointError": "checkpoints",
    "load_checkpoint": "checkpoints",
    "save_checkpoint": "checkpoints",
    "configure_trainable": "freeze",
    "frozen_prefix_length": "freeze",
    "replace_head": "freeze",
    "set_finetune_mode": "freeze",
    "trainable_modules": "freeze",
    "Normalize": "net",
    "TransferNet": "net",
    "build_model": "registry",
}

__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)


__all__ = [
    "FINETUNE_MODES",
    "CheckpointError",
    "HEAD_INITS",
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
