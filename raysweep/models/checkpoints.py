"""raysweep's own checkpoint format: plain tensors and builtins, loadable with weights_only.

A checkpoint is ``{"format", "arch", "num_classes", "mean", "std", "state_dict", "meta"}``,
enough to rebuild the :class:`TransferNet` through the architecture registry. The reference
code's checkpoints needed pickle/dill of old library versions; these need nothing but torch.
Foreign formats (MadryLab robustness dicts with ``model``/``optimizer``/``epoch``) get their own
reader in ``_READERS`` later; they are recognised here so the error says what they are.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from raysweep.models.net import TransferNet
from raysweep.models.registry import build_model

FORMAT = "raysweep/transfernet-v1"
_META_LEAVES = (str, int, float, bool, type(None))
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be turned back into a model."""


def _check_meta(value: Any, where: str = "meta") -> None:
    """Reject anything ``torch.load(weights_only=True)`` could not read back."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{where} keys must be strings, got {key!r}")
            _check_meta(item, f"{where}[{key!r}]")
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _check_meta(item, f"{where}[{i}]")
    elif not isinstance(value, _META_LEAVES):
        raise ValueError(f"{where} is a {type(value).__name__}; only builtins are allowed")


def save_checkpoint(path: Path, model: TransferNet, meta: dict) -> None:
    """Write ``model`` and ``meta`` to ``path`` atomically (temporary file + ``os.replace``).

    A reader never sees a half-written file, even if the writer is killed mid-save.
    """
    _check_meta(meta)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "arch": model.arch,
        "num_classes": model.head.out_features,
        "mean": model.normalize.mean.flatten().tolist(),
        "std": model.normalize.std.flatten().tolist(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "meta": meta,
    }
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            torch.save(payload, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _unreadable(path: Path, reason: str) -> CheckpointError:
    # torch's messages can be multi-line and carry terminal colour codes.
    reason = " ".join(_ANSI.sub("", reason).split())[:160]
    return CheckpointError(
        f"checkpoint {path} is unreadable ({reason}): delete it and rerun to rebuild it"
    )


def _read_raysweep(path: Path, obj: dict) -> tuple[TransferNet, dict]:
    try:
        model = build_model(obj["arch"], int(obj["num_classes"]), obj["mean"], obj["std"])
        model.load_state_dict(obj["state_dict"], strict=True)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise _unreadable(path, f"{type(exc).__name__}: {str(exc).splitlines()[0]}") from exc
    return model, dict(obj.get("meta", {}))


_READERS: dict[str, Callable[[Path, dict], tuple[TransferNet, dict]]] = {FORMAT: _read_raysweep}


def _detect_format(obj: object) -> str:
    if isinstance(obj, dict) and obj.get("format") in _READERS:
        return str(obj["format"])
    if isinstance(obj, dict) and {"model", "epoch"} <= set(obj):
        return "MadryLab robustness checkpoint, not supported yet"
    return f"not a raysweep checkpoint: {type(obj).__name__}"


def load_checkpoint(path: Path) -> tuple[TransferNet, dict]:
    """Rebuild the model saved at ``path`` (on CPU) and return it with its ``meta``.

    Raises:
        FileNotFoundError: no file at ``path``.
        CheckpointError: truncated, corrupt or foreign file; the one-line message says to
            delete it and rerun.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many exception types for a bad file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise _unreadable(path, f"{type(exc).__name__}: {first}") from exc
    fmt = _detect_format(obj)
    if fmt not in _READERS:
        raise _unreadable(path, fmt)
    return _READERS[fmt](path, obj)
