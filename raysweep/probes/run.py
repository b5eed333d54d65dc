"""``run_probe``: what one probe task runs on its worker — a plain function, no Ray, no MLflow.

It loads the source checkpoint, builds the runner's :class:`~raysweep.probes.context.ProbeContext`
and calls the runner the table (:data:`raysweep.probes.table.PROBES`) names, then hands back
JSON-able metrics, series and artifact paths for the driver to record.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from threadpoolctl import threadpool_limits

from raysweep.models.checkpoints import load_checkpoint
from raysweep.probes.context import ProbeContext, ProbeOutput
from raysweep.probes.table import PROBES, ProbeSpec, validate_probe


def runner(name: str) -> Callable[[ProbeContext], ProbeOutput]:
    """The runner function of probe ``name``, imported from the path the table gives."""
    module, function = PROBES[name].runner.split(":")
    return getattr(importlib.import_module(module), function)


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
    subset_size: int | None = None,
    normalization: str = "source",
) -> dict[str, Any]:
    """Run one probe of ``source`` (and ``target`` for per-target probes).

    ``probe`` = {"name", "params"} (params re-validated, defaults filled); ``checkpoint`` a
    raysweep checkpoint of the source; ``source`` = {"name", "architecture", "dataset",
    "training": {"kind", "attack": {"norm", "eps", ...} | None}}. Data come from the source's
    TEST split (``influence``: the target's train and test splits), as seeded subsets.
    A per-subset probe (``linear_probe``) works on the target's training subset of
    ``subset_size`` images (None: all) drawn with ``seed`` as the fine-tune trials draw it,
    under the fine-tuning ``normalization``. Torch and BLAS/OpenMP pools are limited to
    ``threads`` for the call (more threads than cores slow eigh/t-SNE down 10-70x) and torch's
    count is restored afterwards.

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
                subset_size=subset_size,
                normalization=normalization,
            )
            output = runner(spec.name)(ctx)
    finally:
        torch.set_num_threads(old_threads)
    output.metrics["probe/seconds"] = time.monotonic() - started
    return output.as_dict()
