"""One registry of measures: name -> (function, one-line description).

The probe stage looks a measure up by the name a spec gives; an unknown name raises a
``ValueError`` that lists the valid ones.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from raysweep.measures import distance, featvis, fisher, influence, input_fisher, inversion, tsne


@dataclass(frozen=True)
class Measure:
    name: str
    fn: Callable[..., Any]
    description: str


_MEASURES: dict[str, Measure] = {
    m.name: m
    for m in (
        Measure(
            "dataset_distance",
            distance.dataset_distance,
            "EMD between class-mean features of two datasets (Cui et al. 2018)",
        ),
        Measure(
            "weight_fisher",
            fisher.weight_fisher_logvar,
            "per-filter log-variance of tolerated weight noise (Terzi Fig. 4)",
        ),
        Measure(
            "diagonal_fisher",
            fisher.diagonal_fisher,
            "Monte-Carlo diagonal Fisher of the weights from per-sample gradients",
        ),
        Measure(
            "input_fisher",
            input_fisher.input_fisher_stats,
            "F-norm, trace and λ_max of the input Fisher F_x per image (CCKL paper Eq. 9)",
        ),
        Measure(
            "cckl",
            input_fisher.cckl_pairs,
            "KL(f(x_i)‖f(x_j)) over pairs with different labels (CCKL paper Eq. 2)",
        ),
        Measure(
            "g1_g2",
            input_fisher.g1_g2,
            "Fisher term G1 = ½ΔᵀF_xΔ and remainder G2 = KL − G1 (CCKL paper Eq. 14-15)",
        ),
        Measure(
            "kl_taylor_error",
            input_fisher.relative_error_vs_eps,
            "|KL − G1|/KL for random perturbations of size ε (CCKL paper Table 2)",
        ),
        Measure(
            "inversion",
            inversion.invert,
            "invert penultimate features by normalised gradient descent (Terzi Def. 0.1)",
        ),
        Measure(
            "variational_inversion",
            inversion.variational_invert,
            "inversion with weights perturbed once by N(0, βF⁻¹) (Terzi Alg. 1)",
        ),
        Measure(
            "effective_images",
            inversion.effective_images,
            "inversion with fresh weight noise every step (Terzi Def. 0.7, Alg. 2)",
        ),
        Measure(
            "influence",
            influence.influence_matrix,
            "head-only influence g_test H⁺ g_trainᵀ (Koh & Liang 2017; Utrera §6)",
        ),
        Measure("tsne", tsne.tsne_embedding, "2-D t-SNE of penultimate features (Terzi Fig. 6)"),
        Measure(
            "feature_visualization",
            featvis.visualize_feature,
            "maximise one penultimate coordinate from seed images (Utrera A.1)",
        ),
    )
}


def measure_names() -> list[str]:
    """Registered measure names, sorted."""
    return sorted(_MEASURES)


def describe_measures() -> dict[str, str]:
    """name -> one-line description, sorted by name."""
    return {n: _MEASURES[n].description for n in measure_names()}


def get_measure(name: str) -> Callable[..., Any]:
    """The function registered under ``name``.

    Raises:
        ValueError: unknown ``name``; the message lists the valid names.
    """
    if name not in _MEASURES:
        raise ValueError(f"unknown measure {name!r}; valid: {', '.join(measure_names())}")
    return _MEASURES[name].fn
