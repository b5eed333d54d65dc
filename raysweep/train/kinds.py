"""Training kinds: how a batch becomes a loss during (pre)training.

* ``natural``: ``L = CE(f(x), y)``.
* ``pgd`` (Madry et al. 2018; Utrera et al. 2021): ``L = CE(f(x'), y)`` with
  ``x' = PGD_k(x)`` (see :mod:`raysweep.train.attacks`); PGD(1) is ``steps=1``. Parameters
  ``norm``, ``eps``, ``steps``, ``step_size`` (default ``2.5 eps / steps``), ``random_start``.
* ``gaussian`` (Utrera et al., App. A.10): ``L = CE(f(clip(x + δ)), y)`` with ``δ = sigma n``,
  ``n ~ N(0, I)``, clip to [0, 1]; ``sigma`` defaults to 1 as in their source model. With
  ``radius`` r, ``δ = r n / ‖n‖₂``: the Gaussian direction on the ℓ₂ sphere of radius r, the
  robustness library's random start, which is how their model keeps "‖δ‖₂ ≤ 3" (A.10).
* ``trades`` (Zhang et al. 2019):
  ``L = CE(f(x), y) + beta * (1/B) sum_i KL(p(x_i) || p(x'_i))`` with ``x'`` from ``steps``
  steps of ``step_size`` on ``KL(p(x) || p(x'))`` in the ``norm`` ball (default l-inf, sign
  steps) of radius ``eps``, started at ``x + 0.001 N(0, I)``, model in eval mode; defaults
  eps 0.031, steps 10, step_size 0.007, beta 6 (their CIFAR-10 setting).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from raysweep.train.attacks import PGDConfig, default_step_size, eval_mode, perturb, pgd_attack

_DEFAULTS: dict[str, dict[str, Any]] = {
    "natural": {},
    "pgd": {"norm": None, "eps": None, "steps": None, "step_size": None, "random_start": True},
    "gaussian": {"sigma": 1.0, "radius": 0.0},
    "trades": {"norm": "linf", "eps": 0.031, "steps": 10, "step_size": 0.007, "beta": 6.0},
}


@dataclass(frozen=True)
class TrainingKind:
    """A named training objective; ``attack`` is the inner maximisation, if any."""

    name: str
    attack: PGDConfig | None = None
    params: dict[str, Any] = field(default_factory=dict)


def training_kind_names() -> list[str]:
    """Registered training kinds, sorted."""
    return sorted(_DEFAULTS)


def _unpack_attack(name: str, params: dict[str, Any]) -> dict[str, Any]:
    """Accept ``attack=PGDConfig(...)`` as a spelling of the flat attack parameters."""
    attack = params.pop("attack")
    if name not in ("pgd", "trades") or not isinstance(attack, PGDConfig):
        raise ValueError(f"training kind {name!r} takes no attack={attack!r}")
    fields = {"norm", "eps", "steps", "step_size"} | ({"random_start"} if name == "pgd" else set())
    clash = sorted(fields & set(params))
    if clash:
        raise ValueError(f"give either attack= or {clash}, not both")
    return {**params, **{f: getattr(attack, f) for f in fields}}


def _merge(name: str, params: dict[str, Any]) -> dict[str, Any]:
    if params.get("attack") is not None:
        params = _unpack_attack(name, dict(params))
    params = {k: v for k, v in params.items() if k != "attack"}
    defaults = _DEFAULTS[name]
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        valid = ", ".join(defaults) or "none"
        raise ValueError(f"training kind {name!r} got unknown parameters {unknown}; valid: {valid}")
    merged = {**defaults, **params}
    missing = [k for k, v in merged.items() if v is None and k != "step_size"]
    if missing:
        raise ValueError(f"training kind {name!r} needs parameters {missing}")
    return merged


def make_training_kind(name: str, **params: Any) -> TrainingKind:
    """Build a kind from its name and parameters (module docstring lists both).

    The attack of ``pgd``/``trades`` can also be given whole as ``attack=PGDConfig(...)``.

    Raises:
        ValueError: unknown name (the message lists the valid ones), unknown or missing parameter.
    """
    if name not in _DEFAULTS:
        raise ValueError(
            f"unknown training kind {name!r}; valid: {', '.join(training_kind_names())}"
        )
    p = _merge(name, params)
    if name in ("pgd", "trades"):
        if p["step_size"] is None:
            p["step_size"] = default_step_size(float(p["eps"]), int(p["steps"]))
        attack = PGDConfig(
            str(p["norm"]),
            float(p["eps"]),
            int(p["steps"]),
            float(p["step_size"]),
            bool(p.get("random_start", True)),
        )
        return TrainingKind(name, attack, p)
    if name == "gaussian" and (float(p["sigma"]) < 0 or float(p["radius"]) < 0):
        raise ValueError(f"sigma and radius must be >= 0, got {p['sigma']}, {p['radius']}")
    return TrainingKind(name, None, p)


def _trades_loss(
    kind: TrainingKind, model: nn.Module, x: Tensor, y: Tensor, gen: torch.Generator | None
) -> tuple[Tensor, Tensor]:
    """TRADES (module docstring): the attack targets the eval-mode clean distribution p(x)."""
    assert kind.attack is not None
    with eval_mode(model), torch.no_grad():
        p_nat = F.softmax(model(x), dim=1)
    log_p_nat = p_nat.clamp_min(1e-12).log()

    def kl_to_clean(logits: Tensor) -> Tensor:
        return (p_nat * (log_p_nat - F.log_softmax(logits, dim=1))).sum(dim=1)

    noise = torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)
    x_adv = perturb(model, x, kl_to_clean, kind.attack, start=x + 0.001 * noise)
    logits = model(x)
    robust = F.kl_div(
        F.log_softmax(model(x_adv), dim=1), F.softmax(logits, dim=1), reduction="batchmean"
    )
    return F.cross_entropy(logits, y) + float(kind.params["beta"]) * robust, logits


def gaussian_noise(kind: TrainingKind, x: Tensor, generator: torch.Generator | None) -> Tensor:
    """δ of the ``gaussian`` kind: ``sigma·n``, or ``radius·n/‖n‖₂`` per image with a radius."""
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    radius = float(kind.params["radius"])
    if radius > 0:
        norms = noise.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (x.ndim - 1))
        return radius * noise / norms
    return float(kind.params["sigma"]) * noise


def training_loss(
    kind: TrainingKind,
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """``(loss, logits)`` for one batch; logits are those of the inputs the loss trained on.

    For ``trades`` the returned logits are the clean ones (its CE term). ``generator`` drives
    every random draw (attack start, noise) so that training is reproducible.
    """
    if kind.name == "natural":
        logits = model(x)
    elif kind.name == "pgd":
        assert kind.attack is not None
        logits = model(pgd_attack(model, x, y, kind.attack, generator=generator))
    elif kind.name == "gaussian":
        logits = model((x + gaussian_noise(kind, x, generator)).clamp(0.0, 1.0))
    elif kind.name == "trades":
        return _trades_loss(kind, model, x, y, generator)
    else:
        valid = ", ".join(training_kind_names())
        raise ValueError(f"unknown training kind {kind.name!r}; valid: {valid}")
    return F.cross_entropy(logits, y), logits
