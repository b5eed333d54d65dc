"""Input Fisher, CCKL and G1/G2 (CCKL paper) against brute-force d×d computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.special import rel_entr
from tiny_nets import one_thread, tiny_net  # noqa: F401  (one_thread: autouse fixture)
from torch import nn

from raysweep.measures.input_fisher import (
    PERTURBATIONS,
    adversarial_perturbation,
    cckl_matrix,
    cckl_pairs,
    class_gradients,
    fisher_stats_from_gradients,
    g1_g2,
    input_fisher_stats,
    kl_g1_vs_eps,
    random_perturbation,
    relative_error_vs_eps,
)
from raysweep.models.net import TransferNet


def _net(seed: int = 0, classes: int = 5) -> TransferNet:
    net = tiny_net(seed, classes=classes)
    with torch.no_grad():
        net.head.weight *= 4.0  # confident enough that the Fisher is not negligible
    return net.double()


def _x(n: int, seed: int) -> torch.Tensor:
    return torch.rand(
        n, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)
    )


def _brute_force_fisher(model: nn.Module, xi: torch.Tensor) -> torch.Tensor:
    """F_x = Σ_j p_j g_j g_jᵀ as a d×d matrix, one autograd pass per class."""
    model.eval()
    x = xi[None].clone().requires_grad_(True)
    logp = F.log_softmax(model(x), dim=1)[0]
    grads = [torch.autograd.grad(logp[j], x, retain_graph=True)[0].flatten() for j in range(5)]
    p = logp.detach().exp()
    return sum(p[j] * torch.outer(grads[j], grads[j]) for j in range(5))


def test_gram_formulas_equal_the_full_d_by_d_fisher() -> None:
    model, x = _net(), _x(3, 1)
    stats = input_fisher_stats(model, x, chunk_size=2)
    for b in range(3):
        fx = _brute_force_fisher(model, x[b])
        assert fx.shape == (192, 192)
        fro = float(torch.linalg.matrix_norm(fx))
        lam = float(torch.linalg.eigvalsh(fx)[-1])
        assert fro > 1e-4
        assert abs(stats["fnorm"][b] - fro) / fro < 1e-5
        assert abs(stats["lambda_max"][b] - lam) / lam < 1e-5
        assert abs(stats["trace"][b] - float(fx.trace())) / float(fx.trace()) < 1e-5
    assert np.all(stats["lambda_max"] <= stats["fnorm"] * (1 + 1e-9))


def test_class_gradients_match_autograd_and_sum_to_zero() -> None:
    model, x = _net(), _x(4, 2)
    g, p = class_gradients(model, x, chunk_size=3)
    assert g.shape == (4, 5, 192) and p.shape == (4, 5)
    model.eval()
    xi = x[1:2].clone().requires_grad_(True)
    logp = F.log_softmax(model(xi), dim=1)[0]
    g3 = torch.autograd.grad(logp[3], xi)[0].flatten()
    torch.testing.assert_close(g[1, 3], g3)
    weighted = (p.unsqueeze(2) * g).sum(1)  # Σ_j p_j ∇ log p_j = ∇ Σ_j p_j = 0
    assert float(weighted.abs().max()) < 1e-12 * float(g.abs().max()) + 1e-15


def test_stats_from_hand_gradients() -> None:
    # One image, K = 2, d = 2: G rows e1 and -e1, p = (0.5, 0.5) -> F = diag(1, 0).
    g = torch.tensor([[[1.0, 0.0], [-1.0, 0.0]]])
    stats = fisher_stats_from_gradients(g, torch.tensor([[0.5, 0.5]]))
    assert stats["fnorm"][0] == pytest.approx(1.0)
    assert stats["trace"][0] == pytest.approx(1.0)
    assert stats["lambda_max"][0] == pytest.approx(1.0)


def test_cckl_matrix_equals_direct_kl() -> None:
    logits = torch.randn(4, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    kl = cckl_matrix(logits).numpy()
    p = F.softmax(logits, dim=1).numpy()
    for i in range(4):
        for j in range(4):
            assert kl[i, j] == pytest.approx(rel_entr(p[i], p[j]).sum(), abs=1e-12)
    assert np.allclose(np.diag(kl), 0.0)


def test_cckl_pairs_use_only_different_labels() -> None:
    model, x = _net(), _x(6, 4)
    y = torch.tensor([0, 0, 1, 1, 1, 2])
    res = cckl_pairs(model, x, y)
    assert len(res.kl) == 36 - (4 + 9 + 1)
    assert np.all(y.numpy()[res.i] != y.numpy()[res.j])
    model.eval()
    with torch.no_grad():
        full = cckl_matrix(model(x)).numpy()
    assert res.cckl == pytest.approx(full[res.i, res.j].mean())


def test_g1_is_half_quadratic_form_and_g2_the_remainder() -> None:
    model, xi, xj = _net(), _x(2, 5), _x(2, 6)
    out = g1_g2(model, xi, xj)
    model.eval()
    for b in range(2):
        delta = (xj[b] - xi[b]).flatten()
        fx = _brute_force_fisher(model, xi[b])
        assert out["g1"][b] == pytest.approx(0.5 * float(delta @ fx @ delta), rel=1e-8)
        with torch.no_grad():
            p, q = F.softmax(model(xi[b : b + 1]), 1)[0], F.softmax(model(xj[b : b + 1]), 1)[0]
        assert out["kl"][b] == pytest.approx(rel_entr(p.numpy(), q.numpy()).sum(), rel=1e-8)
    np.testing.assert_allclose(out["g2"], out["kl"] - out["g1"])


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_relative_error_vanishes_as_eps_shrinks_and_grows_with_eps(norm: str) -> None:
    model, x = _net(), _x(4, 7)
    # ℓ∞ at ε moves all 192 pixels by ε: ‖η‖₂ ≈ 14ε. Below ‖η‖₂ ≈ 1e-4 the KL (≈ ‖η‖²) drowns
    # in float64 round-off, so the sweep starts at 1e-3.
    scale = 1.0 if norm == "l2" else 1.0 / 16
    eps = [scale * e for e in (1e-3, 1e-2, 1e-1, 1.0)]
    err = relative_error_vs_eps(
        model, x, eps, norm, perturbation="random", generator=torch.Generator().manual_seed(8)
    )
    values = [err[e] for e in eps]
    assert values[0] < 1e-3  # G1 / KL -> 1
    assert all(a < b for a, b in zip(values, values[1:], strict=False))
    assert values[-1] > 10 * values[0]


def test_random_perturbation_has_the_requested_norm() -> None:
    g = torch.Generator().manual_seed(9)
    l2 = random_perturbation((3, 3, 4, 4), 0.5, "l2", g)
    linf = random_perturbation((3, 3, 4, 4), 0.5, "linf", g)
    torch.testing.assert_close(l2.flatten(1).norm(dim=1), torch.full((3,), 0.5))
    assert torch.all(linf.abs() == 0.5)
    with pytest.raises(ValueError, match="l2, linf"):
        random_perturbation((1, 3), 0.1, "l1")


def test_works_on_float32_relu_cnn() -> None:
    from raysweep.models.registry import build_model

    model = build_model("small_cnn", 10, [0.5], [0.25])
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(10))
    stats = input_fisher_stats(model, x)
    assert stats["fnorm"].shape == (2,) and np.all(stats["fnorm"] > 0)
    out = g1_g2(model, x[:1], x[1:])
    assert np.isfinite(out["g2"]).all()
    assert model.training


def _interior(n: int, seed: int) -> torch.Tensor:
    """Images in [0.25, 0.75]: no pixel reaches the [0, 1] clamp for ε up to 0.25 (ℓ∞)."""
    return 0.25 + 0.5 * _x(n, seed)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_adversarial_eta_beats_a_random_one_inside_the_ball(norm: str) -> None:
    """η maximises KL(f(x)‖f(x+η)) over the ε-ball: at every ε its KL is at least that of a
    random η of the same size (per image, not only in the mean), and it never leaves the ball
    or [0, 1]. Per image: 10 PGD steps are not the exact maximiser, but a random direction is
    far from it (for ℓ∞ a random corner gets ≈ ε² tr F, the maximiser ≈ ε² Σ|F_ij|)."""
    model, x = _net(), _interior(6, 11)
    scale = 1.0 if norm == "l2" else 1.0 / 8  # ‖η‖₂ of an ℓ∞ corner is 8ε for d = 192
    eps = [scale * e for e in (0.01, 0.1, 0.5)]
    g = torch.Generator().manual_seed(12)
    adv = kl_g1_vs_eps(model, x, eps, norm, perturbation="adversarial", generator=g)
    rnd = kl_g1_vs_eps(model, x, eps, norm, perturbation="random", generator=g)
    for e in eps:
        assert np.all(adv[e]["kl"] >= rnd[e]["kl"]), (e, adv[e]["kl"], rnd[e]["kl"])
        assert np.all(adv[e]["norm"] <= e * (1 + 1e-9))
        assert np.all(adv[e]["norm"] >= 0.5 * e)  # it uses the ball, not only its centre
        np.testing.assert_allclose(rnd[e]["norm"], e, rtol=1e-9)


def test_adversarial_eta_stays_in_the_unit_box_and_ball() -> None:
    model, x = _net(), _x(5, 13)  # pixels anywhere in [0, 1]: the clamp is active
    for norm, eps in (("linf", 0.2), ("l2", 2.0)):
        eta = adversarial_perturbation(
            model, x, eps, norm, generator=torch.Generator().manual_seed(14)
        )
        assert eta.shape == x.shape and eta.dtype == x.dtype
        assert float((x + eta).min()) >= 0.0 and float((x + eta).max()) <= 1.0
        size = eta.flatten(1).abs().amax(1) if norm == "linf" else eta.flatten(1).norm(dim=1)
        assert float(size.max()) <= eps * (1 + 1e-9)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_adversarial_relative_error_vanishes_as_eps_shrinks(norm: str) -> None:
    """KL − G1 = O(ε³) along any η of size ε, so |KL − G1|/KL = O(ε) → 0, also for the η that
    maximises the KL (CCKL paper Table 2: 0.058 at 1/255 growing to 0.290 at 8/255)."""
    model, x = _net(), _interior(4, 15)
    scale = 1.0 if norm == "l2" else 1.0 / 8
    eps = [scale * e for e in (1e-3, 1e-2, 1e-1)]
    err = relative_error_vs_eps(model, x, eps, norm, generator=torch.Generator().manual_seed(16))
    values = [err[e] for e in eps]
    assert values[0] < 1e-3
    assert values[0] < values[1] < values[2]


def test_a_float32_attack_model_finds_eta_for_a_float64_copy() -> None:
    model32 = tiny_net(0, classes=5)
    with torch.no_grad():
        model32.head.weight *= 4.0
    model64 = _net()  # the same weights in float64
    x = _interior(3, 17)
    g = torch.Generator().manual_seed(18)
    out = kl_g1_vs_eps(model64, x, [0.05], "linf", attack_model=model32, generator=g)[0.05]
    assert np.all(out["kl"] > 0) and np.all(out["norm"] <= 0.05 * (1 + 1e-6))
    with pytest.raises(ValueError, match="unknown perturbation 'worst'; valid: adversarial"):
        kl_g1_vs_eps(model64, x, [0.05], "linf", perturbation="worst")
    assert PERTURBATIONS == ("adversarial", "random")
