"""Probes: the worker-side function one Ray task of the probe stage calls.

A probe runs one measure of :mod:`raysweep.measures` on a pretrained source model (and, for
``distance`` and ``influence``, one target dataset), writes its artifacts into a folder and
returns JSON-able metrics, series and artifact paths for the driver to log to MLflow. Ray and
MLflow stay outside: :func:`run_probe` is a plain function.

=================  ===========================================================================
probe              follows
=================  ===========================================================================
distance           EMD of class-mean features, Cui et al. 2018 (Terzi et al. Fig. 3, 7)
weight_fisher      variational weight log-variances, Achille & Soatto 2019 (Terzi Fig. 4)
diag_fisher        Monte-Carlo diagonal Fisher of the weights (task2vec)
input_fisher       ‖F_x‖_F, tr F_x, λ_max(F_x) (CCKL paper Eq. 9)
cckl               CCKL, G2/KL and |KL − G1|/KL against ε (CCKL paper Eq. 2, 14-15, Table 2)
inversion          representation inversion (Terzi Def. 0.1)
effective_images   variational inversion and effective images (Terzi App. D)
tsne               t-SNE of penultimate features (Terzi Fig. 6)
featvis            feature visualisation from OOD seeds (Utrera et al. A.1)
influence          head-only influence functions, top-k label match (Utrera §6)
=================  ===========================================================================

Runners live in :mod:`raysweep.probe_info` and :mod:`raysweep.probe_images`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from threadpoolctl import threadpool_limits

from raysweep.measures.input_fisher import NORMS
from raysweep.models.checkpoints import load_checkpoint
from raysweep.probe_common import ProbeContext, ProbeOutput
from raysweep.probe_images import (
    run_effective_images,
    run_featvis,
    run_influence,
    run_inversion,
    run_tsne,
)
from raysweep.probe_info import (
    run_cckl,
    run_diag_fisher,
    run_distance,
    run_input_fisher,
    run_weight_fisher,
)

PROBE_NAMES = (
    "distance",
    "weight_fisher",
    "diag_fisher",
    "input_fisher",
    "cckl",
    "inversion",
    "effective_images",
    "tsne",
    "featvis",
    "influence",
)
PER_TARGET = frozenset({"distance", "influence"})

# Parameter kinds: what a value must be, and how the error message says so.
_KINDS: dict[str, str] = {
    "count": "a positive integer",
    "positive": "a positive number",
    "nonneg": "a number >= 0",
    "positives": "a non-empty list of positive numbers",
    "norm": f"one of {', '.join(NORMS)}",
}

# name -> parameter -> (kind, default). Defaults keep every probe under ~60 s on one CPU core
# for small_cnn on the built-in datasets (measured; see tests/test_probes.py for the sizes).
_PARAMS: dict[str, dict[str, tuple[str, Any]]] = {
    "distance": {"images": ("count", 2000), "gamma": ("positive", 0.01)},
    "weight_fisher": {
        "images": ("count", 1000),
        "steps": ("count", 200),
        "beta": ("positive", 1e-7),
    },
    "diag_fisher": {"images": ("count", 256)},
    "input_fisher": {"images": ("count", 256)},
    "cckl": {
        "images": ("count", 256),
        "eps": ("positives", [0.01, 0.03, 0.1, 0.3, 1.0]),
        "norm": ("norm", "l2"),
        "pairs": ("count", 2048),
    },
    "inversion": {
        "images": ("count", 8),
        "steps": ("count", 2000),
        "step_size": ("positive", 1.0),
        "start_sigma": ("nonneg", 0.05),
    },
    "effective_images": {
        "images": ("count", 8),
        "steps": ("count", 1000),
        "step_size": ("positive", 1.0),
        "start_sigma": ("nonneg", 0.05),
        "beta": ("positive", 1e-7),
        "fisher_images": ("count", 256),
        "fisher_steps": ("count", 50),
    },
    "tsne": {"images": ("count", 512), "perplexity": ("positive", 30.0)},
    "featvis": {
        "coordinates": ("count", 8),
        "steps": ("count", 200),
        "seeds": ("count", 4),
        "step_size": ("positive", 1.0),
    },
    "influence": {
        "train_images": ("count", 400),
        "test_images": ("count", 100),
        "k": ("count", 1),
        "epochs": ("count", 30),
    },
}

_RUNNERS: dict[str, Callable[[ProbeContext], ProbeOutput]] = {
    "distance": run_distance,
    "weight_fisher": run_weight_fisher,
    "diag_fisher": run_diag_fisher,
    "input_fisher": run_input_fisher,
    "cckl": run_cckl,
    "inversion": run_inversion,
    "effective_images": run_effective_images,
    "tsne": run_tsne,
    "featvis": run_featvis,
    "influence": run_influence,
}


@dataclass(frozen=True)
class ProbeSpec:
    """One probe of a spec: validated ``params`` with defaults filled in (JSON-able).

    ``per_target``: the probe runs once per (source, target) pair instead of once per source.
    """

    name: str
    params: dict[str, Any]
    per_target: bool


def probe_names() -> list[str]:
    """Registered probe names, sorted."""
    return sorted(PROBE_NAMES)


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
        items = [_coerce("positive", v) for v in value]
        return None if any(v is None for v in items) else items
    return value if value in NORMS else None


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
    if name == "cckl" and params["images"] < 2:
        raise ValueError("probe 'cckl': parameter 'images' must be at least 2 (pairs), got 1")


def validate_probe(name: str, params: Mapping[str, Any]) -> ProbeSpec:
    """Check a probe's name and parameters, fill in defaults.

    Raises:
        ValueError: unknown probe (lists the valid names), unknown parameter (lists the
            allowed ones), or a value of the wrong type or range (says what is allowed).
    """
    if name not in _PARAMS:
        raise ValueError(f"unknown probe {name!r}; valid: {', '.join(probe_names())}")
    schema = _PARAMS[name]
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
    return ProbeSpec(name=name, params=filled, per_target=name in PER_TARGET)


def _check_call(spec: ProbeSpec, target: str | None, threads: int) -> None:
    if spec.per_target and target is None:
        raise ValueError(f"probe {spec.name!r} runs per target; no target given")
    if not spec.per_target and target is not None:
        raise ValueError(f"probe {spec.name!r} runs once per source; got target {target!r}")
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive integer, got {threads!r}")


def run_probe(
    probe: dict[str, Any],
    checkpoint: str,
    source: dict[str, Any],
    target: str | None,
    out_dir: str,
    *,
    data_root: str | None,
    download: bool,
    threads: int,
    seed: int = 0,
) -> dict[str, Any]:
    """Run one probe of ``source`` (and ``target`` for per-target probes).

    ``probe`` = {"name", "params"} (params re-validated, defaults filled); ``checkpoint`` a
    raysweep checkpoint of the source; ``source`` = {"name", "architecture", "dataset",
    "training": {"kind", "attack": {"norm", "eps", ...} | None}}. Data come from the source's
    TEST split (``influence``: the target's train and test splits), as seeded subsets.
    Torch and BLAS/OpenMP pools are limited to ``threads`` for the call (more threads than
    cores slow eigh/t-SNE down 10-70x) and torch's count is restored afterwards.

    Returns {"metrics": {name: float}, "series": {name: [[step, value], ...]},
    "artifacts": [absolute paths of files written under out_dir]}; metrics include
    ``probe/seconds``, the probe's wall time.
    """
    spec = validate_probe(probe["name"], probe.get("params") or {})
    _check_call(spec, target, threads)
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with threadpool_limits(limits=threads):
            model, _ = load_checkpoint(Path(checkpoint))
            ctx = ProbeContext(
                model=model.eval(),
                source=source,
                target=target,
                params=spec.params,
                out_dir=folder.resolve(),
                seed=seed,
                data_root=data_root,
                download=download,
            )
            output = _RUNNERS[spec.name](ctx)
    finally:
        torch.set_num_threads(old_threads)
    output.metrics["probe/seconds"] = time.monotonic() - started
    return output.as_dict()
