"""Feature visualisation by maximising one penultimate coordinate (Engstrom et al. 2019,
"Learning perceptually-aligned representations via adversarial robustness"; Utrera et al.
2021, App. A.1 and Fig. 1b: seeds are out-of-distribution images)."""

from __future__ import annotations

import torch
from torch import Tensor

from raysweep.measures._util import check_positive_int, frozen, l2_normalised
from raysweep.models.net import TransferNet


def visualize_feature(
    model: TransferNet,
    seeds: Tensor,
    coordinate: int,
    *,
    steps: int = 200,
    step_size: float = 1.0,
) -> tuple[Tensor, list[float]]:
    """Gradient ascent on one coordinate c of the penultimate representation:

        x_{k+1} = clamp(x_k + η ∇ₓ f_c(x_k) / ‖∇ₓ f_c(x_k)‖₂, 0, 1),   x_0 = seed ∈ [0, 1]

    (the robustness library's ℓ₂-normalised step; Engstrom et al. use η = 1 from noise/OOD
    seeds). Returns the images and the mean f_c over the batch at each of the steps + 1 iterates.
    """
    check_positive_int("steps", steps)
    if step_size <= 0:
        raise ValueError(f"step_size must be positive, got {step_size}")
    curve: list[float] = []
    with frozen(model):
        dim = model.head.in_features
        if not 0 <= coordinate < dim:
            raise ValueError(f"coordinate must lie in [0, {dim}), got {coordinate}")
        x = seeds.detach().clamp(0.0, 1.0)
        for _ in range(steps):
            x = x.requires_grad_(True)
            act = model.features(x)[:, coordinate]
            curve.append(float(act.detach().mean()))
            (g,) = torch.autograd.grad(act.sum(), x)
            x = (x.detach() + step_size * l2_normalised(g)).clamp_(0.0, 1.0)
        with torch.no_grad():
            curve.append(float(model.features(x)[:, coordinate].mean()))
    return x.detach(), curve
