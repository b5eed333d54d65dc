"""VGG-13 for 32 px inputs and its linear variants, as in the CCKL paper (Table 1).

Configuration (Simonyan & Zisserman 2015, VGG-13 with BatchNorm):
``[64, 64, P, 128, 128, P, 256, 256, P, 512, 512, P, 512, 512, P]`` where ``P`` halves the
resolution, so a 32 px image leaves the last stage at 1x1 with 512 features.

* ``vgg13``: conv -> BN -> ReLU, max pooling.
* ``vgg13_half_linear``: no ReLU, max pooling (the only non-linearity is the max).
* ``vgg13_pure_linear``: no ReLU, average pooling: the network is affine in its input once
  BatchNorm uses running statistics (eval mode).

The five stages (convolutions + their pooling) are the ``blocks``; the stem is empty.
"""

from __future__ import annotations

from torch import nn

from raysweep.models.net import Normalize, TransferNet

_STAGES: tuple[tuple[int, int], ...] = ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512))


def _stage(in_ch: int, widths: tuple[int, ...], relu: bool, max_pool: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for width in widths:
        layers += [nn.Conv2d(in_ch, width, 3, padding=1, bias=False), nn.BatchNorm2d(width)]
        if relu:
            layers.append(nn.ReLU(inplace=True))
        in_ch = width
    layers.append(nn.MaxPool2d(2) if max_pool else nn.AvgPool2d(2))
    return nn.Sequential(*layers)


def _vgg13(
    arch: str, num_classes: int, normalize: Normalize, relu: bool, max_pool: bool
) -> TransferNet:
    blocks: list[nn.Module] = []
    in_ch = 3
    for widths in _STAGES:
        blocks.append(_stage(in_ch, widths, relu, max_pool))
        in_ch = widths[-1]
    return TransferNet(
        arch=arch,
        normalize=normalize,
        stem=nn.Identity(),
        blocks=blocks,
        pool=nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1)),
        head=nn.Linear(in_ch, num_classes),
        input_size=32,
    )


def build_vgg13(num_classes: int, normalize: Normalize) -> TransferNet:
    """VGG-13 with BN, ReLU and max pooling."""
    return _vgg13("vgg13", num_classes, normalize, relu=True, max_pool=True)


def build_vgg13_half_linear(num_classes: int, normalize: Normalize) -> TransferNet:
    """VGG-13 without ReLU, with max pooling."""
    return _vgg13("vgg13_half_linear", num_classes, normalize, relu=False, max_pool=True)


def build_vgg13_pure_linear(num_classes: int, normalize: Normalize) -> TransferNet:
    """VGG-13 without ReLU, with average pooling."""
    return _vgg13("vgg13_pure_linear", num_classes, normalize, relu=False, max_pool=False)
