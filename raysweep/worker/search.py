"""A search trial on a Ray worker: the group's base fine-tune with the sampled values, scored
on a validation split of its training subset (:func:`raysweep.data.validation_split`)."""

from __future__ import annotations

from typing import Any

from ray import tune

from raysweep.plan.search import apply_values
from raysweep.protocol import ERROR_KEY, WorkerContext
from raysweep.worker.finetune import finetune_job


def search_trainable(config: dict[str, Any]) -> None:
    """Tune trainable: config = {"job": the group's base job, "params": sampled values,
    "context": WorkerContext}.

    A trial that fails as a job (a non-finite loss from too large a learning rate) scores 0 %
    validation accuracy, the worst possible, so that TPE learns to avoid that region.
    """
    job = apply_values(config["job"], config["params"])
    job["key"] = f"search-{config['job']['group']}-{tune.get_context().get_trial_id()}"

    def report(row: dict[str, Any]) -> None:
        if ERROR_KEY in row:
            row = {**row, "val/acc": 0.0}
        tune.report(row)

    finetune_job(job, WorkerContext(**config["context"]), report)
