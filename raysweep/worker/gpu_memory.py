"""``resources.gpu: auto`` on a worker: the peak GPU memory of one fine-tune trial per kind.

A Ray task holding one whole GPU runs, for each kind the driver sends (one representative
job each, :mod:`raysweep.driver.gpu_packing`), that job for one epoch and one evaluation
through the trial's own code (:func:`raysweep.worker.finetune.run_finetune`): real data, its
uint8 splits staged on the device, its prefix caches, the evaluation at ``EVAL_BATCH``, bf16
and channels_last as the spec asks. The peak is ``torch.cuda.max_memory_reserved`` (what the
caching allocator held, fragmentation included); the card's memory in use before anything
ran (this process's CUDA context and anything else on the card) is reported beside it,
since every packed trial is a process with its own context.
"""

from __future__ import annotations

import gc
import tempfile
from dataclasses import replace
from typing import Any

import torch

from raysweep.protocol import WorkerContext


def measure_trials(jobs: list[dict[str, Any]], context: dict[str, Any]) -> dict[str, Any] | None:
    """``{"total": card bytes, "context": bytes in use at start, "peaks": [bytes per job]}``
    on the first GPU this worker sees, or None when it sees none (the driver falls back).

    A job that does not fit on the whole card reports the card's size as its peak.
    """
    if not torch.cuda.is_available():
        return None
    torch.cuda.init()
    free, total = torch.cuda.mem_get_info(0)
    with tempfile.TemporaryDirectory(prefix="raysweep-gpu-memory-") as scratch:
        ctx = replace(WorkerContext(**context), trials_root=scratch, gpu=True)
        peaks = [trial_peak(job, ctx, total) for job in jobs]
    return {"total": int(total), "context": int(total - free), "peaks": peaks}


def trial_peak(job: dict[str, Any], ctx: WorkerContext, total: int) -> int:
    """Peak bytes reserved while ``job`` runs one epoch and one evaluation on ``cuda:0``."""
    from raysweep.worker.finetune import run_finetune

    short = {**job, "epochs": 1, "eval_epochs": [1], "lr_milestones": []}
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    try:
        run_finetune(short, ctx, lambda row: None)
        peak = int(torch.cuda.max_memory_reserved())
    except torch.cuda.OutOfMemoryError:
        peak = int(total)
    gc.collect()
    torch.cuda.empty_cache()
    return peak
