"""The probe table: every probe's name, the paper it follows, its parameters with their
defaults, whether it runs per target, and where its runner lives. Torch-free.

The driver validates a spec's ``probes:`` section with :func:`validate_probe` while planning,
so nothing here imports a measure: runners are named by import path and loaded on the worker
(:func:`raysweep.probes.run.run_probe`). A probe runs one measure of :mod:`raysweep.measures`
on a stored source model (and, for per-target probes, one target dataset).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

# The CCKL probe perturbs within the same threat-model norms as adversarial training.
from raysweep.train.names import NORMS

# How the CCKL probe picks η at each ε (raysweep.measures.input_fisher.PERTURBATIONS; kept
# here as text so that the table stays torch-free; tests check the two agree).
PERTURBATIONS: tuple[str, ...] = ("adversarial", "random")
# Where the weight-Fisher log-variances start (raysweep.measures.fisher.STARTS, likewise).
FISHER_STARTS: tuple[str, ...] = ("fisher", "weights")

# Parameter kinds: what a value must be, and how the error message says so.
_KINDS: dict[str, str] = {
    "count": "a positive integer",
    "positive": "a positive number",
    "nonneg": "a number >= 0",
    "positives": "a non-empty list of positive numbers (such as 0.5 or 8/255)",
    "norm": f"one of {', '.join(NORMS)}",
    "perturbation": f"one of {', '.join(PERTURBATIONS)}",
    "start": f"one of {', '.join(FISHER_STARTS)}",
}
# Choice kinds: the values each allows.
_CHOICES: dict[str, tuple[str, ...]] = {
    "norm": NORMS,
    "perturbation": PERTURBATIONS,
    "start": FISHER_STARTS,
}
# A list entry may be a fraction written as text, as ε is in the papers: "8/255".
_FRACTION = re.compile(r"\d{1,12}/\d{1,12}")
# The CCKL paper's Table 2 grid: ε = 1/255 … 8/255 (ℓ∞, the TRADES threat model).
TABLE2_EPS: list[float] = [k / 255 for k in range(1, 9)]

_INFO = "raysweep.probes.information"
_IMAGES = "raysweep.probes.images"


@dataclass(frozen=True)
class Probe:
    """One row of the table. ``params``: name -> (kind, default); ``runner``: ``module:function``
    taking a :class:`~raysweep.probes.context.ProbeContext`, returning a ``ProbeOutput``."""

    name: str
    follows: str
    params: Mapping[str, tuple[str, Any]]
    runner: str
    #: Runs once per (source, target) pair instead of once per source.
    per_target: bool = False
    #: Runs once per (source, target, subset size, seed) of the fine-tuning grid, on the very
    #: training subset the fine-tune trials of that cell draw (implies ``per_target``).
    per_subset: bool = False


# Weight-Fisher optimisation (raysweep.measures.fisher.Plateau): Adam at lr on the
# log-variances from the Laplace start; every 50 steps the window-averaged parameters are
# checked, converged when the objective (relative) and the mean log σ² (nats) moved by less
# than the tolerance since the last check, after min_steps, at most max_steps. Measured on the
# quickstart's small_cnn/shapes sources: converged after 250 (natural) and 100-350 (PGD ℓ∞
# 2/255) steps, ≈0.13 s a step on one core. tolerance 0 runs exactly max_steps.
FISHER_MAX_STEPS = 400
FISHER_MIN_STEPS = 200
FISHER_TOLERANCE = 0.01
FISHER_LR = 0.1
# effective_images runs the same optimisation before two inversions (≈43 s of its ~60):
# a check at 50 and at 100 steps, from the Laplace start (within ≈0.3 nats of the optimum).
EFFECTIVE_FISHER_MAX_STEPS = 100
EFFECTIVE_FISHER_MIN_STEPS = 100
# The linear probe's grid of inverse L2 penalties C on standardised features: 10^-4 … 10^4 in
# half-decade steps (17 values), chosen by cross-validation on the training subset.
LINEAR_PROBE_CS: list[float] = [10 ** (k / 2) for k in range(-8, 9)]

# Defaults keep every probe under ~60 s on one CPU core for small_cnn on the built-in datasets
# (measured; see tests/test_probes.py for the sizes).
PROBES: dict[str, Probe] = {
    probe.name: probe
    for probe in (
        Probe(
            "distance",
            "EMD of class-mean features, Cui et al. 2018 (Terzi et al. Fig. 3, 7)",
            {"images_per_class": ("count", 20), "gamma": ("positive", 0.01)},
            f"{_INFO}:run_distance",
            per_target=True,
        ),
        Probe(
            "weight_fisher",
            "variational weight log-variances, Achille & Soatto 2019 (Terzi Fig. 4)",
            {
                "images": ("count", 1000),
                "max_steps": ("count", FISHER_MAX_STEPS),
                "min_steps": ("count", FISHER_MIN_STEPS),
                "tolerance": ("nonneg", FISHER_TOLERANCE),
                "lr": ("positive", FISHER_LR),
                "start": ("start", "fisher"),
                "beta": ("positive", 1e-7),
            },
            f"{_INFO}:run_weight_fisher",
        ),
        Probe(
            "diag_fisher",
            "Monte-Carlo diagonal Fisher of the weights (task2vec)",
            {"images": ("count", 256)},
            f"{_INFO}:run_diag_fisher",
        ),
        Probe(
            "input_fisher",
            "‖F_x‖_F, tr F_x, λ_max(F_x) (CCKL paper Eq. 9)",
            {"images": ("count", 256)},
            f"{_INFO}:run_input_fisher",
        ),
        Probe(
            "cckl",
            "CCKL, G2/KL and |KL − G1|/KL against ε (CCKL paper Eq. 2, 14-15, Table 2)",
            {
                "images": ("count", 256),
                "eps": ("positives", TABLE2_EPS),
                "norm": ("norm", "linf"),
                "perturbation": ("perturbation", "adversarial"),
                "relerr_images": ("count", 128),
                "pairs": ("count", 2048),
            },
            f"{_INFO}:run_cckl",
        ),
        Probe(
            "inversion",
            "representation inversion (Terzi Def. 0.1)",
            {
                "images": ("count", 8),
                "steps": ("count", 2000),
                "step_size": ("positive", 1.0),
                "start_sigma": ("nonneg", 0.05),
            },
            f"{_IMAGES}:run_inversion",
        ),
        Probe(
            "effective_images",
            "variational inversion and effective images (Terzi App. D)",
            {
                "images": ("count", 8),
                "steps": ("count", 1000),
                "step_size": ("positive", 1.0),
                "start_sigma": ("nonneg", 0.05),
                "beta": ("positive", 1e-7),
                "fisher_images": ("count", 256),
                "fisher_max_steps": ("count", EFFECTIVE_FISHER_MAX_STEPS),
                "fisher_min_steps": ("count", EFFECTIVE_FISHER_MIN_STEPS),
                "fisher_tolerance": ("nonneg", FISHER_TOLERANCE),
                "fisher_lr": ("positive", FISHER_LR),
            },
            f"{_IMAGES}:run_effective_images",
        ),
        Probe(
            "tsne",
            "t-SNE of penultimate features (Terzi Fig. 6)",
            {"images": ("count", 512), "perplexity": ("positive", 30.0)},
            f"{_IMAGES}:run_tsne",
        ),
        Probe(
            "featvis",
            "feature visualisation from OOD seeds (Utrera et al. A.1)",
            {
                "coordinates": ("count", 8),
                "steps": ("count", 200),
                "seeds": ("count", 4),
                "step_size": ("positive", 1.0),
            },
            f"{_IMAGES}:run_featvis",
        ),
        Probe(
            "influence",
            "head-only influence functions, top-k label match (Utrera §6)",
            {
                "train_images": ("count", 400),
                "test_images": ("count", 100),
                "k": ("count", 1),
                "epochs": ("count", 30),
            },
            f"{_IMAGES}:run_influence",
            per_target=True,
        ),
        Probe(
            "linear_probe",
            "logistic regression on frozen penultimate features, C by k-fold CV (Kornblith 2019)",
            {
                "cs": ("positives", LINEAR_PROBE_CS),
                "folds": ("count", 5),
                "max_iter": ("count", 1000),
            },
            "raysweep.probes.linear:run_linear_probe",
            per_target=True,
            per_subset=True,
        ),
    )
}


@dataclass(frozen=True)
class ProbeSpec:
    """One probe of a spec: validated ``params`` with defaults filled in (JSON-able).

    ``per_target``: the probe runs once per (source, target) pair instead of once per source;
    ``per_subset``: once per (source, target, subset size, seed) of the fine-tuning grid.
    """

    name: str
    params: dict[str, Any]
    per_target: bool
    per_subset: bool = False


def probe_names() -> list[str]:
    """Registered probe names, sorted."""
    return sorted(PROBES)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _coerce(kind: str, value: Any) -> Any:
    """``value`` in canonical form for ``kind``, or None if it is not one."""
    if kind == "count":
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= 1
        return int(value) if ok else None
    if kind in ("positive", "nonneg"):
        if not _is_number(value) or value != value:  # NaN is a float but not a size
            return None
        return float(value) if (value > 0 or (kind == "nonneg" and value == 0)) else None
    if kind == "positives":
        if not isinstance(value, list | tuple) or not value:
            return None
        items = [_coerce("positive", _fraction(v)) for v in value]
        return None if any(v is None for v in items) else items
    return value if isinstance(value, str) and value in _CHOICES[kind] else None


def _fraction(value: Any) -> Any:
    """``"8/255"`` as the float 8/255; anything else unchanged (and judged by the caller)."""
    if isinstance(value, str) and _FRACTION.fullmatch(value.replace(" ", "")):
        num, den = value.replace(" ", "").split("/")
        return float(Fraction(int(num), int(den))) if int(den) else value
    return value


def _cross_check(name: str, params: dict[str, Any]) -> None:
    """Constraints between parameters of one probe."""
    if name == "tsne" and not params["perplexity"] < params["images"]:
        raise ValueError(
            f"probe 'tsne': parameter 'perplexity' must be below images "
            f"({params['images']}), got {params['perplexity']:g}"
        )
    if name == "influence" and params["k"] > params["train_images"]:
        raise ValueError(
            f"probe 'influence': parameter 'k' must be at most train_images "
            f"({params['train_images']}), got {params['k']}"
        )
    if name == "linear_probe" and params["folds"] < 2:
        raise ValueError("probe 'linear_probe': parameter 'folds' must be at least 2, got 1")
    if name == "cckl" and params["images"] < 2:
        raise ValueError("probe 'cckl': parameter 'images' must be at least 2 (pairs), got 1")


def validate_probe(name: str, params: Mapping[str, Any]) -> ProbeSpec:
    """Check a probe's name and parameters, fill in defaults.

    Raises:
        ValueError: unknown probe (lists the valid names), unknown parameter (lists the
            allowed ones), or a value of the wrong type or range (says what is allowed).
    """
    if name not in PROBES:
        raise ValueError(f"unknown probe {name!r}; valid: {', '.join(probe_names())}")
    schema = PROBES[name].params
    if not isinstance(params, Mapping):
        raise ValueError(f"probe {name!r}: params must be a mapping, got {type(params).__name__}")
    for key in params:
        if key not in schema:
            raise ValueError(
                f"probe {name!r}: unknown parameter {key!r}; allowed: {', '.join(sorted(schema))}"
            )
    filled: dict[str, Any] = {}
    for key, (kind, default) in schema.items():
        raw = params.get(key, default)
        value = _coerce(kind, raw)
        if value is None:
            raise ValueError(
                f"probe {name!r}: parameter {key!r} must be {_KINDS[kind]}, got {raw!r}"
            )
        filled[key] = value
    _cross_check(name, filled)
    row = PROBES[name]
    return ProbeSpec(name, filled, per_target=row.per_target, per_subset=row.per_subset)
