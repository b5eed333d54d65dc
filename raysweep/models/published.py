"""Published source models: the MadryLab robustness library's ResNet-50s and torchvision's.

Utrera et al. (ICLR 2021) fine-tune the robustness library's ImageNet ResNet-50s (natural,
``||δ||₂ ≤ 3``, ``||δ||∞ ≤ 4/255``, ``||δ||∞ ≤ 8/255``); Terzi et al. (AAAI 2021) its CIFAR-10
ResNet-50s (natural, ℓ₂ ε = 0.25 / 0.5 / 1). ``PUBLISHED`` (torch-free, in
:mod:`raysweep.models.sources`) lists them with the download links
of the robustness README (MadryLab/robustness, "Pretrained models"), which also says the files
were written by torch 1.1.0 with dill 0.2.9. Its ImageNet "ε = 0.0" model is "PyTorch
pre-trained" (76.13 % top-1, torchvision's IMAGENET1K_V1 ResNet-50), so
``robustness:imagenet_nat`` is that torchvision file. There is no network here: every file is
read from ``<data_root>/checkpoints/<file>`` and a missing one raises an error saying where to
download it.

Three layouts are recognised by content, not by name:

* raysweep's own checkpoints (:mod:`raysweep.models.checkpoints`);
* robustness files ``{"model", "optimizer", "schedule", "epoch", ...}`` whose ``model`` holds
  ``module.normalizer.new_mean|new_std`` (the input statistics, shape [3, 1, 1]),
  ``module.model.<resnet key>`` and ``module.attacker.model.<resnet key>`` (the attacker's
  reference to the same network, ignored);
* bare torchvision ResNet state dicts (``conv1.weight``, ``layer1.0.conv1.weight``, ``fc.*``).

ResNet keys map onto :class:`TransferNet` as ``conv1|bn1 -> stem.conv1|stem.bn1``,
``layer{L}.{j} -> blocks.{n}`` (n counts blocks in (L, j) order, as ``resnets.py`` flattens
them), ``fc|linear -> head`` and, in the robustness CIFAR ResNets, ``shortcut -> downsample``.
Files are opened with ``torch.load(weights_only=True)`` only, allowing the inert numpy /
``argparse.Namespace`` types listed in ``checkpoints.SAFE_EXTRA_GLOBALS``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from raysweep.models.checkpoints import (
    FORMAT,
    CheckpointError,
    is_robustness_checkpoint,
    is_torchvision_state_dict,
    load_error_reason,
    load_weights_only,
    one_line,
    read_raysweep,
)
from raysweep.models.net import TransferNet
from raysweep.models.registry import architecture_names, build_model
from raysweep.models.sources import (
    PREFIXES,
    PUBLISHED,
    PublishedModel,
    is_reference,
    published_model,
    published_names,
)

if TYPE_CHECKING:
    from torch import Tensor

# The catalogue (torch-free, for spec validation in the driver) is re-exported from here.
__all__ = [
    "PREFIXES",
    "PUBLISHED",
    "PublishedModel",
    "is_reference",
    "load_source",
    "published_model",
    "published_names",
    "resolve_checkpoint",
    "torchvision_to_transfernet",
]

_LAYER_KEY = re.compile(r"layer(\d+)\.(\d+)\.(.+)")
Stats = tuple[Sequence[float], Sequence[float]]


def resolve_checkpoint(ref: str, data_root: str | Path | None) -> Path:
    """``robustness:NAME`` / ``torchvision:NAME`` -> ``<data_root>/checkpoints/<file>``;
    any other ``ref`` is a path (``~`` expanded).

    Raises:
        ValueError: unknown published name (the message lists the valid ones).
        FileNotFoundError: no file there; the one-line message names the reference, the path
            looked at and the command that downloads it there.
    """
    if not is_reference(ref):
        path = Path(ref).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint '{ref}' not found at {path}; check the path")
        return path
    entry = published_model(ref)
    if data_root is None:
        raise FileNotFoundError(
            f"published checkpoint '{ref}' is read from <data_root>/checkpoints/{entry.file} "
            f"but no data_root was given; set data_root: and download {entry.download_url} there"
        )
    path = Path(data_root).expanduser() / "checkpoints" / entry.file
    if not path.is_file():
        raise FileNotFoundError(
            f"published checkpoint '{ref}' not found at {path}; download it there: "
            f"wget -O {path} '{entry.download_url}'"
        )
    return path


def torchvision_to_transfernet(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Rename a torchvision (or robustness CIFAR) ResNet ``state_dict`` to TransferNet keys.

    ``conv1|bn1.* -> stem.*``, ``layer{L}.{j}.* -> blocks.{n}.*`` with n the rank of (L, j),
    ``shortcut.* -> downsample.*`` inside blocks, ``fc|linear.* -> head.*``.

    Raises:
        ValueError: a key that belongs to none of these.
    """
    blocks = sorted({(int(m[1]), int(m[2])) for k in state if (m := _LAYER_KEY.fullmatch(k))})
    rank = {block: n for n, block in enumerate(blocks)}
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if m := _LAYER_KEY.fullmatch(key):
            rest = re.sub(r"^shortcut\.", "downsample.", m[3])
            out[f"blocks.{rank[(int(m[1]), int(m[2]))]}.{rest}"] = value
        elif key.startswith(("conv1.", "bn1.")):
            out[f"stem.{key}"] = value
        elif key.startswith(("fc.", "linear.")):
            out[f"head.{key.split('.', 1)[1]}"] = value
        else:
            raise ValueError(f"unexpected ResNet key {key!r}")
    return out


