"""Training kinds and the pretraining loop on tiny synthetic problems."""

from __future__ import annotations

import copy
import re

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from raysweep.models import build_model
from raysweep.train import (
    OptimConfig,
    PGDConfig,
    ScheduleConfig,
    default_step_size,
    evaluate,
    make_training_kind,
    pretrain,
    training_kind_names,
    training_loss,
)


def prepare(xb: Tensor) -> Tensor:
    return xb.float() / 255


def toy(n: int, seed: int) -> tuple[Tensor, Tensor]:
    """4 classes = 4 fixed random 8x8 templates at +-0.2 around grey, plus noise 0.15."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 4, (n,), generator=g)
    templates = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(99))
    img = 0.5 + 0.4 * (templates[y] - 0.5) + 0.15 * torch.randn(n, 3, 8, 8, generator=g)
    return (img.clamp(0, 1) * 255).round().to(torch.uint8), y


def test_registry_and_parameters() -> None:
    assert training_kind_names() == ["gaussian", "natural", "pgd", "trades"]
    with pytest.raises(ValueError, match="unknown training kind 'fgsm'; valid: gaussian, natural"):
        make_training_kind("fgsm")
    pgd = make_training_kind("pgd", norm="l2", eps=3.0, steps=20)
    assert pgd.attack == PGDConfig("l2", 3.0, 20, 0.375, True)
    one = make_training_kind("pgd", norm="l2", eps=3.0, steps=1, step_size=6.0, random_start=False)
    assert one.attack == PGDConfig("l2", 3.0, 1, 6.0, False)  # Utrera's PGD(1) source
    trades = make_training_kind("trades")
    assert (
        trades.attack == PGDConfig("linf", 0.031, 10, 0.007, True) and trades.params["beta"] == 6.0
    )
    assert make_training_kind("gaussian").params == {"sigma": 1.0, "radius": 0.0}
    whole = PGDConfig("linf", 4 / 255, 20, 1 / 255, True)
    assert make_training_kind("pgd", attack=whole).attack == whole
    l2_trades = make_training_kind("trades", attack=PGDConfig("l2", 0.5, 5, 0.2), beta=1.0)
    assert l2_trades.attack == PGDConfig("l2", 0.5, 5, 0.2) and l2_trades.params["beta"] == 1.0
    assert make_training_kind("natural", attack=None).attack is None
    with pytest.raises(ValueError, match="either attack= or \\['eps'\\]"):
        make_training_kind("pgd", attack=whole, eps=1.0)
    with pytest.raises(ValueError, match="'gaussian' takes no attack="):
        make_training_kind("gaussian", attack=whole)
    with pytest.raises(ValueError, match=r"needs parameters \['norm', 'eps'\]"):
        make_training_kind("pgd", steps=3)
    with pytest.raises(ValueError, match="unknown parameters \\['eps'\\]; valid: none"):
        make_training_kind("natural", eps=1.0)


def test_losses_of_each_kind() -> None:
    torch.manual_seed(0)
    base = build_model("small_cnn", 4, [0.5], [0.25]).train()
    x, y = toy(16, 0)
    x = prepare(x)

    def loss_of(name: str, **params: float) -> tuple[Tensor, Tensor]:
        # A fresh copy each time: train-mode forwards move the BN running statistics,
        # which the eval-mode attacks then see.
        model = copy.deepcopy(base)
        gen = torch.Generator().manual_seed(5)
        loss, logits = training_loss(make_training_kind(name, **params), model, x, y, generator=gen)
        assert all(m.training for m in model.modules())
        return loss.detach(), logits.detach()

    natural, logits = loss_of("natural")
    torch.testing.assert_close(natural, F.cross_entropy(logits, y))
    adv, _ = loss_of("pgd", norm="linf", eps=8 / 255, steps=3)
    assert float(adv) > float(natural)
    assert float(loss_of("pgd", norm="linf", eps=8 / 255, steps=3)[0]) == float(adv)  # seeded
    trades, clean_logits = loss_of("trades", beta=6.0)
    torch.testing.assert_close(clean_logits, logits)
    assert float(trades) > float(natural)  # CE(clean) + a positive KL term
    noiseless, _ = loss_of("gaussian", sigma=0.0)
    torch.testing.assert_close(noiseless, natural)
    noisy, _ = loss_of("gaussian", sigma=0.5)
    assert float(noisy) != float(natural)


def _pretrain(kind_name: str, epochs: int, **params: float) -> tuple[list[dict[str, float]], float]:
    torch.manual_seed(0)
    model = build_model("small_cnn", 4, [0.5], [0.25])
    x, y = toy(512, 1)
    tx, ty = toy(256, 2)
    before = evaluate(model, tx, ty, prepare=prepare)
    history: list[dict[str, float]] = []
    eps = 0.08
    pretrain(
        model, x, y, tx, ty, kind=make_training_kind(kind_name, **params),
        optim=OptimConfig(lr=0.05, batch_size=64), schedule=ScheduleConfig(epochs, (epochs - 1,)),
        prepare=prepare, augment=None, seed=0,
        eval_attacks=(PGDConfig("linf", eps, 5, default_step_size(eps, 5)),),
        on_epoch=lambda e, m: history.append({"epoch": e, **m}),
    )  # fmt: skip
    return history, before


def test_natural_pretraining_learns_and_reports_metrics() -> None:
    history, before = _pretrain("natural", 3)
    assert [h["epoch"] for h in history] == [1, 2, 3]
    last = history[-1]
    assert set(last) == {"epoch", "train/loss", "train/acc", "train/lr", "train/weight_norm",
                         "test/acc", "adv/acc"}  # fmt: skip
    assert before < 50.0 and last["test/acc"] > 95.0  # 4 classes; untrained ≈ chance
    assert history[0]["train/loss"] > last["train/loss"]
    assert [h["train/lr"] for h in history] == pytest.approx([0.05, 0.05, 0.005])
    assert last["train/weight_norm"] > 0 and last["adv/acc"] < last["test/acc"]


def test_pgd_training_is_more_robust_than_natural() -> None:
    natural, _ = _pretrain("natural", 4)
    robust, _ = _pretrain("pgd", 4, norm="linf", eps=0.08, steps=3)
    assert robust[-1]["adv/acc"] > natural[-1]["adv/acc"] + 30.0
    assert robust[-1]["test/acc"] > 80.0


def test_non_finite_loss_stops_pretraining() -> None:
    model = build_model("small_cnn", 4, [0.5], [0.25])
    x, y = toy(64, 0)
    calls = {"n": 0}

    def poisoned(xb: Tensor) -> Tensor:
        calls["n"] += len(xb) == 32  # two training batches per epoch
        return prepare(xb) * (float("inf") if calls["n"] > 4 else 1.0)

    expected = "non-finite training loss at epoch 3 (lr 0.1): lower the learning rate"
    with pytest.raises(FloatingPointError, match=re.escape(expected)):
        pretrain(
            model, x, y, x[:8], y[:8], kind=make_training_kind("natural"),
            optim=OptimConfig(lr=0.1, batch_size=32), schedule=ScheduleConfig(5),
            prepare=poisoned, augment=None, seed=0,
        )  # fmt: skip


def test_gaussian_noise_on_the_sphere_of_its_radius() -> None:
    """Utrera et al.'s Gaussian source (A.10): a N(0, I) direction at ‖δ‖₂ = 3."""
    from raysweep.train.kinds import gaussian_noise

    x = torch.rand(8, 3, 16, 16)
    gen = torch.Generator().manual_seed(0)
    on_sphere = gaussian_noise(make_training_kind("gaussian", radius=3.0), x, gen)
    assert torch.allclose(on_sphere.flatten(1).norm(dim=1), torch.full((8,), 3.0), atol=1e-4)
    plain = gaussian_noise(make_training_kind("gaussian", sigma=0.5), x, gen)
    assert 0.45 < float(plain.std()) < 0.55  # σ·N(0, I): no rescaling
    with pytest.raises(ValueError, match="sigma and radius must be >= 0"):
        make_training_kind("gaussian", radius=-1.0)
