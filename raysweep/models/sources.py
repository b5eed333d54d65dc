"""The catalogue of published source models, torch-free (see :mod:`raysweep.models.published`).

Spec validation in the driver checks ``robustness:NAME`` / ``torchvision:NAME`` references
against this table, so it must not import torch or torchvision; loading the files is
:mod:`raysweep.models.published`'s job, which re-exports everything here.
"""

from __future__ import annotations

from dataclasses import dataclass

PREFIXES: tuple[str, ...] = ("robustness:", "torchvision:")


@dataclass(frozen=True)
class PublishedModel:
    """One published source model; ``norm`` is None for naturally trained ones (``eps`` 0)."""

    ref: str
    architecture: str
    dataset: str
    norm: str | None
    eps: float
    file: str
    url: str
    note: str = ""

    @property
    def download_url(self) -> str:
        """``url`` as a direct download (Dropbox's ``?dl=0`` links open a web page)."""
        return self.url.replace("?dl=0", "?dl=1")


def _robustness(
    name: str, dataset: str, norm: str | None, eps: float, url: str, note: str = ""
) -> PublishedModel:
    arch = "resnet50" if dataset == "imagenet" else "cifar_resnet50"
    file = url.rsplit("/", 1)[-1].split("?", 1)[0]
    return PublishedModel(f"robustness:{name}", arch, dataset, norm, eps, file, url, note)


def _torchvision(arch: str, url: str) -> PublishedModel:
    return PublishedModel(
        f"torchvision:{arch}", arch, "imagenet", None, 0.0, url.rsplit("/")[-1], url
    )


_DROPBOX = "https://www.dropbox.com/s/"
# torchvision's ResNet*_Weights.IMAGENET1K_V1.url, written out so the table needs no
# torchvision import (tests/test_driver_imports.py checks they still match).
_TV50 = "https://download.pytorch.org/models/resnet50-0676ba61.pth"
_TV18 = "https://download.pytorch.org/models/resnet18-f37072fd.pth"
_ENTRIES = [
    _robustness("imagenet_nat", "imagenet", None, 0.0, _TV50,
                "README: 'ε = 0.0 (PyTorch pre-trained)', i.e. torchvision's IMAGENET1K_V1"),
    _robustness("imagenet_l2_3_0", "imagenet", "l2", 3.0,
                _DROPBOX + "knf4uimlqsi1yz8/imagenet_l2_3_0.pt?dl=0"),
    _robustness("imagenet_linf_4", "imagenet", "linf", 4 / 255,
                _DROPBOX + "axfuary2w1cnyrg/imagenet_linf_4.pt?dl=0"),
    _robustness("imagenet_linf_8", "imagenet", "linf", 8 / 255,
                _DROPBOX + "yxn15a9zklz3s8q/imagenet_linf_8.pt?dl=0"),
    _robustness("cifar_nat", "cifar10", None, 0.0, _DROPBOX + "yhpp4yws7sgi6lj/cifar_nat.pt?dl=0"),
    _robustness("cifar_l2_0_25", "cifar10", "l2", 0.25,
                _DROPBOX + "2qsp7pt6t7uo71w/cifar_l2_0_25.pt?dl=0"),
    _robustness("cifar_l2_0_5", "cifar10", "l2", 0.5,
                _DROPBOX + "1zazwjfzee7c8i4/cifar_l2_0_5.pt?dl=0"),
    _robustness("cifar_l2_1_0", "cifar10", "l2", 1.0,
                _DROPBOX + "s2x7thisiqxz095/cifar_l2_1_0.pt?dl=0"),
    _robustness("cifar_linf_8", "cifar10", "linf", 8 / 255,
                _DROPBOX + "c9qlt1lbdnu9tlo/cifar_linf_8.pt?dl=0"),
    _torchvision("resnet18", _TV18),
    _torchvision("resnet50", _TV50),
]  # fmt: skip
PUBLISHED: dict[str, PublishedModel] = {entry.ref: entry for entry in _ENTRIES}


def published_names() -> list[str]:
    """Every published reference (``robustness:…``, ``torchvision:…``), sorted."""
    return sorted(PUBLISHED)


def is_reference(ref: str) -> bool:
    """True for ``robustness:NAME`` / ``torchvision:NAME``; anything else is a file path."""
    return ref.startswith(PREFIXES)


def published_model(ref: str) -> PublishedModel:
    """The registry entry of ``ref``; ``ValueError`` listing the valid names if unknown."""
    if ref not in PUBLISHED:
        prefix = ref.split(":", 1)[0] + ":"
        valid = [name for name in published_names() if name.startswith(prefix)]
        raise ValueError(f"unknown published model {ref!r}; valid: {', '.join(valid)}")
    return PUBLISHED[ref]
