"""raysweep's own checkpoint format: plain tensors and builtins, loadable with weights_only.

A checkpoint is ``{"format", "arch", "num_classes", "mean", "std", "state_dict", "meta"}``,
enough to rebuild the :class:`TransferNet` through the architecture registry. The reference
code's checkpoints needed pickle/dill of old library versions; these need nothing but torch.
MadryLab robustness files (dicts with ``model``/``optimizer``/``schedule``/``epoch``) and plain
torchvision state dicts are read by :mod:`raysweep.models.published`, which needs the
architecture and target statistics; ``load_checkpoint`` recognises them so its error says so.

Every file is opened with :func:`load_weights_only`: ``torch.load(weights_only=True)`` with a
small, scoped allowlist of inert data types (see ``SAFE_EXTRA_GLOBALS``) that files written by
old torch/dill versions carry next to their tensors. Nothing else is ever unpickled.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeGuard

import numpy as np
import torch

from raysweep.models.net import TransferNet
from raysweep.models.registry import build_model

try:
    from numpy._core import multiarray as _np_multiarray
except ImportError:  # numpy < 2
    from numpy.core import multiarray as _np_multiarray  # type: ignore[no-redef]

FORMAT = "raysweep/transfernet-v1"
_META_LEAVES = (str, int, float, bool, type(None))
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be turned back into a model."""


def _numpy_data_types() -> list[Any]:
    """numpy scalar/array reconstruction, under numpy 2 names and the numpy 1 names old files use.

    ``weights_only`` refuses these by default (measured: ``np.float64`` in a checkpoint fails
    with "Unsupported global: GLOBAL numpy._core.multiarray.scalar", then on BUILD of
    ``numpy.dtypes.Float64DType``). Each only rebuilds a number or a numeric array from bytes;
    object, string and datetime dtypes stay refused.
    """
    dtype_classes = {type(np.dtype(c)) for c in np.typecodes["All"] if c not in "OSUVMm"}
    found: list[Any] = [np.dtype, np.ndarray, *sorted(dtype_classes, key=lambda t: t.__name__)]
    for name in ("scalar", "_reconstruct"):
        fn = getattr(_np_multiarray, name)
        found += [(fn, f"numpy.core.multiarray.{name}"), (fn, f"numpy._core.multiarray.{name}")]
    return found


# Inert types that files from old torch/dill versions carry in their non-tensor entries
# (numbers as numpy scalars, training arguments as an ``argparse.Namespace``: an attribute bag
# whose attributes are unpickled under the same restrictions). Functions, lambdas and arbitrary
# classes stay refused, so a crafted file cannot run code.
SAFE_EXTRA_GLOBALS: list[Any] = [*_numpy_data_types(), argparse.Namespace]
# How torch's weights-only unpickler names what it refused (a global, or a type to BUILD).
_REFUSED = re.compile(r"Unsupported global: GLOBAL (\S+)|but got <class '([^']+)'>")


def load_weights_only(path: Path) -> Any:
    """``torch.load(path, weights_only=True)`` on CPU with ``SAFE_EXTRA_GLOBALS`` allowed.

    The allowlist is scoped to this call (``safe_globals``), not added process-wide.
    """
    with torch.serialization.safe_globals(SAFE_EXTRA_GLOBALS):
        return torch.load(path, map_location="cpu", weights_only=True)


def load_error_reason(exc: BaseException) -> str:
    """One-line reason for a failed :func:`load_weights_only`, naming a refused global."""
    refused = _REFUSED.search(str(exc))
    if refused:
        name = refused.group(1) or refused.group(2)
        return f"it needs {name}, which is not loaded for safety"
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first}"


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


def one_line(reason: str, limit: int = 160) -> str:
    """``reason`` on one line: torch's messages can be multi-line and carry colour codes."""
    return " ".join(_ANSI.sub("", reason).split())[:limit]


def _unreadable(path: Path, reason: str) -> CheckpointError:
    return CheckpointError(
        f"checkpoint {path} is unreadable ({one_line(reason)}): delete it and rerun to rebuild it"
    )


def read_raysweep(path: Path, obj: dict) -> tuple[TransferNet, dict]:
    """Rebuild a model from an already loaded raysweep checkpoint ``obj`` (read from ``path``)."""
    try:
        model = build_model(obj["arch"], int(obj["num_classes"]), obj["mean"], obj["std"])
        model.load_state_dict(obj["state_dict"], strict=True)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise _unreadable(path, f"{type(exc).__name__}: {str(exc).splitlines()[0]}") from exc
    return model, dict(obj.get("meta", {}))


_READERS: dict[str, Callable[[Path, dict], tuple[TransferNet, dict]]] = {FORMAT: read_raysweep}


def is_robustness_checkpoint(obj: object) -> TypeGuard[dict[str, Any]]:
    """MadryLab robustness layout: ``{"model": {"module.…": tensor}, "epoch": …, …}``."""
    return (
        isinstance(obj, dict)
        and {"model", "epoch"} <= set(obj)
        and isinstance(obj["model"], dict)
        and all(isinstance(k, str) and k.startswith("module.") for k in obj["model"])
    )


def is_torchvision_state_dict(obj: object) -> TypeGuard[dict[str, Any]]:
    """A bare torchvision ResNet ``state_dict``: tensors under ``conv1.weight``, ``layer1.…``."""
    return (
        isinstance(obj, dict)
        and "conv1.weight" in obj
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    )


def _detect_format(obj: object) -> str:
    if isinstance(obj, dict) and obj.get("format") in _READERS:
        return str(obj["format"])
    if is_robustness_checkpoint(obj):
        return "MadryLab robustness checkpoint; read it with raysweep.models.published"
    if is_torchvision_state_dict(obj):
        return "torchvision state_dict; read it with raysweep.models.published"
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
        obj = load_weights_only(path)
    except Exception as exc:  # torch raises many exception types for a bad file
        raise _unreadable(path, load_error_reason(exc)) from exc
    fmt = _detect_format(obj)
    if fmt not in _READERS:
        raise _unreadable(path, fmt)
    return _READERS[fmt](path, obj)
