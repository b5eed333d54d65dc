"""Weight Fisher: variational log-variances (task2vec style) and per-sample diagonal Fisher."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tiny_nets import one_thread, tiny_net  # noqa: F401  (one_thread: autouse fixture)
from torch import nn

from raysweep.measures.fisher import (
    Plateau,
    _Variational,
    diagonal_fisher,
    fisher_start,
    noisy_layers,
    weight_fisher_logvar,
)
from raysweep.models.net import Normalize, TransferNet


def _task_with_dead_filter(
    block_tanh: bool = True,
) -> tuple[TransferNet, torch.Tensor, torch.Tensor]:
    """Filter 0 of the last conv feeds nothing (its head column is zero); labels are the
    model's own predictions, so the weights sit at a good fit."""
    model = tiny_net(block_tanh=block_tanh)
    x = torch.rand(96, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        model.head.weight[:, 0] = 0.0
        model.head.weight *= 5.0
        y = model.eval()(x).argmax(1)
    model.train()
    return model, x, y


def test_fixed_steps_leave_the_model_untouched_and_report_every_filter() -> None:
    model, x, y = _task_with_dead_filter()
    before = {n: p.clone() for n, p in model.state_dict().items()}
    res = weight_fisher_logvar(
        model,
        x,
        y,
        plateau=Plateau(max_steps=120, tolerance=0.0),
        generator=torch.Generator().manual_seed(0),
    )
    assert set(res.layer_logvars) == {"stem.0", "blocks.0.0"}  # head and BN excluded
    assert res.layer_logvars["stem.0"].shape == (4,)
    assert res.layer_logvars["blocks.0.0"].shape == (6,)
    assert res.mean_logvar == pytest.approx(np.concatenate(list(res.layer_logvars.values())).mean())
    assert len(res.loss_curve) == len(res.logvar_curve) == res.steps == 120
    assert all(np.isfinite(res.loss_curve)) and not res.converged  # tolerance 0: fixed steps
    assert np.isfinite(res.final_loss)
    assert res.mean_logvar_change == pytest.approx(res.mean_logvar - res.initial_mean_logvar)
    # The model is untouched: weights, BN statistics, mode and requires_grad.
    for n, p in model.state_dict().items():
        assert torch.equal(p, before[n]), n
    assert model.training and all(p.requires_grad for p in model.parameters())


def test_unused_filter_converges_to_the_prior_scale() -> None:
    """Noise on the dead filter cannot change the loss, so only the prior acts on it and its
    optimum is σ² = λ² (∂/∂σ² of 2KL: n_f/λ² − n_f/σ² = 0). From task2vec's start, 3 nats
    below, it gets there and becomes the largest log-variance. No tanh after the last conv:
    with it, saturating noise on some live filters is harmless too (they climb alike)."""
    model, x, y = _task_with_dead_filter(block_tanh=False)
    res = weight_fisher_logvar(
        model,
        x,
        y,
        plateau=Plateau(max_steps=2000),
        start="weights",
        generator=torch.Generator().manual_seed(0),
    )
    last = res.layer_logvars["blocks.0.0"]
    assert res.converged and res.steps < 2000
    assert last[0] == pytest.approx(res.layer_loglambda2["blocks.0.0"], abs=0.1)
    assert last[0] > last[1:].max() + 1.0
    assert abs(res.mean_logvar_change) > 1.0  # it did move away from the start


def test_fisher_start_puts_the_unused_filter_at_the_prior_and_ends_near_it() -> None:
    """The Laplace start σ_f² = β·n_f/(½ΣF + β·n_f/λ²) is λ² = mean ŵ² for F = 0. From it the
    default plateau stops where 2,000 fixed steps from task2vec's start end up (their mean
    log σ² still wanders by ≈0.03 from window to window at lr 0.1)."""
    model, x, y = _task_with_dead_filter(block_tanh=False)
    start = fisher_start(model, x, beta=1e-7, generator=torch.Generator().manual_seed(3))
    w = model.blocks[0][0].weight.detach()
    assert float(start["blocks.0.0"][0]) == pytest.approx(math.log(w.pow(2).mean()), abs=1e-5)
    assert float(start["blocks.0.0"][1:].max()) < float(start["blocks.0.0"][0]) - 1.0
    fast = weight_fisher_logvar(model, x, y, generator=torch.Generator().manual_seed(0))
    long = weight_fisher_logvar(
        model,
        x,
        y,
        plateau=Plateau(max_steps=2000, tolerance=0.0),
        start="weights",
        generator=torch.Generator().manual_seed(0),
    )
    assert fast.converged and fast.steps <= 400
    assert fast.mean_logvar == pytest.approx(long.mean_logvar, abs=0.1)
    for name, logvar in fast.layer_logvars.items():
        np.testing.assert_allclose(logvar, long.layer_logvars[name], atol=0.35)
    with pytest.raises(ValueError, match="unknown start 'zero'; valid: fisher, weights"):
        weight_fisher_logvar(model, x, y, start="zero")


def test_stronger_prior_means_less_information() -> None:
    model, x, y = _task_with_dead_filter()
    means = [
        weight_fisher_logvar(
            model,
            x,
            y,
            plateau=Plateau(max_steps=60, min_steps=60),
            beta=beta,
            generator=torch.Generator().manual_seed(0),
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


def _linear_net(d: int, m: int, seed: int) -> TransferNet:
    """f(x) = I·(Ŵx): one bias-free linear layer Ŵ [m, d] (the only noisy layer) and an identity
    head, float64; inputs are [N, 1, 1, d] so that the model's Normalize (mean 0, std 1) is a
    no-op."""
    torch.manual_seed(seed)
    layer = nn.Linear(d, m, bias=False)
    with torch.no_grad():
        layer.weight.normal_(0.0, 0.5)
    head = nn.Linear(m, m)
    with torch.no_grad():
        head.weight.copy_(torch.eye(m))
        head.bias.zero_()
    return TransferNet(
        arch="linear",
        normalize=Normalize([0.0], [1.0], channels=1),
        stem=nn.Sequential(nn.Flatten(1), layer),
        blocks=[],
        pool=nn.Identity(),
        head=head,
        input_size=1,
        input_channels=1,
    ).double()


def _half_squared_error(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return 0.5 * (out - target).pow(2).sum(1).mean()


def closed_form_logvar(w: np.ndarray, s: float, beta: float) -> float:
    """The optimal log σ² of ``weight_fisher_logvar`` for one linear layer Ŵ [m, d] (fan d,
    k = m·d weights), identity head, loss ½‖f(x) − y‖² with y = Ŵx, S = mean ‖x‖².

    With w_i ~ N(ŵ_i, σ_i² I) per row, f_i(x) = w_i·x ~ N(ŵ_i·x, σ_i²‖x‖²), so
    E_w[loss] = ½ Σ_i σ_i² S (y = Ŵx leaves no residual). With the layer's 2KL,

        L = ½ S Σσ_i² + β (‖Ŵ‖²/λ² + d Σσ_i²/λ² + k log λ² − d Σ log σ_i² − k).

    ∂L/∂λ² = 0:  λ² = (‖Ŵ‖² + d Σσ_i²)/k;   ∂L/∂σ_i² = 0:  1/σ_i² = c + 1/λ²,  c = S/(2βd).
    L is convex in (log σ², log λ²) after minimising out λ² (a log-sum-exp), so the optimum is
    unique and, by symmetry, all σ_i² are equal: λ² = a + σ², a = ‖Ŵ‖²/k, and
    1/σ² − 1/(a + σ²) = c  ⇔  σ⁴ + aσ² − a/c = 0  ⇔  σ² = (−a + √(a² + 4a/c))/2.
    """
    m, d = w.shape
    a = float((w**2).sum()) / (m * d)
    c = s / (2 * beta * d)
    return math.log((-a + math.sqrt(a * a + 4 * a / c)) / 2)


@pytest.mark.parametrize("beta", [1e-3, 1.0])
def test_linear_gaussian_layer_reaches_the_closed_form_optimum(beta: float) -> None:
    """β = 1: the prior holds σ² up (optimum 3.8 nats above task2vec's start); β = 1e-3: the
    data term pushes it down (2.0 nats below). The whole data set is one batch, so only the
    reparametrisation noise remains. Tolerance 0.02 nats per filter (2 % in σ²); measured
    over three seeds: converged after 250-300 steps, at most 0.008 nats off."""
    d, m = 16, 4
    model = _linear_net(d, m, seed=0)
    x = torch.randn(2048, 1, 1, d, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = model(x)
    res = weight_fisher_logvar(
        model,
        x,
        y,
        batch_size=len(x),
        beta=beta,
        start="weights",  # the Laplace start needs cross-entropy
        loss_fn=_half_squared_error,
        generator=torch.Generator().manual_seed(2),
    )
    w = model.stem[1].weight.detach().numpy()
    expected = closed_form_logvar(w, float(x.pow(2).sum((1, 2, 3)).mean()), beta)
    assert abs(expected - res.initial_mean_logvar) > 1.5  # the start is far from the optimum
    assert res.converged
    np.testing.assert_allclose(res.layer_logvars["stem.1"], expected, atol=0.02)


def test_plateau_needs_both_the_loss_and_the_mean_log_variance_to_settle() -> None:
    rule = Plateau(max_steps=1000, min_steps=150, window=50, tolerance=0.01)
    assert rule.reached(150, [(1.0, -5.0), (1.0, -5.0), (1.0, -5.0)])
    assert not rule.reached(100, [(1.0, -5.0), (1.0, -5.0)])  # before min_steps
    assert not rule.reached(150, [(1.0, -5.0)])  # nothing to compare with
    assert not rule.reached(200, [(1.05, -5.0), (1.0, -5.0)])  # the loss still falls 5 %
    # The loss is flat but the mean log-variance still climbs 0.05 nats per window (filters
    # the task hardly uses: their σ² barely moves the loss), so it has not converged.
    assert not rule.reached(200, [(1.0, -5.05), (1.0, -5.0)])
    assert rule.reached(200, [(1.0, -5.005), (1.0, -5.0)])
    assert not Plateau(tolerance=0.0, min_steps=1).reached(200, [(1.0, -5.0)] * 2)
    with pytest.raises(ValueError, match="tolerance must be >= 0"):
        Plateau(tolerance=-1.0)
    with pytest.raises(ValueError, match="max_steps must be a positive integer"):
        Plateau(max_steps=0)


@pytest.mark.parametrize(
    "module",
    [
        nn.Conv2d(4, 6, 3, stride=2, padding=1, bias=False),
        nn.Conv2d(4, 6, (3, 1), padding=(1, 0), dilation=(2, 1)),
        nn.Conv2d(4, 6, 3, padding=1, groups=2),
        nn.Linear(5, 3),
    ],
)
def test_pre_activation_variance_is_the_conv_of_x_squared_with_sigma_squared(
    module: nn.Module,
) -> None:
    """Var(w·x) = Σ σ² x² over the receptive field: the one-channel box sum used for speed
    equals conv(x², σ²) (and linear(x², σ²)) computed the long way."""
    torch.manual_seed(0)
    inp = torch.randn(2, 4, 7, 7) if isinstance(module, nn.Conv2d) else torch.randn(3, 5)
    logvar = torch.randn(module.weight.shape[0])
    var = _Variational(module, logvar)
    full = logvar.exp().view(-1, *([1] * (module.weight.ndim - 1))).expand_as(module.weight)
    if isinstance(module, nn.Conv2d):
        m = module
        expected = F.conv2d(inp.pow(2), full, None, m.stride, m.padding, m.dilation, m.groups)
    else:
        expected = F.linear(inp.pow(2), full)
    torch.testing.assert_close(var.variance(inp), expected, rtol=1e-5, atol=1e-6)
