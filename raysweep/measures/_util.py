"""Helpers shared by the measures: frozen evaluation, batched features, normalised steps."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from raysweep.train.attacks import eval_mode


@contextmanager
def frozen(model: nn.Module) -> Iterator[None]:
    """Eval mode and ``requires_grad=False`` on every parameter inside the block, then restore.

    Measures differentiate w.r.t. inputs or auxiliary variables only; leaving the weights
    trainable would make every backward pass also fill (and pollute) the weights' ``.grad``.
    """
    flags = [(p, p.requires_grad) for p in model.parameters()]
    with eval_mode(model):
        for p, _ in flags:
            p.requires_grad_(False)
        try:
            yield
        finally:
            for p, flag in flags:
                p.requires_grad_(flag)


def batched_features(model: nn.Module, x: Tensor, batch_size: int = 256) -> Tensor:
    """``model.features`` of ``x`` (float [0, 1]) in eval mode, batch by batch, no autograd."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    with frozen(model), torch.no_grad():
        return torch.cat([model.features(b) for b in x.split(batch_size)])


def l2_normalised(g: Tensor) -> Tensor:
    """``g / ‖g‖₂`` per sample (first dimension); a zero gradient stays zero."""
    norms = g.flatten(1).norm(dim=1).clamp_min(1e-12)
    return g / norms.view(-1, *([1] * (g.ndim - 1)))


def check_positive_int(name: str, value: int) -> None:
    """Raise ``ValueError`` unless ``value`` is an integer >= 1."""
    if int(value) != value or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value}")
