"""Published checkpoints: robustness / torchvision layouts, safe loading, resolution errors."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from torch import Tensor, nn

from raysweep.models import CheckpointError, build_model, save_checkpoint
from raysweep.models.published import (
    PUBLISHED,
    load_source,
    published_names,
    resolve_checkpoint,
)

IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
CIFAR_MEAN, CIFAR_STD = [0.4914, 0.4822, 0.4465], [0.2023, 0.1994, 0.2010]  # robustness's


def _randomise_bn(model: nn.Module, seed: int) -> None:
    """Non-default BN statistics, so a mis-mapped buffer changes eval-mode outputs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(0.1 * torch.randn(m.num_features, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=g))
                m.weight.copy_(0.5 + torch.rand(m.num_features, generator=g))


def _robustness_file(resnet_state: dict[str, Tensor], mean: list[float], std: list[float]) -> dict:
    """The robustness library's checkpoint layout around a ResNet ``state_dict``."""
    model: dict[str, Tensor] = {
        "module.normalizer.new_mean": torch.tensor(mean).view(3, 1, 1),
        "module.normalizer.new_std": torch.tensor(std).view(3, 1, 1),
        "module.attacker.normalize.new_mean": torch.tensor(mean).view(3, 1, 1),
        "module.attacker.normalize.new_std": torch.tensor(std).view(3, 1, 1),
    }
    for key, value in resnet_state.items():
        model[f"module.model.{key}"] = value
        model[f"module.attacker.model.{key}"] = value
    return {
        "model": model,
        "optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "momentum": 0.9, "params": [0]}]},
        "schedule": {"step_size": 50, "gamma": 0.1, "base_lrs": [0.1], "last_epoch": 89},
        "epoch": 90,
        "extra": {"prec1": 57.9, "loss": 1.25},
    }


def _to_robustness_cifar(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Our cifar_resnet50 keys in robustness's CIFAR ResNet naming (layers of 3/4/6/3)."""
    starts = [0, 3, 7, 13, 16]
    out = {}
    for key, value in state.items():
        head, _, rest = key.partition(".")
        if head == "stem":
            out[rest] = value
        elif head == "head":
            out[f"linear.{rest}"] = value
        elif head == "blocks":
            n, _, tail = rest.partition(".")
            layer = max(i for i in range(4) if starts[i] <= int(n))
            tail = tail.replace("downsample.", "shortcut.")
            out[f"layer{layer + 1}.{int(n) - starts[layer]}.{tail}"] = value
    return out


def _same_outputs(a: nn.Module, b: nn.Module, x: Tensor) -> None:
    a.eval()
    b.eval()
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x), atol=1e-5, rtol=0)


