"""Influence functions on the classifier head (Koh & Liang 2017; Utrera et al. 2021 §6, A.9).

θ = (W, b) of the linear head only, with features φ(x) = model.features(x) frozen. For one
image, with p = softmax(Wφ + b), e_y the one-hot label and a = [φ; 1] (bias as a constant
feature), the cross-entropy loss ℓ has, in θ = vec([W | b]) (row-major, K·(D+1) entries):

    ∇_θ ℓ   = (p − e_y) ⊗ a
    ∇²_θ ℓ  = (diag(p) − ppᵀ) ⊗ a aᵀ

Utrera et al. sum the Hessian over the fine-tuning images, H = Σ_i ∇²ℓ_i, pseudo-invert it
and score influence(test t, train i) = g_t H⁺ g_iᵀ (their code's sign: the negative of Koh &
Liang's I_up,loss, so larger = up-weighting the training image lowers the test loss more).
"""

from __future__ import annotations

import numpy as np
from torch import Tensor

from raysweep.measures._util import batched_features, check_positive_int
from raysweep.models.net import TransferNet

MATCH_MODES = ("all", "kth")


def head_gradients(
    features: np.ndarray, labels: np.ndarray, weight: np.ndarray, bias: np.ndarray
) -> np.ndarray:
    """Per-image ∇_θ ℓ = (p − e_y) ⊗ [φ; 1], float64 [N, K·(D+1)]."""
    a, p = _augmented(features, weight, bias)
    r = p.copy()
    r[np.arange(len(labels)), np.asarray(labels, dtype=np.int64)] -= 1.0
    return np.einsum("nk,nd->nkd", r, a).reshape(len(a), -1)


def head_hessian(
    features: np.ndarray, weight: np.ndarray, bias: np.ndarray, chunk: int = 512
) -> np.ndarray:
    """H = Σ_i (diag(p_i) − p_i p_iᵀ) ⊗ a_i a_iᵀ in float64, [K(D+1), K(D+1)] (labels drop
    out: the CE Hessian in the logits does not depend on y)."""
    a, p = _augmented(features, weight, bias)
    k, d1 = p.shape[1], a.shape[1]
    h = np.zeros((k, d1, k, d1))
    for s in range(0, len(a), chunk):
        pc, ac = p[s : s + chunk], a[s : s + chunk]
        curv = np.einsum("nk,kl->nkl", pc, np.eye(k)) - np.einsum("nk,nl->nkl", pc, pc)
        h += np.einsum("nkl,nd,ne->kdle", curv, ac, ac, optimize=True)
    return h.reshape(k * d1, k * d1)


def _augmented(
    features: np.ndarray, weight: np.ndarray, bias: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    phi = np.asarray(features, dtype=np.float64)
    w, b = np.asarray(weight, dtype=np.float64), np.asarray(bias, dtype=np.float64)
    if phi.ndim != 2 or w.shape != (b.shape[0], phi.shape[1]):
        raise ValueError(
            f"features [N, D], weight [K, D], bias [K] expected; got {phi.shape}, "
            f"{w.shape}, {b.shape}"
        )
    a = np.concatenate([phi, np.ones((len(phi), 1))], axis=1)
    logits = phi @ w.T + b
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    return a, p / p.sum(axis=1, keepdims=True)


def pseudo_inverse(h: np.ndarray, rcond: float = 0.05) -> np.ndarray:
    """Moore-Penrose pseudo-inverse of the symmetric PSD H keeping eigenvalues ≥ rcond·λ_max
    (Utrera et al.'s code: singular values below 0.05·σ_max dropped; the paper text says
    1e-20). H has a null space anyway: softmax ignores adding a constant to every logit."""
    if not 0 < rcond < 1:
        raise ValueError(f"rcond must lie in (0, 1), got {rcond}")
    vals, vecs = np.linalg.eigh((h + h.T) / 2)
    keep = vals >= rcond * vals.max()
    return (vecs[:, keep] / vals[keep]) @ vecs[:, keep].T


def influence_from_features(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    test_features: np.ndarray,
    test_labels: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray,
    *,
    rcond: float = 0.05,
) -> np.ndarray:
    """influence[t, i] = g_test_t H⁺ g_train_iᵀ, [T, N] float64, H summed over the training
    images (see the module docstring)."""
    h_pinv = pseudo_inverse(head_hessian(train_features, weight, bias), rcond)
    g_train = head_gradients(train_features, train_labels, weight, bias)
    g_test = head_gradients(test_features, test_labels, weight, bias)
    return g_test @ h_pinv @ g_train.T


def influence_matrix(
    model: TransferNet,
    x_train: Tensor,
    y_train: Tensor,
    x_test: Tensor,
    y_test: Tensor,
    *,
    rcond: float = 0.05,
    batch_size: int = 256,
) -> np.ndarray:
    """Influence of every training image on every test image through the head of ``model``
    (Utrera et al. §6: 3,200 CIFAR-10 fine-tuning images). Inputs are float [0, 1] images.
    Memory: H is (K(D+1))² float64, i.e. 3.4 GB for a ResNet-50 head on 10 classes."""
    check_positive_int("batch_size", batch_size)
    f_train = batched_features(model, x_train, batch_size).double().cpu().numpy()
    f_test = batched_features(model, x_test, batch_size).double().cpu().numpy()
    w = model.head.weight.detach().double().cpu().numpy()
    b = model.head.bias.detach().double().cpu().numpy()
    return influence_from_features(
        f_train, y_train.cpu().numpy(), f_test, y_test.cpu().numpy(), w, b, rcond=rcond
    )


def top_k_label_match(
    influence: np.ndarray,
    train_labels: np.ndarray,
    test_labels: np.ndarray,
    k: int,
    mode: str = "all",
) -> float:
    """Share of test images whose most influential training images carry the test label
    (Utrera et al. Fig. 7b; top-1: robust 78.6 %, natural 55.1 % on CIFAR-10).

    mode "all": all of the k most influential images match; "kth": the k-th most influential
    one matches (identical for k = 1).
    """
    if mode not in MATCH_MODES:
        raise ValueError(f"unknown mode {mode!r}; valid: {', '.join(MATCH_MODES)}")
    inf = np.asarray(influence)
    check_positive_int("k", k)
    if k > inf.shape[1]:
        raise ValueError(f"k={k} exceeds the {inf.shape[1]} training images")
    order = np.argsort(-inf, axis=1, kind="stable")[:, :k]
    match = np.asarray(train_labels)[order] == np.asarray(test_labels)[:, None]
    hits = match.all(axis=1) if mode == "all" else match[:, k - 1]
    return float(hits.mean())