def _split_robustness(model_state: dict[str, Tensor]) -> tuple[dict[str, Tensor], Stats | None]:
    """The network's own weights and the normaliser's (mean, std), or None if absent."""
    weights: dict[str, Tensor] = {}
    normalizer: dict[str, Tensor] = {}
    for key, value in model_state.items():
        if key.startswith("module.model."):
            weights[key.removeprefix("module.model.")] = value
        elif key.startswith("module.normalizer."):
            normalizer[key.removeprefix("module.normalizer.")] = value
        elif not key.startswith("module.attacker."):  # the attacker's copy is the same network
            raise ValueError(f"unexpected robustness key {key!r}")
    if {"new_mean", "new_std"} <= set(normalizer):
        return weights, (normalizer["new_mean"].flatten().tolist(),
                         normalizer["new_std"].flatten().tolist())  # fmt: skip
    return weights, None


def _from_resnet_state(
    weights: dict[str, Tensor], architecture: str, mean: Sequence[float], std: Sequence[float]
) -> TransferNet:
    state = torchvision_to_transfernet(weights)
    if "head.weight" not in state:
        raise ValueError("no classifier weights (fc.weight / linear.weight)")
    model = build_model(architecture, int(state["head.weight"].shape[0]), mean, std)
    state["normalize.mean"] = model.normalize.mean
    state["normalize.std"] = model.normalize.std
    model.load_state_dict(state, strict=True)
    return model


def _model_from(
    obj: object, path: Path, architecture: str, mean: Sequence[float], std: Sequence[float]
) -> TransferNet:
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        model, _ = read_raysweep(path, obj)
        if model.arch != architecture:
            raise ValueError(f"it holds a {model.arch}, not the {architecture} asked for")
        return model
    if is_robustness_checkpoint(obj):
        weights, stats = _split_robustness(obj["model"])
        return _from_resnet_state(weights, architecture, *(stats or (mean, std)))
    if is_torchvision_state_dict(obj):
        return _from_resnet_state(obj, architecture, mean, std)
    kind = type(obj).__name__
    if isinstance(obj, dict):
        kind = f"dict with keys {sorted(map(str, obj))[:4]}"
    raise ValueError(f"not a raysweep, robustness or torchvision checkpoint: {kind}")


def load_source(
    ref: str,
    architecture: str,
    dataset_mean: Sequence[float],
    dataset_std: Sequence[float],
    data_root: str | Path | None,
) -> TransferNet:
    """The source model behind ``ref`` (a published name or a path) as a ``architecture`` net.

    Input statistics come from the file when it has them (a robustness normaliser, a raysweep
    checkpoint), else from ``dataset_mean``/``dataset_std`` (a bare torchvision state dict:
    pass the source dataset's, ImageNet's for torchvision weights). The head keeps the file's
    number of classes. Returned on CPU, in train mode.

    Raises:
        ValueError: unknown ``architecture`` or published name, or a published model that is
            not a ``architecture`` network.
        FileNotFoundError: see :func:`resolve_checkpoint`.
        CheckpointError: corrupt, foreign or mismatched file (one line).
    """
    if architecture not in architecture_names():
        raise ValueError(
            f"unknown architecture {architecture!r}; valid: {', '.join(architecture_names())}"
        )
    entry = published_model(ref) if is_reference(ref) else None
    if entry is not None and entry.architecture != architecture:
        raise ValueError(f"'{ref}' is a {entry.architecture}, not a {architecture}")
    path = resolve_checkpoint(ref, data_root)
    fix = (
        f"download it again: wget -O {path} '{entry.download_url}'"
        if entry is not None
        else "expected a raysweep, MadryLab robustness or torchvision ResNet checkpoint"
    )
    try:
        obj = load_weights_only(path)
    except Exception as exc:  # torch raises many exception types for a bad file
        raise _unreadable(path, load_error_reason(exc), fix) from exc
    try:
        return _model_from(obj, path, architecture, dataset_mean, dataset_std)
    except CheckpointError:
        raise
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise _unreadable(path, f"{type(exc).__name__}: {first}", fix) from exc


def _unreadable(path: Path, reason: str, fix: str) -> CheckpointError:
    return CheckpointError(f"checkpoint {path} is unreadable ({one_line(reason)}): {fix}")