class _Normalised(nn.Module):
    """torchvision net behind (x - mean) / std: what a robustness AttackerModel computes."""

    def __init__(self, net: nn.Module, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.net((x - self.mean) / self.std)


def test_robustness_imagenet_resnet50_matches_torchvision(tmp_path: Path) -> None:
    torch.manual_seed(0)
    tv = torchvision.models.resnet50()
    _randomise_bn(tv, 1)
    (tmp_path / "checkpoints").mkdir()
    torch.save(
        _robustness_file(tv.state_dict(), IMAGENET_MEAN, IMAGENET_STD),
        tmp_path / "checkpoints" / "imagenet_l2_3_0.pt",
    )
    # The statistics passed in are ignored: the file's normaliser wins.
    model = load_source("robustness:imagenet_l2_3_0", "resnet50", [0.5], [0.5], tmp_path)
    assert model.arch == "resnet50" and model.head.out_features == 1000
    torch.testing.assert_close(model.normalize.std.flatten(), torch.tensor(IMAGENET_STD))
    _same_outputs(model, _Normalised(tv, IMAGENET_MEAN, IMAGENET_STD), torch.rand(2, 3, 64, 64))


def test_robustness_cifar_resnet50_old_torch_file_with_numpy_extras(tmp_path: Path) -> None:
    torch.manual_seed(0)
    ours = build_model("cifar_resnet50", 10, CIFAR_MEAN, CIFAR_STD)
    _randomise_bn(ours, 2)
    obj = _robustness_file(_to_robustness_cifar(ours.state_dict()), CIFAR_MEAN, CIFAR_STD)
    obj["extra"] = {"prec1": np.float64(81.62), "step": np.int64(7), "ok": np.bool_(True)}
    obj["args"] = argparse.Namespace(arch="resnet50", eps=1.0, constraint="2")
    path = tmp_path / "checkpoints" / "cifar_l2_1_0.pt"
    path.parent.mkdir()
    # Pre-zip serialisation, like the published torch 1.1 files, and numpy 1's module names.
    torch.save(obj, path, _use_new_zipfile_serialization=False)
    raw = path.read_bytes()
    assert b"numpy._core.multiarray\nscalar" in raw
    path.write_bytes(raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    with pytest.raises(Exception, match="numpy.core.multiarray.scalar"):
        torch.load(path, weights_only=True)  # plain weights_only refuses such a file
    model = load_source("robustness:cifar_l2_1_0", "cifar_resnet50", [0.5], [0.5], tmp_path)
    assert model.head.out_features == 10
    _same_outputs(model, ours, torch.rand(2, 3, 32, 32))


def test_torchvision_state_dict_and_raysweep_path(tmp_path: Path) -> None:
    torch.manual_seed(0)
    tv = torchvision.models.resnet18()
    _randomise_bn(tv, 3)
    file = PUBLISHED["torchvision:resnet18"].file
    assert file == "resnet18-f37072fd.pth"
    (tmp_path / "checkpoints").mkdir()
    torch.save(tv.state_dict(), tmp_path / "checkpoints" / file)
    model = load_source("torchvision:resnet18", "resnet18", IMAGENET_MEAN, IMAGENET_STD, tmp_path)
    _same_outputs(model, _Normalised(tv, IMAGENET_MEAN, IMAGENET_STD), torch.rand(2, 3, 64, 64))

    ours = build_model("small_cnn", 3, [0.3], [0.2])
    _randomise_bn(ours, 4)
    save_checkpoint(tmp_path / "own.pt", ours, {"kind": "natural"})
    loaded = load_source(str(tmp_path / "own.pt"), "small_cnn", [0.5], [0.5], None)
    _same_outputs(loaded, ours, torch.rand(2, 3, 32, 32))
    with pytest.raises(CheckpointError, match="holds a small_cnn, not the resnet20 asked for"):
        load_source(str(tmp_path / "own.pt"), "resnet20", [0.5], [0.5], None)


def test_registry_and_resolution(tmp_path: Path) -> None:
    assert len(published_names()) == 11
    entry = PUBLISHED["robustness:imagenet_linf_8"]
    assert (entry.architecture, entry.norm, entry.eps) == ("resnet50", "linf", 8 / 255)
    assert entry.url == "https://www.dropbox.com/s/yxn15a9zklz3s8q/imagenet_linf_8.pt?dl=0"
    assert PUBLISHED["robustness:cifar_nat"].architecture == "cifar_resnet50"
    assert PUBLISHED["robustness:imagenet_nat"].file == PUBLISHED["torchvision:resnet50"].file

    path = tmp_path / "checkpoints" / "cifar_l2_1_0.pt"
    with pytest.raises(FileNotFoundError) as info:
        resolve_checkpoint("robustness:cifar_l2_1_0", tmp_path)
    message = str(info.value)
    assert "\n" not in message
    assert message == (
        f"published checkpoint 'robustness:cifar_l2_1_0' not found at {path}; download it "
        f"there: wget -O {path} 'https://www.dropbox.com/s/s2x7thisiqxz095/cifar_l2_1_0.pt?dl=1'"
    )
    path.parent.mkdir()
    path.write_bytes(b"x")
    assert resolve_checkpoint("robustness:cifar_l2_1_0", str(tmp_path)) == path
    assert resolve_checkpoint(str(path), None) == path
    with pytest.raises(FileNotFoundError, match="no data_root was given"):
        resolve_checkpoint("robustness:cifar_l2_1_0", None)
    with pytest.raises(FileNotFoundError, match=r"checkpoint '.*nope\.pt' not found at"):
        resolve_checkpoint(str(tmp_path / "nope.pt"), tmp_path)
    with pytest.raises(ValueError, match=r"valid: robustness:cifar_l2_0_25, .*robustness:imagenet"):
        resolve_checkpoint("robustness:imagenet_l2_4_0", tmp_path)
    with pytest.raises(ValueError, match="valid: torchvision:resnet18, torchvision:resnet50$"):
        resolve_checkpoint("torchvision:vgg16", tmp_path)
    with pytest.raises(ValueError, match="'robustness:cifar_l2_1_0' is a cifar_resnet50"):
        load_source("robustness:cifar_l2_1_0", "resnet50", [0.5], [0.5], tmp_path)
    with pytest.raises(ValueError, match="unknown architecture 'resnet51'; valid: "):
        load_source("robustness:cifar_l2_1_0", "resnet51", [0.5], [0.5], tmp_path)


def _one_line_error(root: Path, fragment: str) -> None:
    with pytest.raises(CheckpointError) as info:
        load_source("robustness:cifar_l2_0_5", "cifar_resnet50", [0.5], [0.5], root)
    message = str(info.value)
    assert "\n" not in message and fragment in message, message
    assert message.endswith("cifar_l2_0_5.pt?dl=1'")


def test_corrupt_and_foreign_files(tmp_path: Path) -> None:
    path = tmp_path / "checkpoints" / "cifar_l2_0_5.pt"
    path.parent.mkdir()
    path.write_bytes(b"definitely not a checkpoint" * 10)
    _one_line_error(tmp_path, f"checkpoint {path} is unreadable (UnpicklingError")

    torch.save({"model": {"module.model.conv1.weight": torch.zeros(1)}, "epoch": 1,
                "schedule": {"lr_lambda": np.exp}}, path)  # fmt: skip
    _one_line_error(tmp_path, "(it needs numpy.exp, which is not loaded for safety)")

    torch.save([torch.zeros(2)], path)
    _one_line_error(tmp_path, "not a raysweep, robustness or torchvision checkpoint: list")

    # An ImageNet ResNet-18 is not a CIFAR ResNet-50: the strict load says so.
    torch.save(_robustness_file(torchvision.models.resnet18().state_dict(), [0.5] * 3, [0.5] * 3),
               path)  # fmt: skip
    _one_line_error(tmp_path, "(RuntimeError: Error(s) in loading state_dict")

    good = _robustness_file({"conv1.weight": torch.zeros(1)}, [0.5] * 3, [0.5] * 3)
    good["model"]["module.extra.weight"] = torch.zeros(1)
    torch.save(good, path)
    _one_line_error(tmp_path, "unexpected robustness key 'module.extra.weight'")
