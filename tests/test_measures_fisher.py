"""Weight Fisher: variational log-variances (task2vec style) and per-sample diagonal Fisher."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tiny_nets import one_thread, tiny_net  # noqa: F401  (one_thread: autouse fixture)
from torch import nn

from raysweep.measures.fisher import diagonal_fisher, noisy_layers, weight_fisher_logvar
from raysweep.models.net import TransferNet


def _task_with_dead_filter() -> tuple[TransferNet, torch.Tensor, torch.Tensor]:
    """Filter 0 of the last conv feeds nothing (its head column is zero); labels are the
    model's own predictions, so the weights sit at a good fit."""
    model = tiny_net()
    x = torch.rand(96, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        model.head.weight[:, 0] = 0.0
        model.head.weight *= 5.0
        y = model.eval()(x).argmax(1)
    model.train()
    return model, x, y


def test_unused_filter_gets_the_largest_log_variance() -> None:
    model, x, y = _task_with_dead_filter()
    before = {n: p.clone() for n, p in model.state_dict().items()}
    res = weight_fisher_logvar(
        model, x, y, steps=200, batch_size=32, generator=torch.Generator().manual_seed(0)
    )
    assert set(res.layer_logvars) == {"stem.0", "blocks.0.0"}  # head and BN excluded
    assert res.layer_logvars["stem.0"].shape == (4,)
    last = res.layer_logvars["blocks.0.0"]
    assert last.shape == (6,)
    # Noise on the dead filter cannot hurt the loss: only the weak prior term acts on it.
    assert last[0] > last[1:].max() + 1.0
    assert res.mean_logvar == pytest.approx(
        np.concatenate([res.layer_logvars["stem.0"], last]).mean()
    )
    assert len(res.loss_curve) == 200 and all(np.isfinite(res.loss_curve))
    # The model is untouched: weights, BN statistics, mode and requires_grad.
    for n, p in model.state_dict().items():
        assert torch.equal(p, before[n]), n
    assert model.training and all(p.requires_grad for p in model.parameters())


def test_stronger_prior_means_less_information() -> None:
    model, x, y = _task_with_dead_filter()
    means = [
        weight_fisher_logvar(
            model, x, y, steps=60, beta=beta, generator=torch.Generator().manual_seed(0)
        ).mean_logvar
        for beta in (1e-7, 1e-2)
    ]
    assert means[1] > means[0] + 0.1


def test_noisy_layers_skip_head() -> None:
    model = tiny_net()
    assert list(noisy_layers(model)) == ["stem.0", "blocks.0.0"]


def _brute_force_fisher(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict:
    acc = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    model.eval()
    for xi, yi in zip(x, y, strict=True):
        model.zero_grad()
        F.cross_entropy(model(xi[None]), yi[None]).backward()
        for n, p in model.named_parameters():
            acc[n] += p.grad**2
    return {n: a / len(x) for n, a in acc.items()}


def test_diagonal_fisher_equals_brute_force_loop() -> None:
    model = tiny_net().double()
    x = torch.rand(10, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 0])
    fast = diagonal_fisher(model, x, y, chunk_size=4)
    slow = _brute_force_fisher(model, x, y)
    assert set(fast) == set(slow)
    for n in slow:
        torch.testing.assert_close(fast[n], slow[n], rtol=1e-9, atol=1e-14)


def test_per_sample_fisher_is_batch_size_times_squared_mean_gradient() -> None:
    """With labels drawn from the model the score has zero mean, so E[(mean gradient)²] =
    F/B: squaring the batch-mean gradient underestimates the Fisher by the batch size B.
    Averaged over 40 label draws the ratio lands within a few tens of percent of B."""
    model = tiny_net().double().eval()
    b, draws = 32, 40
    x = torch.rand(b, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(4)
    fisher_total = 0.0
    for _ in range(draws):
        fisher = diagonal_fisher(model, x, None, generator=g)
        fisher_total += sum(float(f.sum()) for f in fisher.values())
    with torch.no_grad():
        probs = F.softmax(model(x), dim=1)
    mean_sq_total = 0.0
    for _ in range(draws):
        y = torch.multinomial(probs, 1, generator=g).view(-1)
        model.zero_grad()
        F.cross_entropy(model(x), y).backward()
        mean_sq_total += sum(float((p.grad**2).sum()) for p in model.parameters())
    assert 0.7 * b < fisher_total / mean_sq_total < 1.4 * b


def test_sampled_labels_come_from_the_generator() -> None:
    model = tiny_net().double().eval()
    x = torch.rand(16, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        probs = F.softmax(model(x), dim=1)
    y = torch.multinomial(probs, 1, generator=torch.Generator().manual_seed(6)).view(-1)
    given = diagonal_fisher(model, x, y)
    sampled = diagonal_fisher(model, x, None, generator=torch.Generator().manual_seed(6))
    for n in given:
        torch.testing.assert_close(sampled[n], given[n])
