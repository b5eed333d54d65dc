"""What every probe runner shares: its context (model, data, seed, output folder), deterministic
image subsets, loss-curve sampling, the weight-Fisher stopping rule and artifact writers (PNG,
JSON, NumPy).

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
from raysweep.measures.fisher import Plateau, WeightFisher
from raysweep.measures.inversion import image_grid
from raysweep.models.net import TransferNet

# Loss curves are logged as at most ~100 points (plus the last), whatever the step count.
CURVE_POINTS = 100
# Grids of 32 px images are too small to look at; nearest-neighbour upscale to >= this side.
MIN_TILE_PIXELS = 96
# The weight-Fisher plateau is checked every this many steps, on the parameters averaged over
# them: enough steps that Adam's jitter averages out (≈0.2 nats per small_cnn layer at lr 0.1)
# and few enough that a ~60 s probe (≈0.13 s a step) gets several checks.
FISHER_WINDOW = 50


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
    #: Per-subset probes (linear_probe): the grid cell's subset size (None: all images) and the
    #: fine-tuning recipe's input normalisation ("source" or "target" statistics).
    subset_size: int | None = None
    normalization: str = "source"

    def indices(self, dataset: str, split: str, size: int) -> np.ndarray:
        """Indices of :meth:`subset` into the full split (see :func:`draw_images`)."""
        full = cached_dataset(dataset, split, self.data_root, self.download)
        return draw_images(full.labels, size, self.seed, full.info.num_classes, dataset)

    def subset(self, dataset: str, split: str, size: int) -> ArrayDataset:
        """``size`` images of ``dataset``/``split`` (all if fewer), deterministic in the seed."""
        full = cached_dataset(dataset, split, self.data_root, self.download)
        idx = torch.as_tensor(self.indices(dataset, split, size))
        return ArrayDataset(full.images[idx], full.labels[idx], full.info)

    def per_class_subset(self, dataset: str, split: str, per_class: int) -> ArrayDataset:
        """Up to ``per_class`` images of every class of ``dataset``/``split`` (all of a class
        that has fewer), deterministic in the seed (:func:`draw_per_class`)."""
        full = cached_dataset(dataset, split, self.data_root, self.download)
        idx = torch.as_tensor(draw_per_class(full.labels, per_class, self.seed))
        return ArrayDataset(full.images[idx], full.labels[idx], full.info)

    def class_counts(self, dataset: str, split: str) -> np.ndarray:
        """Images per class in the whole ``dataset``/``split`` (int64 [num_classes])."""
        full = cached_dataset(dataset, split, self.data_root, self.download)
        return np.bincount(full.labels.numpy(), minlength=full.info.num_classes)

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


def draw_per_class(labels: Tensor | np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """Sorted indices of min(``per_class``, n_k) images of every class k present in ``labels``.

    With ``perm = Generator(PCG64(seed)).permutation(N)``, class k contributes its first
    ``per_class`` indices in ``perm`` order: a uniform draw within each class, a function of
    (labels, per_class, seed) only, nested in ``per_class`` for a fixed seed.
    """
    if isinstance(per_class, bool) or int(per_class) != per_class or per_class < 1:
        raise ValueError(f"per_class must be a positive integer, got {per_class!r}")
    y = np.asarray(labels.cpu() if isinstance(labels, Tensor) else labels).reshape(-1)
    perm = np.random.Generator(np.random.PCG64(seed)).permutation(y.size)
    # A stable sort by label keeps perm order within each class: rank = position in the class.
    order = perm[np.argsort(y[perm], kind="stable")]
    starts = np.searchsorted(y[order], y[order], side="left")
    rank = np.arange(y.size) - starts
    return np.sort(order[rank < per_class]).astype(np.int64)


def sample_curve(curve: list[float], points: int = CURVE_POINTS) -> list[list[float]]:
    """[[step, value], ...] every ``max(1, len // points)`` steps, always ending at the last."""
    every = max(1, len(curve) // points)
    steps = list(range(0, len(curve), every))
    if steps[-1] != len(curve) - 1:
        steps.append(len(curve) - 1)
    return [[t, float(curve[t])] for t in steps]


def fisher_plateau(params: dict, prefix: str = "") -> Plateau:
    """The :class:`~raysweep.measures.fisher.Plateau` of a probe's ``<prefix>min_steps``,
    ``<prefix>max_steps`` and ``<prefix>tolerance`` (window: ``FISHER_WINDOW`` steps)."""
    max_steps = params[f"{prefix}max_steps"]
    return Plateau(
        max_steps=max_steps,
        # A min_steps above max_steps would only be capped by it: take the smaller.
        min_steps=min(params[f"{prefix}min_steps"], max_steps),
        window=FISHER_WINDOW,
        tolerance=params[f"{prefix}tolerance"],
    )


def fisher_summary(wf: WeightFisher) -> dict[str, float]:
    """Mean log σ² (absolute and change from its start), steps taken, convergence (0/1) and the
    final objective (on the fixed evaluation batch) of a weight-Fisher optimisation."""
    return {
        "mean_logvar": wf.mean_logvar,
        "mean_logvar_change": wf.mean_logvar_change,
        "steps": float(wf.steps),
        "converged": float(wf.converged),
        "final_loss": wf.final_loss,
    }


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
