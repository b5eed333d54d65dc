"""A probe task on a Ray worker: one probe of one stored source
(:func:`raysweep.probes.run.run_probe`)."""

from __future__ import annotations

from typing import Any

from raysweep.probes.run import run_probe
from raysweep.protocol import EventSender, WorkerContext, node_identity


def probe_task(
    key: str,
    job: dict[str, Any],
    source: dict[str, Any],
    ctx: WorkerContext,
    out_dir: str,
    inbox: Any = None,
) -> dict[str, Any]:
    """Ray task body: run the job's probe on its source checkpoint; say when it starts (so its
    run's duration is the probe's) and which node ran it."""
    events = EventSender(inbox, key)
    events.started()
    result = run_probe(
        job["probe"],
        str(ctx.store.verified_checkpoint(job["source_key"])),
        source,
        job.get("target"),
        out_dir,
        data_root=ctx.data_root,
        download=ctx.download,
        threads=ctx.threads,
        # Per-subset probes only (linear_probe); the other probes' configs have none of these.
        seed=job.get("seed", 0),
        subset_size=job.get("subset_size"),
        normalization=job.get("normalization", "source"),
    )
    events.flush()
    return {**result, **node_identity()}
