"""The convergence rule of raysweep.train.convergence on histories with known answers."""

from __future__ import annotations

import math

import pytest

from raysweep.train.convergence import (
    TOLERANCE,
    convergence_metrics,
    loss_changes,
    tail_epochs,
)


def history(losses: list[float], lrs: list[float], steps: int = 4) -> list:
    return [(loss, 50.0, lr, steps) for loss, lr in zip(losses, lrs, strict=True)]


def test_tail_is_the_last_tenth_of_the_epochs_rounded_up() -> None:
    assert [tail_epochs(e) for e in (1, 2, 10, 11, 20, 100)] == [1, 1, 1, 2, 2, 10]


def test_relative_change_compares_the_tail_with_the_epochs_before_it() -> None:
    # 20 epochs: k = 2, A = mean(L17, L18) = 1.0, B = mean(L19, L20) = 0.9, Δ = 0.1;
    # the run fell from L1 = 2.9 to B = 0.9, so the tail's share is ρ = 0.1 / 2 = 0.05.
    losses = [2.9] + [2.0] * 15 + [1.0, 1.0, 0.9, 0.9]
    delta, rho = loss_changes(history(losses, [0.1] * 20), base_lr=0.1)
    assert delta == pytest.approx(0.1) and rho == pytest.approx(0.05)


def test_a_decayed_rate_does_not_hide_a_falling_loss() -> None:
    """The loss falls 0.005 over the tail at lr₀/100, 1.005 over the run: ρ = 0.5 / 1.005."""
    losses = [2.0] + [1.0] * 17 + [0.995, 0.995]
    record = convergence_metrics(history(losses, [0.1] * 10 + [0.001] * 10), base_lr=0.1)
    assert record["train/loss_rel_change"] == pytest.approx(0.005)
    assert record["train/loss_tail_share"] == pytest.approx(0.5 / 1.005)
    assert record["train/converged"] == 0.0
    assert record["train/steps"] == 80.0


def test_a_plateau_converges_and_a_rising_or_flat_loss_does_not() -> None:
    plateau = [2.0] + [1.0] * 17 + [1.0 - TOLERANCE / 2] * 2
    assert convergence_metrics(history(plateau, [0.1] * 20), 0.1)["train/converged"] == 1.0
    # Near 0 on a separable subset: a 1e-6 wobble is no change (a relative one would be 10 %).
    fitted = [2.0] + [1e-5] * 17 + [1.1e-5] * 2
    assert convergence_metrics(history(fitted, [0.1] * 20), 0.1)["train/converged"] == 1.0
    rising = [2.0] + [1.0] * 17 + [1.5] * 2
    assert convergence_metrics(history(rising, [0.1] * 20), 0.1)["train/converged"] == 0.0
    never_fell = [1.0] * 20
    assert convergence_metrics(history(never_fell, [0.1] * 20), 0.1)["train/converged"] == 0.0


def test_one_epoch_cannot_be_judged() -> None:
    record = convergence_metrics(history([1.0], [0.1]), base_lr=0.1)
    assert math.isnan(record["train/loss_rel_change"]) and record["train/converged"] == 0.0


def test_record_names_are_the_schema_names() -> None:
    """The train layer writes the names the driver tags from and analysis reads."""
    from raysweep.schema import (
        CONVERGED_METRIC,
        LOSS_CHANGE_METRIC,
        STEPS_METRIC,
        TAIL_SHARE_METRIC,
    )

    record = convergence_metrics(history([2.0, 1.0], [0.1, 0.1]), 0.1)
    assert set(record) == {STEPS_METRIC, LOSS_CHANGE_METRIC, TAIL_SHARE_METRIC, CONVERGED_METRIC}
