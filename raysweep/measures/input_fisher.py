"""Fisher information of the output w.r.t. the input, CCKL and its G1/G2 split.

Follows "Towards disentangling non-robust and robust components in performance metric"
(ICLR submission; here "the CCKL paper"). For one image x with class probabilities p and
per-class input gradients g_j = ∇ₓ log p_j(x) (w.r.t. [0, 1] pixels; rows of G ∈ R^{K×d}):

    F_x = Σ_j p_j g_j g_jᵀ = Gᵀ D G,  D = diag(p)                           (Eq. 9)

F_x is d×d (d = 3·32·32 or more) but has rank < K, so everything is computed from the K×K
Gram matrix GGᵀ and never from F_x itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import jacrev, jvp, vmap

from raysweep.measures._util import check_positive_int, frozen
from raysweep.train.attacks import PGDConfig, perturb
from raysweep.train.names import NORMS

# How η of the KL-vs-G1 comparison is chosen (CCKL paper Table 2 uses the adversarial one).
PERTURBATIONS: tuple[str, ...] = ("adversarial", "random")
# PGD steps of the adversarial η (TRADES: 10).
ATTACK_STEPS = 10


def class_gradients(model: nn.Module, x: Tensor, *, chunk_size: int = 16) -> tuple[Tensor, Tensor]:
    """G [B, K, d] with G[b, j] = ∇ₓ log p_j(x_b), and p [B, K], in eval mode.

    One reverse-mode Jacobian per image (vmap over ``chunk_size`` images at a time): memory is
    chunk_size·K·d numbers. Σ_j p_j g_j = ∇ₓ Σ_j p_j = 0 is a built-in sanity check.
    """
    check_positive_int("chunk_size", chunk_size)

    def log_probs(xi: Tensor) -> Tensor:
        return F.log_softmax(model(xi.unsqueeze(0)), dim=1)[0]

    def with_aux(xi: Tensor) -> tuple[Tensor, Tensor]:
        logp = log_probs(xi)
        return logp, logp

    def both(xi: Tensor) -> tuple[Tensor, Tensor]:
        jac, logp = jacrev(with_aux, has_aux=True)(xi)
        return jac.flatten(1), logp.exp()

    grads, probs = [], []
    with frozen(model):
        for chunk in x.split(chunk_size):
            g, p = vmap(both)(chunk.detach())
            grads.append(g)
            probs.append(p.detach())
    return torch.cat(grads), torch.cat(probs)


def fisher_stats_from_gradients(g: Tensor, p: Tensor) -> dict[str, np.ndarray]:
    """F-norm, trace and largest eigenvalue of F_x = Gᵀ D G per image, from the Gram GGᵀ.

        ‖F‖_F² = tr(GᵀDG GᵀDG) = Σ_jk p_j p_k (GGᵀ)_jk²
        tr F   = Σ_j p_j ‖g_j‖²
        λ_max(F) = λ_max(D^{1/2} G Gᵀ D^{1/2})   (AB and BA share non-zero eigenvalues)

    Computed in float64. Returns arrays [B] under "fnorm", "trace", "lambda_max".
    """
    g64, p64 = g.double(), p.double()
    gram = g64 @ g64.transpose(1, 2)
    fnorm = torch.einsum("bj,bk,bjk->b", p64, p64, gram.pow(2)).clamp_min(0).sqrt()
    trace = (p64 * torch.diagonal(gram, dim1=1, dim2=2)).sum(1)
    sq = p64.sqrt()
    lam = torch.linalg.eigvalsh(sq.unsqueeze(2) * gram * sq.unsqueeze(1))[:, -1]
    return {"fnorm": fnorm.numpy(), "trace": trace.numpy(), "lambda_max": lam.numpy()}


def input_fisher_stats(
    model: nn.Module, x: Tensor, *, chunk_size: int = 16
) -> dict[str, np.ndarray]:
    """Per-image ‖F_x‖_F, tr F_x and λ_max(F_x) (CCKL paper Eq. 9, Fig. 3-4 plot the mean
    F-norm; λ_max sets the worst-case KL ½λ_max ε², Eq. 12). See
    :func:`fisher_stats_from_gradients` for the formulas. G is kept one chunk at a time."""
    parts = []
    for chunk in x.split(chunk_size):
        g, p = class_gradients(model, chunk, chunk_size=chunk_size)
        parts.append(fisher_stats_from_gradients(g.detach().cpu(), p.cpu()))
    return {k: np.concatenate([part[k] for part in parts]) for k in parts[0]}


def cckl_matrix(logits: Tensor) -> Tensor:
    """All-pairs KL(f(x_i) ‖ f(x_j)) of a batch, [B, B] (CCKL paper Eq. 2 summand):

    KL_ij = Σ_k p_ik log p_ik − Σ_k p_ik log p_jk,  p = softmax(logits).
    """
    logp = F.log_softmax(logits.double(), dim=1)
    p = logp.exp()
    neg_entropy = (p * logp).sum(1)
    return (neg_entropy.unsqueeze(1) - p @ logp.T).clamp_min(0.0)


@dataclass(frozen=True)
class PairKL:
    """KL(f(x_i) ‖ f(x_j)) for every ordered pair (i, j) with y_i ≠ y_j; ``cckl`` is its mean."""

    i: np.ndarray
    j: np.ndarray
    kl: np.ndarray

    @property
    def cckl(self) -> float:
        return float(self.kl.mean()) if self.kl.size else float("nan")


def cckl_pairs(model: nn.Module, x: Tensor, y: Tensor, *, batch_size: int = 256) -> PairKL:
    """Cross-Category KL (CCKL paper Eq. 2-3): E over pairs of different labels of
    KL(f(x_i) ‖ f(x_j)), over all ordered pairs of the batch (KL is not symmetric)."""
    with frozen(model), torch.no_grad():
        logits = torch.cat([model(b) for b in x.split(batch_size)])
    kl = cckl_matrix(logits).cpu().numpy()
    labels = np.asarray(y.cpu())
    i, j = np.nonzero(labels[:, None] != labels[None, :])
    return PairKL(i=i, j=j, kl=kl[i, j])


def g1_g2(model: nn.Module, x_i: Tensor, x_j: Tensor) -> dict[str, np.ndarray]:
    """Split KL(f(x_i) ‖ f(x_j)) into its Fisher term and the rest (CCKL paper Eq. 14-15).

    With Δ = x_j − x_i and u = GΔ (u_k = ∇ₓ log p_k(x_i)·Δ, one forward-mode JVP per batch):

        G1 = ½ Δᵀ F_{x_i} Δ = ½ Σ_k p_k u_k²,   G2 = KL − G1

    G2 can be negative: Δ is not small. Returns arrays [B] under "kl", "g1", "g2".
    """
    if x_i.shape != x_j.shape:
        raise ValueError(f"x_i and x_j differ in shape: {tuple(x_i.shape)} vs {tuple(x_j.shape)}")
    return _kl_and_g1(model, x_i, x_j - x_i)


def _kl_and_g1(model: nn.Module, x: Tensor, delta: Tensor) -> dict[str, np.ndarray]:
    def log_probs(inp: Tensor) -> Tensor:
        return F.log_softmax(model(inp), dim=1)

    with frozen(model), torch.no_grad():
        logp, u = jvp(log_probs, (x,), (delta,))
        logp_far = log_probs(x + delta)
    p = logp.double().exp()
    g1 = 0.5 * (p * u.double().pow(2)).sum(1)
    kl = (p * (logp.double() - logp_far.double())).sum(1)
    return {"kl": kl.cpu().numpy(), "g1": g1.cpu().numpy(), "g2": (kl - g1).cpu().numpy()}


def random_perturbation(
    shape: Sequence[int],
    eps: float,
    norm: str,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """A random η per image with ‖η‖ = ε: ℓ₂ — a uniformly random direction scaled to ε;
    ℓ∞ — ε times random signs (every pixel at the corner of the ε-box)."""
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; valid: {', '.join(NORMS)}")
    z = torch.randn(tuple(shape), generator=generator, dtype=dtype)
    if norm == "linf":
        return eps * z.sign()
    return eps * z / z.flatten(1).norm(dim=1).view(-1, *([1] * (z.ndim - 1)))


def kl_divergence_rows(logp: Tensor, logq: Tensor) -> Tensor:
    """KL(p ‖ q) per row from log-probabilities: Σ_k p_k (log p_k − log q_k)."""
    return (logp.exp() * (logp - logq)).sum(1)


def adversarial_perturbation(
    model: nn.Module,
    x: Tensor,
    eps: float,
    norm: str,
    *,
    steps: int = ATTACK_STEPS,
    generator: torch.Generator | None = None,
) -> Tensor:
    """η ≈ argmax_{‖η‖ ≤ ε, x+η ∈ [0,1]} KL(f(x) ‖ f(x+η)) per image: the TRADES inner
    maximisation (Zhang et al. 2019; the CCKL paper's Table 2 takes η adversarial, ℓ∞).

    PGD as :func:`raysweep.train.attacks.perturb` (eval mode): start x + 0.001·N(0, 1) projected
    into the ball — KL and its gradient vanish at η = 0, so the start must be off x; for ℓ₂ at
    ε below ‖0.001·N‖₂ (≈ 0.055 at 3×32×32) this is a random point of the sphere — then
    ``steps`` (10, as TRADES) steps of ε/4 (sign of the gradient for ℓ∞, the ℓ₂-normalised
    gradient for ℓ₂), each projected back onto the ε-ball and x + η onto [0, 1].
    ε/4 rather than TRADES' 0.007 at ε = 0.031 (≈ ε/4.4): the same ratio at every ε, and 10
    steps can cross the ball 2.5 times. Returns the final iterate's η (x + η in [0, 1]).
    """
    check_positive_int("steps", steps)
    if not eps > 0:
        raise ValueError(f"eps must be positive, got {eps}")
    cfg = PGDConfig(norm, float(eps), steps, eps / 4, random_start=False)
    x = x.detach()
    with frozen(model), torch.no_grad():
        logp = F.log_softmax(model(x), dim=1)
    noise = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)

    def kl_to_clean(logits: Tensor) -> Tensor:
        return kl_divergence_rows(logp, F.log_softmax(logits, dim=1))

    with frozen(model):
        x_adv = perturb(model, x, kl_to_clean, cfg, start=x + 0.001 * noise)
    return x_adv - x


def _perturbation_at(
    attack_model: nn.Module,
    x: Tensor,
    eps: float,
    norm: str,
    unit: Tensor | None,
    generator: torch.Generator | None,
) -> Tensor:
    """η at ε: ε·``unit`` (a fixed random direction) or, with ``unit`` None, the adversarial η
    of :func:`adversarial_perturbation` found on ``attack_model`` (in x's dtype)."""
    if unit is not None:
        return eps * unit
    x_attack = x.to(next(attack_model.parameters()).dtype)
    eta = adversarial_perturbation(attack_model, x_attack, eps, norm, generator=generator)
    return _into_ball(eta.to(x.dtype), x, eps, norm)


def _into_ball(eta: Tensor, x: Tensor, eps: float, norm: str) -> Tensor:
    """η with x + η in [0, 1] and ‖η‖ ≤ ε in x's dtype: an η found in float32 can overshoot
    both by its round-off (‖η‖∞ = 1.000002·ε seen) when a float64 copy evaluates it."""
    eta = (x + eta).clamp(0.0, 1.0) - x
    if norm == "linf":
        return eta.clamp(-eps, eps)  # moving towards x keeps x + η in [0, 1]
    size = eta.flatten(1).norm(dim=1).view(-1, *([1] * (eta.ndim - 1)))
    return eta * (eps / size.clamp_min(eps))


def kl_g1_vs_eps(
    model: nn.Module,
    x: Tensor,
    eps_list: Sequence[float],
    norm: str,
    *,
    perturbation: str = "adversarial",
    attack_model: nn.Module | None = None,
    generator: torch.Generator | None = None,
) -> dict[float, dict[str, np.ndarray]]:
    """Per image and ε: KL(f(x) ‖ f(x+η)), G1 = ½ηᵀF_xη and ‖η‖ ("kl", "g1", "g2", "norm").

    ``perturbation``: ``"adversarial"`` — η maximises the KL in the ε-ball ∩ [0, 1]
    (:func:`adversarial_perturbation`, found afresh per ε on ``attack_model``, default
    ``model``: a float32 original can find η for a float64 copy that evaluates it);
    ``"random"`` — one random direction per image (:func:`random_perturbation`) scaled to
    every ε, not clamped to [0, 1] (the identity concerns the network as a function of its
    input), so the curve follows fixed directions.
    """
    if not eps_list or min(eps_list) <= 0:
        raise ValueError(f"eps_list must hold positive sizes, got {list(eps_list)}")
    if perturbation not in PERTURBATIONS:
        raise ValueError(
            f"unknown perturbation {perturbation!r}; valid: {', '.join(PERTURBATIONS)}"
        )
    unit = None
    if perturbation == "random":
        unit = random_perturbation(x.shape, 1.0, norm, generator, x.dtype).to(x.device)
    out: dict[float, dict[str, np.ndarray]] = {}
    for eps in eps_list:
        eta = _perturbation_at(attack_model or model, x, eps, norm, unit, generator)
        split = _kl_and_g1(model, x, eta)
        split["norm"] = _norm_of(eta, norm)
        out[float(eps)] = split
    return out


def _norm_of(eta: Tensor, norm: str) -> np.ndarray:
    flat = eta.detach().flatten(1).double()
    size = flat.abs().amax(1) if norm == "linf" else flat.norm(dim=1)
    return size.cpu().numpy()


def relative_error_vs_eps(
    model: nn.Module,
    x: Tensor,
    eps_list: Sequence[float],
    norm: str,
    *,
    perturbation: str = "adversarial",
    attack_model: nn.Module | None = None,
    generator: torch.Generator | None = None,
) -> dict[float, float]:
    """Mean over images of |KL(f(x) ‖ f(x+η)) − G1| / KL with G1 = ½ηᵀF_xη (CCKL paper
    Table 2: η adversarial in the ℓ∞ ball, 0.058 at ε = 1/255 up to 0.290 at 8/255 for a
    TRADES VGG13). η per ε as :func:`kl_g1_vs_eps` (``perturbation``: adversarial | random).
    """
    split = kl_g1_vs_eps(
        model,
        x,
        eps_list,
        norm,
        perturbation=perturbation,
        attack_model=attack_model,
        generator=generator,
    )
    return {e: float(np.mean(np.abs(r["kl"] - r["g1"]) / r["kl"])) for e, r in split.items()}
