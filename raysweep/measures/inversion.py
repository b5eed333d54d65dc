"""Representation inversion, variational inversion and effective images (Terzi et al. 2021).

Inversion (Def. 0.1; Ilyas et al. / Engstrom et al. 2019 with the robustness library):
find x' whose penultimate representation matches a target z = f_w(x),

    x̂ = argmin_{x' ∈ [0,1]^d} L_inv(x') = ‖f_w(x') − z‖₂ / ‖z‖₂,

from x'₀ = 0.5 + σ·N(0, I) by ℓ₂-normalised gradient steps x' ← clamp(x' − η ∇/‖∇‖, 0, 1)
(robustness library: σ = 1/20, η = 1, 10,000 steps). Terzi et al.'s variants perturb the
weights with the "effective" noise n ~ N(0, Σ*), Σ* = β F⁻¹ (Def. 0.6): once before optimising
("variational" inversion, App. D Alg. 1) or afresh at every step (effective images, Alg. 2).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call
from torchvision.utils import make_grid

from raysweep.measures._util import check_positive_int, frozen, l2_normalised
from raysweep.models.net import TransferNet

FeatureFn = Callable[[Tensor], Tensor]


class _Features(nn.Module):
    """``net.features`` as a module's forward, so ``functional_call`` can swap its weights."""

    def __init__(self, net: TransferNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        return self.net.features(x)


def inversion_loss(features: Tensor, target: Tensor) -> Tensor:
    """Per-image L_inv = ‖f(x') − z‖₂ / ‖z‖₂ (robustness library's inversion loss)."""
    return (features - target).flatten(1).norm(dim=1) / target.flatten(1).norm(dim=1).clamp_min(
        1e-12
    )


def _start(
    model: TransferNet,
    n: int,
    start_sigma: float,
    generator: torch.Generator | None,
    image_shape: Sequence[int] | None,
) -> Tensor:
    shape = tuple(image_shape or (model.input_channels, model.input_size, model.input_size))
    p = next(model.parameters())
    noise = torch.randn((n, *shape), generator=generator, dtype=p.dtype)
    return (0.5 + start_sigma * noise).clamp(0.0, 1.0).to(p.device)


def _descend(
    feature_fn: FeatureFn, target: Tensor, x: Tensor, steps: int, step_size: float
) -> tuple[Tensor, list[float]]:
    """ℓ₂-normalised gradient descent on L_inv; curve[t] = mean L_inv at iterate t (t ≤ steps)."""
    curve: list[float] = []
    for _ in range(steps):
        x = x.detach().requires_grad_(True)
        loss = inversion_loss(feature_fn(x), target)
        curve.append(float(loss.detach().mean()))
        (g,) = torch.autograd.grad(loss.sum(), x)
        x = (x.detach() - step_size * l2_normalised(g)).clamp_(0.0, 1.0)
    with torch.no_grad():
        curve.append(float(inversion_loss(feature_fn(x), target).mean()))
    return x.detach(), curve


def _check(steps: int, step_size: float, start_sigma: float) -> None:
    check_positive_int("steps", steps)
    if step_size <= 0 or start_sigma < 0:
        raise ValueError(f"need step_size > 0 and start_sigma >= 0, got {step_size}, {start_sigma}")


def _run(
    model: TransferNet,
    target_features: Tensor,
    make_feature_fn: Callable[[], FeatureFn],
    steps: int,
    step_size: float,
    start_sigma: float,
    generator: torch.Generator | None,
    image_shape: Sequence[int] | None,
) -> tuple[Tensor, list[float]]:
    """The one optimisation all three inversions share: check the settings, freeze the model,
    draw x'₀ and descend on L_inv with the features ``make_feature_fn()`` returns.

    ``make_feature_fn`` is called after x'₀ is drawn so that a shared ``generator`` gives the
    start noise first and any weight noise after it (seeded results are reproducible)."""
    _check(steps, step_size, start_sigma)
    with frozen(model):
        x0 = _start(model, target_features.shape[0], start_sigma, generator, image_shape)
        return _descend(make_feature_fn(), target_features.detach(), x0, steps, step_size)


def invert(
    model: TransferNet,
    target_features: Tensor,
    *,
    steps: int = 10_000,
    step_size: float = 1.0,
    start_sigma: float = 0.05,
    generator: torch.Generator | None = None,
    image_shape: Sequence[int] | None = None,
) -> tuple[Tensor, list[float]]:
    """Deterministic inversion (Terzi et al. Def. 0.1, Eq. 3); see the module docstring.

    ``target_features`` z [B, D] (e.g. ``model.features(x)``). Returns the images [B, C, H, W]
    in [0, 1] and the loss curve (mean L_inv at each of the steps + 1 iterates).
    """
    args = (steps, step_size, start_sigma, generator, image_shape)
    return _run(model, target_features, lambda: model.features, *args)


def fisher_noise_variances(
    fisher_diag: dict[str, Tensor], beta: float, damping: float = 1e-8
) -> dict[str, Tensor]:
    """Diagonal Σ* = β (F + damping)⁻¹ per parameter (Terzi et al. Def. 0.6) from
    :func:`raysweep.measures.fisher.diagonal_fisher`. ``damping`` bounds the noise on weights
    the data never moves (F = 0); Terzi's prior N(0, λ²I) plays that role (β/(2λ²))."""
    if beta <= 0 or damping <= 0:
        raise ValueError(f"need beta > 0 and damping > 0, got {beta}, {damping}")
    return {n: beta / (f.double() + damping) for n, f in fisher_diag.items()}


def logvar_noise_variances(
    model: TransferNet, layer_logvars: dict[str, np.ndarray]
) -> dict[str, Tensor]:
    """Per-weight variances from per-filter log-variances (``WeightFisher.layer_logvars``):
    the variational posterior variance *is* the optimal Σ* of Terzi et al. Eq. 6."""
    modules = dict(model.named_modules())
    out: dict[str, Tensor] = {}
    for name, logvar in layer_logvars.items():
        w = modules[name].weight
        var = torch.as_tensor(np.exp(logvar), dtype=torch.float64)
        out[f"{name}.weight"] = var.view(-1, *([1] * (w.ndim - 1))).expand_as(w)
    return out


def _noisy_params(
    model: TransferNet, variances: dict[str, Tensor], generator: torch.Generator | None
) -> dict[str, Tensor]:
    """{"net.<name>": w + n} with n ~ N(0, diag variances), for ``functional_call``."""
    params = dict(model.named_parameters())
    unknown = sorted(set(variances) - set(params))
    if unknown:
        raise ValueError(f"variances name unknown parameters: {', '.join(unknown[:5])}")
    noisy = {}
    for name, var in variances.items():
        w = params[name].detach()
        n = torch.randn(w.shape, generator=generator, dtype=torch.float64) * var.cpu().sqrt()
        noisy[f"net.{name}"] = w + n.to(dtype=w.dtype, device=w.device)
    return noisy


def _noisy_features(
    model: TransferNet,
    variances: dict[str, Tensor],
    generator: torch.Generator | None,
    resample: bool,
) -> FeatureFn:
    """x ↦ f_{w+n}(x): n drawn now and kept (Alg. 1), or drawn afresh per call (Alg. 2)."""
    wrapped = _Features(model)
    if resample:
        return lambda x: functional_call(wrapped, _noisy_params(model, variances, generator), (x,))
    noisy = _noisy_params(model, variances, generator)
    return lambda x: functional_call(wrapped, noisy, (x,))


def variational_invert(
    model: TransferNet,
    target_features: Tensor,
    variances: dict[str, Tensor],
    *,
    steps: int = 1_000,
    step_size: float = 1.0,
    start_sigma: float = 0.05,
    generator: torch.Generator | None = None,
    image_shape: Sequence[int] | None = None,
) -> tuple[Tensor, list[float]]:
    """Variational inversion (Terzi et al. App. D, Alg. 1): draw n̄ ~ N(0, Σ*) ONCE, then
    minimise ‖f_{w+n̄}(x') − z‖/‖z‖ with z = f_w(x) from the unperturbed network.

    ``variances`` maps parameter names to Σ* (shape of the parameter; see
    :func:`fisher_noise_variances`, :func:`logvar_noise_variances`); parameters not named are
    left exact. The model itself is not modified. Terzi et al. report convergence in ≈200
    steps instead of ≈8k for the deterministic inversion.
    """
    args = (steps, step_size, start_sigma, generator, image_shape)
    return _run(
        model, target_features, lambda: _noisy_features(model, variances, generator, False), *args
    )


def effective_images(
    model: TransferNet,
    target_features: Tensor,
    variances: dict[str, Tensor],
    *,
    steps: int = 1_000,
    step_size: float = 1.0,
    start_sigma: float = 0.05,
    generator: torch.Generator | None = None,
    image_shape: Sequence[int] | None = None,
) -> tuple[Tensor, list[float]]:
    """Effective images (Terzi et al. Def. 0.7, App. D Alg. 2): a NEW n_k ~ N(0, Σ*) at every
    step k, x'_{k+1} = x'_k − η ∇ₓ‖f_{w+n_k}(x'_k) − z‖ (ℓ₂-normalised, clamped), so only what
    survives the weight noise the classifier "effectively" uses gets reconstructed.

    Follows Alg. 2 (noise on the reconstruction side, z = f_w(x) fixed); Def. 0.7 writes the
    noise on the target side instead. The loss curve is measured under each step's noise.
    """
    args = (steps, step_size, start_sigma, generator, image_shape)
    return _run(
        model, target_features, lambda: _noisy_features(model, variances, generator, True), *args
    )


def image_grid(images: Tensor, nrow: int = 8, padding: int = 2) -> np.ndarray:
    """uint8 [H, W, 3] mosaic of float images [B, C, H, W] in [0, 1], ``nrow`` per row
    (grey-scale repeated to RGB), for logging as an artifact."""
    check_positive_int("nrow", nrow)
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must be [B, 1 or 3, H, W], got {tuple(images.shape)}")
    imgs = images.detach().float().cpu().clamp(0.0, 1.0)
    if imgs.shape[1] == 1:
        imgs = imgs.expand(-1, 3, -1, -1)
    grid = make_grid(imgs, nrow=nrow, padding=padding, pad_value=1.0)
    return (grid.permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8)
