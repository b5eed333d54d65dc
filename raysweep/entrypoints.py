"""What the driver hands to Ray, without importing torch.

The driver only schedules and records; importing torch there costs ≈0.5 GiB of resident memory
(the CUDA build) for nothing. So the functions Ray runs on workers are named here, each
importing :mod:`raysweep.workers` or :mod:`raysweep.finetune_worker` (torch, models, data) when
it runs — on the worker. The result keys workers report, the worker context and the node
identity live here too: the driver reads them, the workers write them.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raysweep.store import Store

#: A job failure a worker reports instead of raising (the driver marks the run FAILED).
ERROR_KEY = "raysweep_error"
#: Where a job ran, in its result: the driver tags the job's run with them (tracking.NODE_TAG).
NODE_KEY = "raysweep_node"
HOST_KEY = "raysweep_host"


@dataclass(frozen=True)
class WorkerContext:
    """What every worker needs besides its job: where data and the store are, how many threads."""

    store_root: str
    data_root: str | None
    download: bool
    threads: int
    #: Where trials keep their resumable state and attempt logs (the sweep folder's trials/).
    trials_root: str
    #: A trial saves its state when this many seconds passed since its last save.
    checkpoint_every_s: float = 60.0
    #: resources.gpu > 0: fine-tune on the GPU Ray assigned (CPU if the worker sees none).
    gpu: bool = False
    #: resources.bf16 / resources.channels_last (see
    #: :func:`raysweep.finetune_worker.speed_settings`).
    bf16: bool = False
    channels_last: bool = False

    @property
    def store(self) -> Store:
        return Store(Path(self.store_root))

    def trial_dir(self, key: str) -> Path:
        return Path(self.trials_root) / key


def node_identity() -> dict[str, str]:
    """The Ray node id and hostname of this process ("none" outside Ray)."""
    import ray

    node = ray.get_runtime_context().get_node_id() if ray.is_initialized() else "none"
    return {NODE_KEY: node, HOST_KEY: socket.gethostname()}


def pretrain_task(key: str, config: dict[str, Any], ctx: WorkerContext) -> dict[str, Any]:
    """Ray task body: train or import one source (:func:`raysweep.workers.pretrain_source`),
    plus the node it ran on."""
    from raysweep.workers import pretrain_source

    return {**pretrain_source(key, config, ctx), **node_identity()}


def finetune_trainable(config: dict[str, Any]) -> None:
    """Ray Tune function trainable: :func:`raysweep.finetune_worker.finetune_trainable`."""
    from raysweep.finetune_worker import finetune_trainable as run

    run(config)
