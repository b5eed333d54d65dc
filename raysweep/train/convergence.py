"""Did a fine-tuning run converge? The rule, from the per-epoch training losses the loop keeps.

The loop already computes, per epoch e = 1..E, the sample-weighted mean training loss L_e
(the running loss of that epoch's minibatches), the training accuracy, the learning rate
lr_e and the number of optimiser steps. From them:

* the **tail** is the last 10 % of the optimiser steps, rounded up to whole epochs:
  k = ⌈E / 10⌉ epochs (every epoch has the same number of steps). Whole epochs, so that both
  windows below average the loss over every training image equally often, and minibatch
  composition is no noise in the comparison;
* A = mean(L_{E−2k+1}, …, L_{E−k}) (the k epochs before the tail), B = mean(L_{E−k+1}, …, L_E)
  (the tail); the **relative change** over the tail is Δ = (A − B) / A (> 0: still falling);
* the **tail's share at the base rate** is ρ = (A − B) · (lr₀ / l̄r) / (L_1 − B), with l̄r the
  mean learning rate over those 2k epochs and lr₀ the base rate: the part of the run's whole
  decrease of the loss (first epoch to tail) that the tail would have brought at lr₀. Scaled
  by lr₀ / l̄r because a step-decay schedule ends at lr₀/100, where the loss of an under-trained
  head barely moves per step though it is far from its optimum (SGD's decrease per step is
  ≈ lr·‖∇L‖²); divided by the whole decrease rather than by A because on separable subsets
  the loss ends near 0, where a relative change is the ratio of two round-off errors.

**Rule:** a run converged iff |ρ| ≤ ``TOLERANCE`` (1 %) — at the base rate its last 10 % of
steps would have moved the training loss by at most 1 % of what the whole run moved it — and
the loss fell at all (L_1 > B). A run of one epoch has no window to compare with and counts
as not converged. The rule measures optimisation, not generalisation: a run that fits its
subset perfectly converged even if it over-fits. (Measured figures: README, "Convergence".)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

#: |ρ| at or below this: converged (see the module docstring).
TOLERANCE = 0.01
#: The share of the optimiser steps the tail covers (rounded up to whole epochs).
TAIL_SHARE = 0.1

#: One epoch of history: (mean training loss, training accuracy %, learning rate, steps).
EpochRecord = tuple[float, float, float, int]


def tail_epochs(epochs: int) -> int:
    """k = ⌈TAIL_SHARE · E⌉: the epochs holding the last 10 % of the steps (at least one)."""
    return max(1, math.ceil(TAIL_SHARE * epochs - 1e-9))


def loss_changes(history: Sequence[EpochRecord], base_lr: float) -> tuple[float, float]:
    """(Δ, ρ) of the module docstring; NaN for both when there are fewer than 2k epochs,
    ρ = NaN when the loss did not fall (L_1 ≤ B)."""
    k = tail_epochs(len(history))
    if len(history) < 2 * k:
        return math.nan, math.nan
    a = sum(rec[0] for rec in history[-2 * k : -k]) / k
    b = sum(rec[0] for rec in history[-k:]) / k
    delta = 0.0 if a == b else (a - b) / a
    mean_lr = sum(rec[2] for rec in history[-2 * k :]) / (2 * k)
    fall = history[0][0] - b
    rho = (a - b) * (base_lr / mean_lr) / fall if fall > 0 else math.nan
    return delta, rho


def converged(rho: float, tolerance: float = TOLERANCE) -> bool:
    """The rule: |ρ| ≤ tolerance (NaN — too short to judge, or no fall at all — is not)."""
    return math.isfinite(rho) and abs(rho) <= tolerance


def convergence_metrics(history: Sequence[EpochRecord], base_lr: float) -> dict[str, float]:
    """The run's convergence record, logged with its final epoch:

    ``train/steps`` (optimiser steps over all epochs), ``train/loss_rel_change`` (Δ),
    ``train/loss_tail_share`` (ρ) and ``train/converged`` (1.0 or 0.0 by the rule).
    The final training loss and accuracy are that epoch's ``train/loss`` and ``train/acc``.
    """
    delta, rho = loss_changes(history, base_lr)
    return {
        "train/steps": float(sum(int(rec[3]) for rec in history)),
        "train/loss_rel_change": delta,
        "train/loss_tail_share": rho,
        "train/converged": float(converged(rho)),
    }
