"""Dataset distance by the Earth Mover's Distance between class-mean features.

Cui et al. (CVPR 2018, "Large scale fine-grained categorization and domain-specific transfer
learning") measure how far a target dataset is from a source: every class is a point (the mean
penultimate feature of its images, under a network trained on the source) carrying mass equal to
its share of the images, and the distance is the cost of the optimal transport between the two
point clouds with Euclidean ground cost. Terzi et al. (AAAI 2021, Fig. 3 and 7) plot the
robust-minus-standard transfer accuracy gap against this distance.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import ot
import torch
from torch import Tensor

from raysweep.data.info import ArrayDataset
from raysweep.data.transforms import to_model_input
from raysweep.measures._util import check_positive_int, frozen
from raysweep.models.net import TransferNet

Prepare = Callable[[Tensor], Tensor]

# ot.emd2's default of 100,000 network-simplex iterations can stop short for 1,000 classes
# (ImageNet); a truncated solve would silently return a too-large cost.
_EMD_MAX_ITER = 10_000_000


def class_mean_features(
    model: TransferNet,
    images_uint8: Tensor,
    labels: Tensor,
    num_classes: int,
    *,
    prepare: Prepare,
    batch_size: int = 256,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-class mean penultimate feature and class weight (Cui et al. 2018, §4.1).

    With f the model's penultimate representation (``model.features``, eval mode) and
    I_k the images of class k::

        means[k]   = (1 / |I_k|) Σ_{x ∈ I_k} f(prepare(x))        float64 [K, D]
        weights[k] = |I_k| / Σ_j |I_j|                              float64 [K]

    A class without images gets weight 0 and a zero mean (it carries no mass in the EMD).
    """
    check_positive_int("num_classes", num_classes)
    check_positive_int("batch_size", batch_size)
    labels = torch.as_tensor(labels, dtype=torch.int64).cpu()
    if labels.shape != (images_uint8.shape[0],) or labels.numel() == 0:
        raise ValueError(
            f"need one label per image, got {tuple(labels.shape)} for "
            f"{images_uint8.shape[0]} images"
        )
    if int(labels.min()) < 0 or int(labels.max()) >= num_classes:
        raise ValueError(
            f"labels must lie in [0, {num_classes}), got [{int(labels.min())}, {int(labels.max())}]"
        )
    device = next(model.parameters()).device
    sums: Tensor | None = None
    with frozen(model), torch.no_grad():
        for idx in torch.arange(labels.numel()).split(batch_size):
            feats = model.features(prepare(images_uint8[idx]).to(device)).double().cpu()
            if sums is None:
                sums = torch.zeros(num_classes, feats.shape[1], dtype=torch.float64)
            sums.index_add_(0, labels[idx], feats)
    assert sums is not None
    counts = torch.bincount(labels, minlength=num_classes).double()
    means = sums / counts.clamp_min(1.0).unsqueeze(1)
    return means.numpy(), (counts / counts.sum()).numpy()


def emd_distance(
    means_a: np.ndarray, w_a: np.ndarray, means_b: np.ndarray, w_b: np.ndarray
) -> float:
    """Earth Mover's Distance between two weighted point sets (Cui et al. 2018, Eq. 1).

    d(A, B) = min_{T ≥ 0} Σ_ij T_ij ‖a_i − b_j‖₂  s.t.  Σ_j T_ij = w_a[i],  Σ_i T_ij = w_b[j],

    solved exactly by ``ot.emd2`` in float64. The ground cost is the plain Euclidean distance,
    not POT's default squared one. Weights are normalised to sum to 1 first.
    """
    a = np.asarray(means_a, dtype=np.float64)
    b = np.asarray(means_b, dtype=np.float64)
    wa = _normalised_weights(w_a, a.shape[0], "w_a")
    wb = _normalised_weights(w_b, b.shape[0], "w_b")
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"means must be [K, D] with equal D, got {a.shape} and {b.shape}")
    cost = ot.dist(a, b, metric="euclidean")
    return float(ot.emd2(wa, wb, cost, numItermax=_EMD_MAX_ITER))


def _normalised_weights(w: np.ndarray, k: int, name: str) -> np.ndarray:
    arr = np.asarray(w, dtype=np.float64).reshape(-1)
    if arr.shape != (k,) or bool((arr < 0).any()) or not arr.sum() > 0:
        raise ValueError(f"{name} must be {k} non-negative weights with a positive sum")
    return arr / arr.sum()


def domain_similarity(d: float, gamma: float = 0.01) -> float:
    """Domain similarity exp(−γ·d) of Cui et al. (2018), γ = 0.01 (their ImageNet→CUB:
    d = 57.53, similarity 0.563)."""
    if d < 0 or gamma <= 0:
        raise ValueError(f"need d >= 0 and gamma > 0, got d={d}, gamma={gamma}")
    return math.exp(-gamma * d)


def dataset_distance(
    model: TransferNet, ds_a: ArrayDataset, ds_b: ArrayDataset, *, batch_size: int = 256
) -> float:
    """EMD between the class-mean features of two datasets under one (source) model.

    d = emd_distance(class_mean_features(model, A), class_mean_features(model, B)), with
    images resized and channel-matched to the model's input by ``to_model_input`` (the same
    path fine-tuning uses). Pass subsets for large datasets: the cost is one forward pass per
    image.
    """

    def prepare(batch: Tensor) -> Tensor:
        return to_model_input(batch, model.input_size, model.input_channels)

    ma, wa = class_mean_features(
        model,
        ds_a.images,
        ds_a.labels,
        ds_a.info.num_classes,
        prepare=prepare,
        batch_size=batch_size,
    )
    mb, wb = class_mean_features(
        model,
        ds_b.images,
        ds_b.labels,
        ds_b.info.num_classes,
        prepare=prepare,
        batch_size=batch_size,
    )
    return emd_distance(ma, wa, mb, wb)
