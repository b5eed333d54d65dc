"""Shared helpers of the measure tests: a one-thread fixture and a tiny conv TransferNet.

Import the fixture by name (``from tiny_nets import one_thread``) so that it is autouse in that
test module only, not in the whole session.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from threadpoolctl import threadpool_limits
from torch import nn

from raysweep.models.net import Normalize, TransferNet


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """Torch, OpenMP and OpenBLAS on one thread for the importing test module."""
    # Two spinning threads (torch, OpenMP, OpenBLAS) on a busy 2-core machine slow tiny ops
    # down 10-50x (a 1290x1290 eigh: 17 s instead of 0.35 s).
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(limits=1):
        yield
    torch.set_num_threads(old)


def tiny_net(
    seed: int = 0, *, stem: int = 4, width: int = 6, classes: int = 3, block_tanh: bool = True
) -> TransferNet:
    """An 8×8 RGB TransferNet: conv(3→stem)+tanh, one stride-2 conv(stem→width)+BN(+tanh),
    global average pool, linear(width→classes); weights drawn after ``torch.manual_seed(seed)``."""
    torch.manual_seed(seed)
    # Modules are built in the order TransferNet lists them so that seeds give the same weights.
    first = nn.Sequential(nn.Conv2d(3, stem, 3, padding=1), nn.Tanh())
    block = [nn.Conv2d(stem, width, 3, stride=2, padding=1), nn.BatchNorm2d(width)]
    if block_tanh:
        block.append(nn.Tanh())
    return TransferNet(
        arch="tiny",
        normalize=Normalize([0.5], [0.25]),
        stem=first,
        blocks=[nn.Sequential(*block)],
        pool=nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1)),
        head=nn.Linear(width, classes),
        input_size=8,
    )
