"""The functions the driver hands to Ray, each loading its worker module by import path.

The driver never imports torch (≈0.5 GiB resident for the CUDA build, for nothing): so it never
imports :mod:`raysweep.worker`. Each entry point here is a named module-level function (Ray
pickles it by reference, Tune names trials after it) that imports the worker module by its
path string when it runs — on the worker.
"""

from __future__ import annotations

import importlib
from typing import Any


def call(target: str, *args: Any) -> Any:
    """Import ``module:function`` and call it with ``args``."""
    module, function = target.split(":")
    return getattr(importlib.import_module(module), function)(*args)


def pretrain_task(
    key: str, config: dict[str, Any], ctx: Any, inbox: Any = None, share: bool = False
) -> dict[str, Any]:
    """Ray task: train or import one source (:func:`raysweep.worker.sources.pretrain_task`)."""
    return call("raysweep.worker.sources:pretrain_task", key, config, ctx, inbox, share)


def probe_task(
    key: str, job: dict[str, Any], source: dict[str, Any], ctx: Any, out_dir: str, inbox: Any = None
) -> dict:
    """Ray task: one probe of one source (:func:`raysweep.worker.probe.probe_task`)."""
    return call("raysweep.worker.probe:probe_task", key, job, source, ctx, out_dir, inbox)


def finetune_trainable(config: dict[str, Any]) -> None:
    """Tune trainable: :func:`raysweep.worker.finetune.finetune_trainable`."""
    call("raysweep.worker.finetune:finetune_trainable", config)


def search_trainable(config: dict[str, Any]) -> None:
    """Tune trainable: :func:`raysweep.worker.search.search_trainable`."""
    call("raysweep.worker.search:search_trainable", config)


def gpu_memory_task(jobs: list[dict[str, Any]], context: dict[str, Any]) -> dict[str, Any] | None:
    """Ray task: peak GPU memory per job (:func:`raysweep.worker.gpu_memory.measure_trials`)."""
    return call("raysweep.worker.gpu_memory:measure_trials", jobs, context)
