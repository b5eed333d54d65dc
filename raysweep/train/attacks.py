"""Projected gradient attacks in [0, 1] pixel space, following the MadryLab robustness library.

PGD(k) (Madry et al. 2018; Utrera et al. 2021, App. A.2) maximises a per-sample loss L over
the ball ``B = {x' : ||x' - x||_p <= eps} ∩ [0, 1]^d`` with ``k`` steps

    x'_{t+1} = Proj_B( x'_t + alpha * s(grad_x' L(f(x'_t), y)) )

* ``linf``: ``s(g) = sign(g)``; Proj clips ``x' - x`` to ``[-eps, eps]`` then ``x'`` to [0, 1];
  random start ``x + U[-eps, eps]`` (clamped).
* ``l2``: ``s(g) = g / ||g||_2`` per sample; Proj rescales ``x' - x`` to norm ``<= eps`` then
  clamps to [0, 1]; random start ``x + eps * n / ||n||_2``, ``n ~ N(0, I)`` (on the sphere).

Objectives: ``"ce"`` = cross-entropy; ``"cw"`` = Carlini-Wagner margin ``max_{j != y} z_j - z_y``.
The final iterate is returned (the robustness library can instead keep the best iterate).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from raysweep.train.names import NORMS

OBJECTIVES: tuple[str, ...] = ("ce", "cw")
_TINY = 1e-12

# Per-sample loss of the model's logits that the attack maximises.
SampleLoss = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class PGDConfig:
    """``steps`` steps of size ``step_size`` inside the ``norm`` ball of radius ``eps``,
    maximising ``objective`` (``"ce"`` or the Carlini–Wagner margin ``"cw"``)."""

    norm: str
    eps: float
    steps: int
    step_size: float
    random_start: bool = True
    objective: str = "ce"

    def __post_init__(self) -> None:
        if self.norm not in NORMS:
            raise ValueError(f"unknown attack norm {self.norm!r}; valid: {', '.join(NORMS)}")
        if self.eps < 0 or self.step_size < 0 or self.steps < 0:
            raise ValueError(f"eps, step_size and steps must be >= 0, got {self}")
        if self.objective not in OBJECTIVES:
            valid = ", ".join(OBJECTIVES)
            raise ValueError(f"unknown attack objective {self.objective!r}; valid: {valid}")

    @property
    def metric(self) -> str:
        """The accuracy metric this attack is logged as: ``adv/acc`` (cross-entropy PGD) or
        ``adv/acc_cw`` (the CW margin, the CCKL paper's second attack, Table 1)."""
        return "adv/acc" if self.objective == "ce" else f"adv/acc_{self.objective}"


def default_step_size(eps: float, steps: int, c: float = 2.5) -> float:
    """``alpha = c * eps / steps`` (Utrera et al., App. A.2: 1.5 < c < 4 reaches the boundary)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    return c * eps / steps


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Evaluate ``model`` inside the block, then restore every submodule's own mode.

    Restoring module by module matters: during fine-tuning frozen BatchNorms are in eval mode
    while the rest trains, and ``model.train(was_training)`` would flip them back to train.
    """
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


def _per_sample_norm(t: Tensor) -> Tensor:
    return t.flatten(1).norm(dim=1).view(-1, *([1] * (t.dim() - 1)))


def _project(x_adv: Tensor, x: Tensor, cfg: PGDConfig) -> Tensor:
    delta = x_adv - x
    if cfg.norm == "linf":
        delta = delta.clamp(-cfg.eps, cfg.eps)
    else:
        delta = delta * (cfg.eps / (_per_sample_norm(delta) + _TINY)).clamp(max=1.0)
    return (x + delta).clamp(0.0, 1.0)


def _step(x_adv: Tensor, grad: Tensor, cfg: PGDConfig) -> Tensor:
    if cfg.norm == "linf":
        return x_adv + cfg.step_size * grad.sign()
    return x_adv + cfg.step_size * grad / (_per_sample_norm(grad) + _TINY)


def _random_start(x: Tensor, cfg: PGDConfig, generator: torch.Generator | None) -> Tensor:
    if cfg.norm == "linf":
        u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return (x + (2.0 * u - 1.0) * cfg.eps).clamp(0.0, 1.0)
    n = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return (x + cfg.eps * n / (_per_sample_norm(n) + _TINY)).clamp(0.0, 1.0)


def perturb(
    model: nn.Module,
    x: Tensor,
    loss: SampleLoss,
    cfg: PGDConfig,
    *,
    start: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Maximise ``loss(model(x'))`` over the ball (module docstring); model in eval mode.

    ``start`` overrides the initial point (TRADES starts at ``x + 0.001 N(0, 1)``). Only the
    gradient w.r.t. ``x'`` is taken (``torch.autograd.grad``), so no parameter ``.grad`` moves.
    """
    x = x.detach()
    if start is not None:
        x_adv = _project(start.detach(), x, cfg)
    elif cfg.random_start and cfg.eps > 0:
        x_adv = _random_start(x, cfg, generator)
    else:
        x_adv = x.clone()
    with eval_mode(model), torch.enable_grad():
        for _ in range(cfg.steps):
            x_adv.requires_grad_(True)
            (grad,) = torch.autograd.grad(loss(model(x_adv)).sum(), x_adv)
            x_adv = _project(_step(x_adv.detach(), grad, cfg), x, cfg)
    return x_adv.detach()


def objective_loss(objective: str, logits: Tensor, y: Tensor) -> Tensor:
    """Per-sample attack objective: ``"ce"`` or the CW margin ``max_{j!=y} z_j - z_y``."""
    if objective == "ce":
        return F.cross_entropy(logits, y, reduction="none")
    if objective == "cw":
        true = logits.gather(1, y[:, None]).squeeze(1)
        others = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf"))
        return others.amax(dim=1) - true
    raise ValueError(f"unknown attack objective {objective!r}; valid: {', '.join(OBJECTIVES)}")


def pgd_attack(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    cfg: PGDConfig,
    objective: str | None = None,
    *,
    generator: torch.Generator | None = None,
) -> Tensor:
    """PGD adversarial examples for ``(x, y)``; ``x`` in [0, 1], result in the ball ∩ [0, 1].

    ``objective`` overrides ``cfg.objective``. The CW objective is the margin alone: inside a
    fixed ε-ball the distance term of Carlini & Wagner's formulation is what the ball replaces,
    so its weight c (the CCKL paper's c = 5e2) does not change the PGD iterates (sign steps
    for ℓ∞, normalised steps for ℓ₂ are scale-free). The model is in eval mode during the
    attack and every submodule's mode is restored after; ``generator`` drives the random start
    (global RNG if None).
    """
    objective = objective or cfg.objective
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown attack objective {objective!r}; valid: {', '.join(OBJECTIVES)}")
    return perturb(
        model, x, lambda logits: objective_loss(objective, logits, y), cfg, generator=generator
    )
