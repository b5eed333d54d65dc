"""What every probe runner shares: its context (model, data, seed, output folder), deterministic
image subsets, loss-curve sampling and artifact writers (PNG, JSON, NumPy).

Kept apart from :mod:`raysweep.probes.run` (dispatch) so that the runners in
:mod:`raysweep.probes.information` and :mod:`raysweep.probes.images` import no dispatch code.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from raysweep.data import ArrayDataset, cached_dataset, draw_images, to_model_input
from raysweep.measures._util import batched_features
from raysweep.measures.inversion import image_grid
from raysweep.models.net import TransferNet

# Loss curves are logged as at most ~100 points (plus the last), whatever the step count.
CURVE_POINTS = 100
# Grids of 32 px images are too small to look at; nearest-neighbour upscale to >= this side.
MIN_TILE_PIXELS = 96


@dataclass
class ProbeOutput:
    """What a runner returns; ``as_dict`` is the JSON-able form :func:`run_probe` hands back."""

    metrics: dict[str, float] = field(default_factory=dict)
    series: dict[str, list[list[float]]] = field(default_factory=dict)
    artifacts: list[Path] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "metrics": {k: float(v) for k, v in self.metrics.items()},
            "series": {k: [[int(s), float(v)] for s, v in pts] for k, pts in self.series.items()},
            "artifacts": [str(p) for p in self.artifacts],
        }


@dataclass
class ProbeContext:
    """Everything a runner needs; ``params`` are validated and complete (defaults filled)."""

    model: TransferNet
    source: dict[str, Any]
    target: str | None
    params: dict[str, Any]
    out_dir: Path
    seed: int
    data_root: str | None
    download: bool

    def indices(self, dataset: str, split: str, size: int) -> np.ndarray:
        """Indices of :meth:`subset` into the full split (see :func:`draw_images`)."""
        full = cached_dataset(dataset, split, self.data_root, self.download)
        return draw_images(full.labels, size, self.seed, full.info.num_classes, dataset)

    def subset(self, dataset: str, split: str, size: int) -> ArrayDataset:
        """``size`` images of ``dataset``/``split`` (all if fewer), deterministic in the seed."""
        full = cached_dataset(dataset, split, self.data_root, self.download)
        idx = torch.as_tensor(self.indices(dataset, split, size))
        return ArrayDataset(full.images[idx], full.labels[idx], full.info)

    def source_test(self, size: int) -> tuple[Tensor, Tensor]:
        """(model input float [n, C, S, S] in [0, 1], labels [n]) from the source's TEST split."""
        ds = self.subset(self.source["dataset"], "test", size)
        return self.model_input(ds.images), ds.labels

    def model_input(self, images: Tensor) -> Tensor:
        """uint8 images at native size -> float [0, 1] at the model's size and channels."""
        return to_model_input(images, self.model.input_size, self.model.input_channels)

    def features(self, x: Tensor) -> Tensor:
        """Penultimate features of model input ``x`` (eval mode, no autograd)."""
        return batched_features(self.model, x)

    def generator(self, stream: int = 0) -> torch.Generator:
        """A CPU generator seeded from (seed, stream): independent draws per use, reproducible."""
        return torch.Generator().manual_seed(self.seed * 1_000_003 + stream)

    def path(self, name: str) -> Path:
        return self.out_dir / name


def sample_curve(curve: list[float], points: int = CURVE_POINTS) -> list[list[float]]:
    """[[step, value], ...] every ``max(1, len // points)`` steps, always ending at the last."""
    every = max(1, len(curve) // points)
    steps = list(range(0, len(curve), every))
    if steps[-1] != len(curve) - 1:
        steps.append(len(curve) - 1)
    return [[t, float(curve[t])] for t in steps]


def write_json(path: Path, obj: Any) -> Path:
    """JSON with NaN/inf written as null (strict JSON readers reject NaN)."""
    path.write_text(json.dumps(_json_safe(obj), indent=1, sort_keys=True))
    return path


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _json_safe(obj.tolist())
    if isinstance(obj, np.generic):
        return _json_safe(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_grid(path: Path, images: Tensor, nrow: int) -> Path:
    """PNG mosaic of float images [B, C, H, W] in [0, 1], ``nrow`` per row (see image_grid),
    upscaled by an integer factor (nearest neighbour) so small tiles stay visible."""
    grid = image_grid(images, nrow=nrow)
    scale = max(1, math.ceil(MIN_TILE_PIXELS / images.shape[-1]))
    if scale > 1:
        grid = grid.repeat(scale, axis=0).repeat(scale, axis=1)
    Image.fromarray(grid).save(path, format="PNG")
    return path


def training_label(source: dict[str, Any]) -> str:
    """ε and kind of the source's training, e.g. ``"1 (pgd, l2)"``, ``"0 (natural)"``: the key
    :func:`raysweep.measures.tsne.plot_tsne` titles a panel with (``"ε = <key>"``)."""
    training = source.get("training") or {}
    kind = training.get("kind", "natural")
    attack = training.get("attack")
    if attack:
        return f"{attack['eps']:g} ({kind}, {attack['norm']})"
    if training.get("sigma") is not None:
        return f"0 ({kind}, σ = {training['sigma']:g})"
    return f"0 ({kind})"
