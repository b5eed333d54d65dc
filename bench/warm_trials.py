"""Each trial's own compute: raysweep's trial function run alone, warm, on one thread.

    python bench/warm_trials.py JOBS.json STORE_DIR OUT.json [--mode cached|nocache|trial]

``trial`` (default): the trial as raysweep runs it (store feature cache warm) — the numerator
of the efficiency figure. ``nocache``: the frozen network runs every batch (no store features,
no in-trial prefix cache) — the "uncached" side of cache_x. ``cached``: same as ``trial``.
One warm-up trial runs first (data set, checkpoint and features in memory), untimed.
Writes {"seconds": {key: s}, "acc": {key: final test/acc}}.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def main(argv: list[str]) -> int:
    jobs_path, store, out, *rest = argv
    mode = rest[1] if rest[:1] == ["--mode"] else "trial"
    import torch

    torch.set_num_threads(1)  # the bench measures single-thread compute; never library code
    from raysweep.protocol import WorkerContext
    from raysweep.train import finetuning
    from raysweep.worker import features
    from raysweep.worker import finetune as finetune_worker

    if mode == "nocache":
        features.head_inputs = lambda *a, **k: (None, None)  # type: ignore[assignment]
        finetuning.CACHE_BYTES = 0
    jobs = json.loads(Path(jobs_path).read_text())
    seconds: dict[str, float] = {}
    acc: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="warm-trials-") as trials:
        ctx = WorkerContext(store, None, False, 1, trials, checkpoint_every_s=1e9)
        for i, job in enumerate([jobs[0], *jobs]):
            rows: list[dict[str, Any]] = []
            started = time.perf_counter()
            finetune_worker.finetune_job(job, ctx, rows.append)
            if i > 0:
                seconds[job["key"]] = time.perf_counter() - started
                acc[job["key"]] = rows[-1]["test/acc"]
    Path(out).write_text(json.dumps({"seconds": seconds, "acc": acc}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
