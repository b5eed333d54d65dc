"""Short fine-tune and pretrain runs through raysweep's real data path (uint8 storage,
``make_prepare`` up-scaling 16 → 32 px, ``make_augment``), used to pin the device data path
(tests/test_train_device.py) against metrics recorded from the earlier CPU-prepared path.

Run as a script it prints those metrics as JSON (how tests/golden/device_path.json was made).
"""

from __future__ import annotations

import copy
import json
from typing import Any

import torch
from torch import Tensor

from raysweep.models import TransferNet, build_model, replace_head
from raysweep.train import OptimConfig, PGDConfig, ScheduleConfig, finetune, pretrain
from raysweep.train.kinds import make_training_kind
from raysweep.worker.inputs import make_augment, make_prepare


def toy(n: int, seed: int) -> tuple[Tensor, Tensor]:
    """4 classes = 4 fixed colours + noise, 16x16 uint8 RGB (up-scaled to 32 by prepare)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 4, (n,), generator=g)
    templates = torch.rand(4, 3, 1, 1, generator=torch.Generator().manual_seed(7))
    img = 0.5 + 0.5 * (templates[y] - 0.5) + 0.1 * torch.randn(n, 3, 16, 16, generator=g)
    return (img.clamp(0, 1) * 255).round().to(torch.uint8), y


ATTACK = PGDConfig(norm="l2", eps=0.5, steps=2, step_size=0.3, random_start=True)


def pretrained_source() -> tuple[TransferNet, dict[str, float]]:
    """A small_cnn pretrained 2 epochs with Gaussian noise and augmentation, and its metrics."""
    torch.manual_seed(0)
    model = build_model("small_cnn", 4, [0.5], [0.25])
    x, y = toy(128, 3)
    metrics = pretrain(
        model, x, y, x[:48], y[:48], kind=make_training_kind("gaussian", sigma=0.1),
        optim=OptimConfig(lr=0.05, batch_size=32), schedule=ScheduleConfig(epochs=2),
        prepare=make_prepare(model), augment=make_augment("flip_crop"), seed=0,
        eval_attacks=(ATTACK,),
    )  # fmt: skip
    return model, metrics


#: name -> (blocks, augmentation, evaluation attacks)
CASES: dict[str, tuple[int | str, str, bool]] = {
    "head_cached": (0, "none", False),
    "block_augmented": (1, "crop_flip_jitter_rotate2", True),
    "full_flip_crop": ("full", "flip_crop", False),
}


def finetune_case(source: TransferNet, name: str) -> dict[str, float]:
    blocks, augment, attacked = CASES[name]
    model = copy.deepcopy(source)
    replace_head(model, 4, init="default", seed=1)
    x, y = toy(80, 1)
    tx, ty = toy(48, 2)
    return finetune(
        model, x, y, tx, ty, blocks=blocks, update_frozen_bn_stats=False,
        optim=OptimConfig(lr=0.05, batch_size=32),
        schedule=ScheduleConfig(epochs=3, milestones=(2,)), eval_epochs=[1],
        prepare=make_prepare(model), augment=make_augment(augment), seed=5,
        eval_attacks=(ATTACK,) if attacked else (),
    )  # fmt: skip


def all_metrics() -> dict[str, dict[str, float]]:
    """{"pretrain": …, case: …} on one thread (thread counts change float sums)."""
    torch.set_num_threads(1)
    source, metrics = pretrained_source()
    out: dict[str, Any] = {"pretrain": metrics}
    for name in CASES:
        out[name] = finetune_case(source, name)
    return out


if __name__ == "__main__":
    print(json.dumps(all_metrics(), indent=1, sort_keys=True))
