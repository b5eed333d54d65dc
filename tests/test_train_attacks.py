"""PGD attacks: ball constraints, exact optima on a linear model, modes and gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from raysweep.models import build_model
from raysweep.train.attacks import PGDConfig, default_step_size, objective_loss, pgd_attack


class Logistic(nn.Module):
    """Binary logistic model with logits ``[0, w.x + b]``; records its mode at each forward."""

    def __init__(self, w: Tensor, b: float = 0.0) -> None:
        super().__init__()
        self.w = nn.Parameter(w.clone())
        self.b = nn.Parameter(torch.tensor(b))
        self.seen_training: list[bool] = []

    def forward(self, x: Tensor) -> Tensor:
        self.seen_training.append(self.training)
        z = x.flatten(1) @ self.w.flatten() + self.b
        return torch.stack([torch.zeros_like(z), z], dim=1)


@pytest.fixture()
def linear_setup() -> tuple[Logistic, Tensor, Tensor]:
    g = torch.Generator().manual_seed(0)
    w = torch.randn(3, 4, 4, generator=g)
    x = 0.5 + 0.05 * (torch.rand(6, 3, 4, 4, generator=g) - 0.5)
    y = torch.tensor([0, 1, 0, 1, 1, 0])
    return Logistic(w), x, y


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_perturbation_stays_in_ball_and_box(norm: str) -> None:
    torch.manual_seed(0)
    model = build_model("small_cnn", 10, [0.5], [0.25]).eval()
    x = torch.rand(8, 3, 16, 16)
    x[:2] = torch.randint(0, 2, (2, 3, 16, 16)).float()  # pixels at the box edges
    y = torch.randint(0, 10, (8,))
    eps = 0.5 if norm == "l2" else 8 / 255
    cfg = PGDConfig(norm, eps, 5, default_step_size(eps, 5))
    x_adv = pgd_attack(model, x, y, cfg, generator=torch.Generator().manual_seed(1))
    delta = (x_adv - x).flatten(1)
    size = delta.norm(dim=1) if norm == "l2" else delta.abs().amax(dim=1)
    assert float(size.max()) <= eps + 1e-6
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
    assert float(size.max()) > 0.5 * eps  # the attack actually moved
    with torch.no_grad():
        clean = F.cross_entropy(model(x), y)
        adv = F.cross_entropy(model(x_adv), y)
    assert float(adv) > float(clean)


@pytest.mark.parametrize("objective", ["ce", "cw"])
def test_l2_reaches_the_analytic_optimum(linear_setup: tuple, objective: str) -> None:
    model, x, y = linear_setup
    eps = 0.1
    cfg = PGDConfig("l2", eps, 20, eps / 2)
    x_adv = pgd_attack(model, x, y, cfg, objective, generator=torch.Generator().manual_seed(3))
    w_hat = model.w.detach() / model.w.detach().norm()
    sign = torch.where(y == 1, -1.0, 1.0).view(-1, 1, 1, 1)  # label 1: push w.x down
    expected = sign * eps * w_hat
    err = (x_adv - x - expected).flatten(1).norm(dim=1) / eps
    assert float(err.max()) < 0.01


def test_linf_reaches_the_analytic_optimum_and_loss_grows(linear_setup: tuple) -> None:
    model, x, y = linear_setup
    eps = 0.02
    cfg = PGDConfig("linf", eps, 10, default_step_size(eps, 10))
    x_adv = pgd_attack(model, x, y, cfg, generator=torch.Generator().manual_seed(4))
    sign = torch.where(y == 1, -1.0, 1.0).view(-1, 1, 1, 1)
    expected = sign * eps * model.w.detach().sign()
    torch.testing.assert_close(x_adv - x, expected, atol=1e-6, rtol=0)
    with torch.no_grad():
        clean = objective_loss("ce", model(x), y)
        adv = objective_loss("ce", model(x_adv), y)
    assert bool((adv > clean).all())


def test_linf_steps_are_signs(linear_setup: tuple) -> None:
    model, x, y = linear_setup
    cfg = PGDConfig("linf", 0.03, 1, 0.01, random_start=False)
    step = pgd_attack(model, x, y, cfg) - x
    torch.testing.assert_close(step.abs(), torch.full_like(step, 0.01), atol=1e-6, rtol=0)


def test_random_start_only_when_asked(linear_setup: tuple) -> None:
    model, x, y = linear_setup
    no_steps = PGDConfig("l2", 0.1, 0, 0.0)
    start = pgd_attack(model, x, y, no_steps, generator=torch.Generator().manual_seed(0))
    norms = (start - x).flatten(1).norm(dim=1)
    torch.testing.assert_close(norms, torch.full_like(norms, 0.1), atol=1e-5, rtol=0)
    fixed = PGDConfig("l2", 0.1, 0, 0.0, random_start=False)
    assert torch.equal(pgd_attack(model, x, y, fixed), x)


def test_modes_restored_eval_during_attack_and_no_param_grads() -> None:
    torch.manual_seed(0)
    model = build_model("small_cnn", 10, [0.5], [0.25]).train()
    model.stem.bn1.eval()  # a mixed state, as during fine-tuning
    before = {name: m.training for name, m in model.named_modules()}
    seen: list[bool] = []
    model.blocks[0].register_forward_hook(lambda m, i, o: seen.append(m.training))
    x, y = torch.rand(4, 3, 16, 16), torch.randint(0, 10, (4,))
    pgd_attack(model, x, y, PGDConfig("linf", 0.03, 3, 0.01))
    assert seen == [False, False, False]
    assert {name: m.training for name, m in model.named_modules()} == before
    assert all(p.grad is None for p in model.parameters())


def test_config_validation_and_step_size() -> None:
    assert default_step_size(3.0, 20) == pytest.approx(0.375)
    assert default_step_size(1.0, 4, c=2.0) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="l2, linf"):
        PGDConfig("l1", 1.0, 1, 1.0)
    with pytest.raises(ValueError, match="ce, cw"):
        pgd_attack(nn.Linear(2, 2), torch.rand(1, 2), torch.tensor([0]),
                   PGDConfig("l2", 1.0, 1, 1.0), "hinge")  # fmt: skip


def test_cw_margin_value() -> None:
    logits = torch.tensor([[1.0, 3.0, 2.0], [5.0, 0.0, 1.0]])
    y = torch.tensor([1, 2])
    torch.testing.assert_close(objective_loss("cw", logits, y), torch.tensor([-1.0, 4.0]))
