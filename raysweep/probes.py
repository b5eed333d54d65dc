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

Runners live in :mod:`raysweep.probe_info` and :mod:`raysweep.probe_images`; names, parameter
schemas and validation in the torch-free :mod:`raysweep.probe_spec` (the driver plans with it).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from threadpoolctl import threadpool_limits

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
from raysweep.probe_spec import PER_TARGET, PROBE_NAMES, ProbeSpec, probe_names, validate_probe

__all__ = ["PER_TARGET", "PROBE_NAMES", "ProbeSpec", "probe_names", "run_probe", "validate_probe"]

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
