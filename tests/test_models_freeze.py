"""Which parameters train, which change, and which BatchNorm statistics move."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from raysweep.models import (
    TransferNet,
    build_model,
    configure_trainable,
    frozen_prefix_length,
    set_finetune_mode,
)
from raysweep.train import OptimConfig, ScheduleConfig, finetune

BN = (nn.BatchNorm2d,)


def trainable_names(model: nn.Module) -> set[str]:
    return {name for name, p in model.named_parameters() if p.requires_grad}


def params_under(model: nn.Module, prefixes: tuple[str, ...]) -> set[str]:
    return {name for name, _ in model.named_parameters() if name.startswith(prefixes)}


def bn_params(model: nn.Module) -> set[str]:
    return {
        f"{name}.{p}"
        for name, m in model.named_modules()
        if isinstance(m, BN)
        for p in ("weight", "bias")
    }


@pytest.fixture(scope="module")
def resnet50() -> TransferNet:
    return build_model("resnet50", 10, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])


@pytest.mark.parametrize(
    ("blocks", "unfrozen"),
    [(0, ()), (1, ("blocks.15.",)), (3, ("blocks.13.", "blocks.14.", "blocks.15.")),
     (9, tuple(f"blocks.{i}." for i in range(7, 16)))],
)  # fmt: skip
def test_resnet50_utrera_blocks(resnet50: TransferNet, blocks: int, unfrozen: tuple) -> None:
    params = configure_trainable(resnet50, blocks)
    expected = params_under(resnet50, ("head.", *unfrozen))
    assert trainable_names(resnet50) == expected
    assert len(params) == len(expected)
    # blocks.7..15 are torchvision's layer3.0..layer4.2
    if blocks == 9:
        assert resnet50.blocks[7].conv1.in_channels == 512
        assert resnet50.blocks[6].conv3.out_channels == 512


def test_resnet50_terzi_modes(resnet50: TransferNet) -> None:
    configure_trainable(resnet50, "head_bn")
    assert trainable_names(resnet50) == {
        "head.weight",
        "head.bias",
        "blocks.15.bn3.weight",
        "blocks.15.bn3.bias",
    }
    configure_trainable(resnet50, "all_bn")
    assert trainable_names(resnet50) == {"head.weight", "head.bias"} | bn_params(resnet50)
    assert "stem.bn1.weight" in trainable_names(resnet50)
    assert "blocks.0.downsample.1.weight" in trainable_names(resnet50)
    configure_trainable(resnet50, "full")
    assert trainable_names(resnet50) == {name for name, _ in resnet50.named_parameters()}
    with pytest.raises(ValueError, match=r"max 16"):
        configure_trainable(resnet50, 17)
    with pytest.raises(ValueError, match="head_bn, all_bn, full"):
        configure_trainable(resnet50, "bn_only")


def test_small_cnn_sets_and_prefix() -> None:
    model = build_model("small_cnn", 10, [0.5], [0.25])
    expected = {
        0: ("head.",),
        1: ("head.", "blocks.3."),
        3: ("head.", "blocks.1.", "blocks.2.", "blocks.3."),
        4: ("head.", "blocks."),
    }
    for blocks, prefixes in expected.items():
        configure_trainable(model, blocks)
        assert trainable_names(model) == params_under(model, prefixes)
    # stages: normalize, stem, blocks 0-3, pool, head
    assert frozen_prefix_length(model) == 2
    configure_trainable(model, 0)
    assert frozen_prefix_length(model) == 7
    configure_trainable(model, "head_bn")
    assert trainable_names(model) == {
        "head.weight",
        "head.bias",
        "blocks.3.bn2.weight",
        "blocks.3.bn2.bias",
    }
    assert frozen_prefix_length(model) == 5
    with pytest.raises(ValueError, match="max 4"):
        configure_trainable(model, 5)


def test_set_finetune_mode_freezes_bn_statistics() -> None:
    model = build_model("small_cnn", 10, [0.5], [0.25])
    set_finetune_mode(model, 1, update_frozen_bn_stats=False)
    assert not model.stem.bn1.training and not model.blocks[2].bn2.training
    assert model.blocks[3].bn1.training and model.head.training and model.blocks[0].conv1.training
    set_finetune_mode(model, "head_bn", update_frozen_bn_stats=False)
    assert [m.training for m in model.blocks[3].modules() if isinstance(m, BN)] == [False, True]
    set_finetune_mode(model, 1, update_frozen_bn_stats=True)
    assert all(m.training for m in model.modules())


def _data(n: int, seed: int) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, 16, 16), generator=g, dtype=torch.uint8), torch.randint(
        0, 4, (n,), generator=g
    )


def _one_step(model: TransferNet, blocks: int | str, update: bool) -> None:
    x, y = _data(16, 0)
    finetune(
        model, x, y, x[:4], y[:4], blocks=blocks, update_frozen_bn_stats=update,
        optim=OptimConfig(lr=0.05, batch_size=16), schedule=ScheduleConfig(epochs=1),
        eval_epochs=[1], prepare=lambda xb: xb.float() / 255, augment=None, seed=0,
    )  # fmt: skip


@pytest.mark.parametrize("blocks", [0, 1, 3, "head_bn", "all_bn", "full"])
def test_one_step_changes_only_trainable_parameters(blocks: int | str) -> None:
    torch.manual_seed(0)
    model = build_model("small_cnn", 4, [0.5], [0.25])
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    _one_step(model, blocks, update=False)
    changed = {k for k, v in model.named_parameters() if not torch.equal(v, before[k])}
    assert changed == trainable_names(model)
    assert changed  # something trained


@pytest.mark.parametrize("update", [False, True])
def test_frozen_bn_running_stats_move_iff_asked(update: bool) -> None:
    torch.manual_seed(0)
    model = build_model("small_cnn", 4, [0.5], [0.25])
    stats = {name: m.running_mean.clone() for name, m in model.named_modules() if isinstance(m, BN)}
    _one_step(model, 1, update=update)
    moved = {
        name
        for name, m in model.named_modules()
        if isinstance(m, BN) and not torch.equal(m.running_mean, stats[name])
    }
    trainable_bns = {name for name in stats if name.startswith("blocks.3.")}
    frozen_bns = set(stats) - trainable_bns
    assert trainable_bns <= moved
    assert (frozen_bns <= moved) if update else not (frozen_bns & moved)
