"""Residual architectures as :class:`TransferNet` s.

* ``small_cnn`` -- a ResNet-style CNN sized for 32x32 sweeps on a CPU: a 16-channel 3x3 stem at
  full resolution, then four basic blocks (He et al. 2016) of widths 32/64/128/128 with strides
  2/2/2/1, i.e. feature maps 16 -> 8 -> 4 -> 4. Utrera et al.'s block counts 0/1/3 then mean
  the head alone, the head + the last 4x4 block, and the head + all blocks but the first.
* ``resnet18`` / ``resnet50`` -- torchvision's ImageNet ResNets (224 px, untrained). Their
  ``blocks`` are the residual blocks of layer1..layer4 in order, so ResNet-50 has 16 and
  Utrera's "9 blocks" is layer3 + layer4 (6 + 3).
* ``cifar_resnet18`` / ``cifar_resnet50`` -- the same networks with the CIFAR stem used by the
  MadryLab robustness library (3x3 stride-1 conv, no max-pool) for 32 px inputs (Terzi et al.).
* ``resnet20``, ``resnet20x10``, ``resnet32x10`` -- He et al.'s CIFAR ResNet-20/32 (3 stages
  of n = 3/5 basic blocks, widths 16/32/64), plain or with 10x channels, as trained with
  TRADES in the CCKL paper (Table 1).
  Shortcuts that change shape use a 1x1 convolution + BN (He et al.'s option B) rather than
  zero-padding (option A), so that every block is a plain torchvision ``BasicBlock``.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn
from torchvision.models import resnet18, resnet50
from torchvision.models.resnet import BasicBlock, ResNet

from raysweep.models.net import Normalize, TransferNet


def _projection(in_ch: int, out_ch: int, stride: int) -> nn.Module | None:
    """1x1 conv + BN shortcut when a block changes shape, else identity (None)."""
    if in_ch == out_ch and stride == 1:
        return None
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch)
    )


def _conv_stem(out_ch: int) -> nn.Sequential:
    return nn.Sequential(
        OrderedDict(
            conv1=nn.Conv2d(3, out_ch, 3, stride=1, padding=1, bias=False),
            bn1=nn.BatchNorm2d(out_ch),
            relu=nn.ReLU(inplace=True),
        )
    )


def _global_pool() -> nn.Sequential:
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))


def _basic_stack(in_ch: int, plan: list[tuple[int, int]]) -> tuple[list[nn.Module], int]:
    """Basic blocks from ``(width, stride)`` pairs; returns the blocks and the final width."""
    blocks: list[nn.Module] = []
    for width, stride in plan:
        blocks.append(BasicBlock(in_ch, width, stride, _projection(in_ch, width, stride)))
        in_ch = width
    return blocks, in_ch


def build_small_cnn(num_classes: int, normalize: Normalize) -> TransferNet:
    """16-ch stem + basic blocks 32/s2, 64/s2, 128/s2, 128/s1 (≈0.6 M parameters)."""
    blocks, width = _basic_stack(16, [(32, 2), (64, 2), (128, 2), (128, 1)])
    return TransferNet(
        arch="small_cnn",
        normalize=normalize,
        stem=_conv_stem(16),
        blocks=blocks,
        pool=_global_pool(),
        head=nn.Linear(width, num_classes),
        input_size=32,
    )


def _from_torchvision(
    arch: str, net: ResNet, num_classes: int, normalize: Normalize, cifar_stem: bool
) -> TransferNet:
    if cifar_stem:
        # The robustness library's CIFAR ResNets: 3x3/1 stem, no max-pool, so 32 px inputs
        # reach layer4 at 4x4 instead of 1x1.
        width = net.conv1.out_channels
        stem = _conv_stem(width)
    else:
        stem = nn.Sequential(
            OrderedDict(conv1=net.conv1, bn1=net.bn1, relu=net.relu, maxpool=net.maxpool)
        )
    layers = [net.layer1, net.layer2, net.layer3, net.layer4]
    blocks = [block for layer in layers for block in layer]
    return TransferNet(
        arch=arch,
        normalize=normalize,
        stem=stem,
        blocks=blocks,
        pool=_global_pool(),
        head=nn.Linear(net.fc.in_features, num_classes),
        input_size=32 if cifar_stem else 224,
    )


def build_resnet18(num_classes: int, normalize: Normalize) -> TransferNet:
    """torchvision ResNet-18, 224 px, 8 blocks."""
    return _from_torchvision("resnet18", resnet18(weights=None), num_classes, normalize, False)


def build_resnet50(num_classes: int, normalize: Normalize) -> TransferNet:
    """torchvision ResNet-50, 224 px, 16 bottleneck blocks (Utrera et al.'s source model)."""
    return _from_torchvision("resnet50", resnet50(weights=None), num_classes, normalize, False)


def build_cifar_resnet18(num_classes: int, normalize: Normalize) -> TransferNet:
    """ResNet-18 with the CIFAR stem, 32 px."""
    net = resnet18(weights=None)
    return _from_torchvision("cifar_resnet18", net, num_classes, normalize, True)


def build_cifar_resnet50(num_classes: int, normalize: Normalize) -> TransferNet:
    """ResNet-50 with the CIFAR stem, 32 px (Terzi et al.'s CIFAR source model)."""
    net = resnet50(weights=None)
    return _from_torchvision("cifar_resnet50", net, num_classes, normalize, True)


def _he_cifar_resnet(
    arch: str, n: int, widen: int, num_classes: int, normalize: Normalize
) -> TransferNet:
    """He et al. (2016) CIFAR ResNet-(6n+2): stages of n blocks at widths 16/32/64 x widen."""
    widths = [16 * widen, 32 * widen, 64 * widen]
    plan = [
        (w, 1 if (stage == 0 or i > 0) else 2) for stage, w in enumerate(widths) for i in range(n)
    ]
    blocks, width = _basic_stack(widths[0], plan)
    return TransferNet(
        arch=arch,
        normalize=normalize,
        stem=_conv_stem(widths[0]),
        blocks=blocks,
        pool=_global_pool(),
        head=nn.Linear(width, num_classes),
        input_size=32,
    )


def build_resnet20(num_classes: int, normalize: Normalize) -> TransferNet:
    """He et al.'s ResNet-20 (n = 3, 9 blocks), widths 16/32/64 (the CCKL paper's resnet20x1)."""
    return _he_cifar_resnet("resnet20", 3, 1, num_classes, normalize)


def build_resnet20x10(num_classes: int, normalize: Normalize) -> TransferNet:
    """ResNet-20 (n = 3, 9 blocks) with 10x channels: 160/320/640."""
    return _he_cifar_resnet("resnet20x10", 3, 10, num_classes, normalize)


def build_resnet32x10(num_classes: int, normalize: Normalize) -> TransferNet:
    """ResNet-32 (n = 5, 15 blocks) with 10x channels: 160/320/640."""
    return _he_cifar_resnet("resnet32x10", 5, 10, num_classes, normalize)
