"""The network container every architecture is expressed in.

A :class:`TransferNet` is ``head(pool(blocks(stem(normalize(x)))))`` with ``x`` in [0, 1].
Splitting a network this way is what the transfer papers need: Utrera et al. (ICLR 2021)
count "blocks" from the output (0 = head only, 1 = the last residual block, ...), and
Terzi et al. (AAAI 2021) fine-tune the head plus BatchNorm layers. The fine-tuning loop
also uses the split to run a frozen prefix without autograd.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn


class Normalize(nn.Module):
    """Per-channel standardisation ``(x - mean) / std``, the only place it happens.

    ``mean``/``std`` are those of the SOURCE dataset. A single value (a grey-scale source)
    is repeated over ``channels`` so that a 3-channel network can use it. Keeping this inside
    the model means a checkpoint carries its own statistics, so normalisation can be neither
    applied twice nor forgotten (a bug of the reference code).
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], channels: int = 3) -> None:
        super().__init__()
        mean_t = _per_channel(mean, channels, "mean")
        std_t = _per_channel(std, channels, "std")
        if bool((std_t <= 0).any()):
            raise ValueError(f"std must be positive, got {list(std)}")
        self.register_buffer("mean", mean_t.view(1, channels, 1, 1))
        self.register_buffer("std", std_t.view(1, channels, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


def _per_channel(values: Sequence[float], channels: int, name: str) -> Tensor:
    t = torch.as_tensor(list(values), dtype=torch.float32).flatten()
    if t.numel() == 1:
        return t.repeat(channels)
    if t.numel() != channels:
        raise ValueError(f"{name} has {t.numel()} values; expected 1 or {channels}")
    return t


class TransferNet(nn.Module):
    """``head(pool(blocks(stem(normalize(x)))))``; see the module docstring.

    Attributes:
        arch: registry name the model was built from (checkpoints rebuild from it).
        input_size: side in pixels the architecture expects (32 or 224).
        input_channels: always 3; grey-scale targets are expanded by the data layer.
    """

    def __init__(
        self,
        *,
        arch: str,
        normalize: Normalize,
        stem: nn.Module,
        blocks: Sequence[nn.Module],
        pool: nn.Module,
        head: nn.Linear,
        input_size: int,
        input_channels: int = 3,
    ) -> None:
        super().__init__()
        self.arch = arch
        self.normalize = normalize
        self.stem = stem
        self.blocks = nn.ModuleList(blocks)
        self.pool = pool
        self.head = head
        self.input_size = input_size
        self.input_channels = input_channels

    def stages(self) -> list[nn.Module]:
        """Modules in forward order: normalize, stem, every block, pool, head."""
        return [self.normalize, self.stem, *self.blocks, self.pool, self.head]

    def run_stages(self, h: Tensor, start: int, stop: int | None = None) -> Tensor:
        """Apply ``stages()[start:stop]`` to ``h`` (used to split off a frozen prefix)."""
        for module in self.stages()[start:stop]:
            h = module(h)
        return h

    def features(self, x: Tensor) -> Tensor:
        """Penultimate representation (after global pooling) of ``x`` in [0, 1]."""
        return self.run_stages(x, 0, -1)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))
