"""Head-only influence functions (Koh & Liang 2017; Utrera et al. 2021 §6)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tiny_nets import one_thread  # noqa: F401  (autouse fixture)
from torch import nn

from raysweep.measures.influence import (
    head_gradients,
    head_hessian,
    influence_from_features,
    influence_matrix,
    pseudo_inverse,
    top_k_label_match,
)
from raysweep.models.net import Normalize, TransferNet


def _pixel_net(d: int, classes: int) -> TransferNet:
    """A TransferNet whose features are the raw pixels of a 1×1×d image and whose head is 0."""
    net = TransferNet(
        arch="pixels",
        normalize=Normalize([0.0], [1.0], channels=1),
        stem=nn.Flatten(1),
        blocks=[],
        pool=nn.Identity(),
        head=nn.Linear(d, classes),
        input_size=d,
        input_channels=1,
    )
    with torch.no_grad():
        net.head.weight.zero_()
        net.head.bias.zero_()
    return net


def _theta_loss(f: torch.Tensor, y: torch.Tensor, k: int) -> callable:
    d = f.shape[1]

    def loss(theta: torch.Tensor) -> torch.Tensor:
        wb = theta.view(k, d + 1)
        return F.cross_entropy(f @ wb[:, :d].T + wb[:, d], y, reduction="sum")

    return loss


def test_closed_forms_equal_autograd() -> None:
    rng = np.random.default_rng(0)
    n, d, k = 7, 4, 3
    f, w, b = rng.normal(size=(n, d)), rng.normal(size=(k, d)), rng.normal(size=k)
    y = rng.integers(0, k, n)
    ft, yt = torch.tensor(f), torch.tensor(y)
    theta = torch.tensor(np.c_[w, b]).reshape(-1)
    h_auto = torch.autograd.functional.hessian(_theta_loss(ft, yt, k), theta).numpy()
    np.testing.assert_allclose(head_hessian(f, w, b, chunk=3), h_auto, atol=1e-12)
    grads = head_gradients(f, y, w, b)
    assert grads.shape == (n, k * (d + 1))
    g2 = torch.autograd.functional.jacobian(_theta_loss(ft[2:3], yt[2:3], k), theta).numpy()
    np.testing.assert_allclose(grads[2], g2, atol=1e-12)


def test_orthogonal_features_make_every_point_most_influential_on_itself() -> None:
    """One-hot features and a zero head: p is uniform, H = A ⊗ Σ a_i a_iᵀ, and the a_i are
    independent, so influence = (K−1)·I: each training image influences only itself."""
    n, d, k = 6, 8, 3
    x = torch.zeros(n, 1, d, d)
    for i in range(n):
        x[i, 0, 0, i] = 1.0
    model = _pixel_net(d * d, k)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    inf = influence_matrix(model, x, y, x, y, rcond=0.05)
    np.testing.assert_allclose(inf, (k - 1) * np.eye(n), atol=1e-10)
    assert np.all(inf.argmax(axis=1) == np.arange(n))
    assert top_k_label_match(inf, y.numpy(), y.numpy(), k=1) == 1.0


def test_train_on_train_influence_is_symmetric() -> None:
    rng = np.random.default_rng(1)
    f, w, b = rng.normal(size=(12, 5)), 0.3 * rng.normal(size=(3, 5)), np.zeros(3)
    y = rng.integers(0, 3, 12)
    inf = influence_from_features(f, y, f, y, w, b)
    np.testing.assert_allclose(inf, inf.T, atol=1e-10)
    assert np.all(np.diag(inf) >= 0)  # g H⁺ gᵀ with H⁺ PSD


def test_pseudo_inverse_drops_small_eigenvalues() -> None:
    q, _ = np.linalg.qr(np.random.default_rng(2).normal(size=(3, 3)))
    h = q @ np.diag([10.0, 1.0, 0.1]) @ q.T
    expected = q @ np.diag([0.1, 1.0, 0.0]) @ q.T  # 0.1 < 0.05 * 10 is dropped
    np.testing.assert_allclose(pseudo_inverse(h, rcond=0.05), expected, atol=1e-12)
    np.testing.assert_allclose(pseudo_inverse(h, rcond=1e-3), np.linalg.inv(h), atol=1e-10)


def test_top_k_label_match_modes() -> None:
    inf = np.array([[5.0, 4.0, 3.0, 0.0], [1.0, 2.0, 3.0, 4.0], [0.0, 1.0, 4.0, 3.0]])
    train = np.array([0, 0, 1, 1])
    test = np.array([0, 1, 0])  # rankings: 0,1,2,3 / 3,2,1,0 / 2,3,1,0
    assert top_k_label_match(inf, train, test, 1) == pytest.approx(2 / 3)
    assert top_k_label_match(inf, train, test, 2) == pytest.approx(2 / 3)
    assert top_k_label_match(inf, train, test, 3) == 0.0
    assert top_k_label_match(inf, train, test, 3, mode="kth") == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="all, kth"):
        top_k_label_match(inf, train, test, 1, mode="any")
    with pytest.raises(ValueError, match="exceeds"):
        top_k_label_match(inf, train, test, 5)
