"""One registry of architectures: ``build_model(name, ...)`` -> :class:`TransferNet`.

The names live in the torch-free :mod:`raysweep.models.names` (re-exported here).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from raysweep.models import resnets, vgg
from raysweep.models.names import ARCHITECTURE_NAMES, architecture_names
from raysweep.models.net import Normalize, TransferNet

Builder = Callable[[int, Normalize], TransferNet]

_ARCHITECTURES: dict[str, Builder] = {
    "small_cnn": resnets.build_small_cnn,
    "resnet18": resnets.build_resnet18,
    "resnet50": resnets.build_resnet50,
    "cifar_resnet18": resnets.build_cifar_resnet18,
    "cifar_resnet50": resnets.build_cifar_resnet50,
    "resnet20": resnets.build_resnet20,
    "resnet20x10": resnets.build_resnet20x10,
    "resnet32x10": resnets.build_resnet32x10,
    "vgg13": vgg.build_vgg13,
    "vgg13_half_linear": vgg.build_vgg13_half_linear,
    "vgg13_pure_linear": vgg.build_vgg13_pure_linear,
}

# The torch-free name table is what specs are validated against; it must list exactly these.
if set(_ARCHITECTURES) != set(ARCHITECTURE_NAMES):
    raise ImportError(
        "raysweep.models.names.ARCHITECTURE_NAMES and the builders disagree: "
        f"{sorted(set(_ARCHITECTURES) ^ set(ARCHITECTURE_NAMES))}"
    )


def build_model(
    arch: str, num_classes: int, mean: Sequence[float], std: Sequence[float]
) -> TransferNet:
    """Untrained ``arch`` with a ``num_classes`` head, normalising by the SOURCE mean/std.

    Raises:
        ValueError: unknown ``arch`` (the message lists the valid names) or ``num_classes < 1``.
    """
    if arch not in _ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; valid: {', '.join(architecture_names())}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    return _ARCHITECTURES[arch](num_classes, Normalize(mean, std, channels=3))
