"""Fine-tuning surgery: new head, which parameters train, and which BatchNorms keep updating.

Two protocols are supported through one ``blocks`` argument:

* ``int k`` (Utrera et al., ICLR 2021, Fig. 9): the head plus the last ``k`` blocks train.
  For ResNet-50: 0 = fc, 1 = fc + layer4.2, 3 = fc + layer4, 9 = fc + layer3 + layer4.
* Terzi et al. (AAAI 2021, App. C) modes: ``"head_bn"`` (mode 0: the head and the BatchNorm
  right before it, i.e. the last BN of the last block's residual branch), ``"all_bn"``
  (mode 1: the head and every BatchNorm), ``"full"`` (mode 2: the whole network).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from raysweep.models.names import FINETUNE_MODES, HEAD_INITS
from raysweep.models.net import TransferNet

_BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def replace_head(model: TransferNet, num_classes: int, init: str = "normal", seed: int = 0) -> None:
    """Give ``model`` a fresh ``nn.Linear`` head for ``num_classes`` target classes.

    ``init="normal"``: W_ij ~ N(0, 1), b = 0 (the reference code of Utrera et al.).
    ``init="default"``: PyTorch's Linear init, W, b ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    Both draw from a generator seeded with ``seed``, so the head is a function of the seed only.
    """
    if init not in HEAD_INITS:
        raise ValueError(f"unknown head init {init!r}; valid: {', '.join(HEAD_INITS)}")
    old = model.head
    head = nn.Linear(old.in_features, num_classes, device=old.weight.device, dtype=old.weight.dtype)
    gen = torch.Generator(device=old.weight.device).manual_seed(seed)
    with torch.no_grad():
        if init == "normal":
            head.weight.normal_(0.0, 1.0, generator=gen)
            head.bias.zero_()
        else:
            bound = 1.0 / math.sqrt(old.in_features)
            head.weight.uniform_(-bound, bound, generator=gen)
            head.bias.uniform_(-bound, bound, generator=gen)
    model.head = head


def _last_branch_bn(block: nn.Module) -> nn.Module:
    """The last BatchNorm of a block, skipping the shortcut (the BN whose output feeds the head)."""
    candidates = [
        m
        for name, m in block.named_modules()
        if isinstance(m, _BN_TYPES) and not name.startswith(("downsample", "shortcut"))
    ]
    if not candidates:
        raise ValueError(f"the last block ({type(block).__name__}) has no BatchNorm")
    return candidates[-1]


def trainable_modules(model: TransferNet, blocks: int | str) -> list[nn.Module]:
    """Modules whose parameters train under ``blocks`` (see the module docstring)."""
    if isinstance(blocks, bool) or not isinstance(blocks, int | str):
        raise ValueError(f"blocks must be an int or one of {', '.join(FINETUNE_MODES)}")
    if isinstance(blocks, int):
        n = len(model.blocks)
        if not 0 <= blocks <= n:
            raise ValueError(f"blocks={blocks} is out of range for {model.arch}: 0..{n} (max {n})")
        return [model.head, *list(model.blocks)[n - blocks :]]
    if blocks == "head_bn":
        return [model.head, _last_branch_bn(model.blocks[-1])]
    if blocks == "all_bn":
        return [model.head, *(m for m in model.modules() if isinstance(m, _BN_TYPES))]
    if blocks == "full":
        return [model]
    raise ValueError(
        f"unknown fine-tuning mode {blocks!r}; valid: a block count or {', '.join(FINETUNE_MODES)}"
    )


def configure_trainable(model: TransferNet, blocks: int | str) -> list[nn.Parameter]:
    """Set ``requires_grad`` for ``blocks`` and return the trainable parameters in model order."""
    chosen = {id(p) for m in trainable_modules(model, blocks) for p in m.parameters()}
    for p in model.parameters():
        p.requires_grad_(id(p) in chosen)
    return [p for p in model.parameters() if p.requires_grad]


def set_finetune_mode(model: TransferNet, blocks: int | str, update_frozen_bn_stats: bool) -> None:
    """Put ``model`` in training mode for fine-tuning; call it instead of ``model.train()``.

    Frozen BatchNorm layers go to eval mode, so their running mean/variance stay those of the
    source. ``update_frozen_bn_stats=True`` keeps them in train mode instead, which reproduces
    the reference code (it re-estimated the statistics of "frozen" blocks on the target data
    because the whole model stayed in train mode).
    """
    model.train()
    if update_frozen_bn_stats:
        return
    trained = {id(sub) for m in trainable_modules(model, blocks) for sub in m.modules()}
    for m in model.modules():
        if isinstance(m, _BN_TYPES) and id(m) not in trained:
            m.eval()


def frozen_prefix_length(model: TransferNet) -> int:
    """Number of leading ``model.stages()`` with no parameter that requires grad.

    Those stages can run without autograd (and their output can be cached when it is
    deterministic); ``configure_trainable`` must have been called first.
    """
    for i, stage in enumerate(model.stages()):
        if any(p.requires_grad for p in stage.parameters()):
            return i
    return len(model.stages())
