"""Architecture names and fine-tuning options, torch-free: the driver validates specs against
them without torch.

:mod:`raysweep.models.registry` maps each name to its builder and checks at import that the
two tables agree, so a new architecture cannot be buildable yet rejected by spec validation
(or the reverse).
"""

from __future__ import annotations

ARCHITECTURE_NAMES: tuple[str, ...] = (
    "small_cnn",
    "resnet18",
    "resnet50",
    "cifar_resnet18",
    "cifar_resnet50",
    "resnet20",
    "resnet20x10",
    "resnet32x10",
    "vgg13",
    "vgg13_half_linear",
    "vgg13_pure_linear",
)

#: Terzi et al. (AAAI 2021, App. C) transfer modes 0, 1, 2, named for what is trained
#: (:mod:`raysweep.models.freeze`).
FINETUNE_MODES: tuple[str, ...] = ("head_bn", "all_bn", "full")
#: How a new head is initialised (:func:`raysweep.models.freeze.replace_head`).
HEAD_INITS: tuple[str, ...] = ("normal", "default")


def architecture_names() -> list[str]:
    """Registered architecture names, sorted."""
    return sorted(ARCHITECTURE_NAMES)
