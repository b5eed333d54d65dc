"""bench (b): the same trials on plain Ray Tune, one trial per job, as Ray's PyTorch example.

    python bench/plain_tune.py JOBS.json CHECKPOINT.pt OUT.json STORAGE_DIR

One Tuner over ``tune.grid_search(jobs)``, 1 CPU per trial, Tune's default actor handling,
each trial loading the checkpoint and the data itself (bench/plain_trial.py) and reporting its
test accuracy at every evaluation epoch. Writes {"wall_s", "results": {key: acc}}.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

BENCH = str(Path(__file__).resolve().parent)


def trainable(config: dict[str, Any]) -> None:
    sys.path.insert(0, BENCH)  # Tune's workers start elsewhere; plain_trial sits beside us
    from plain_trial import train_one
    from ray import tune

    result = train_one(config["job"], config["checkpoint"])
    for epoch, acc in sorted(result["evals"].items()):
        tune.report({"epoch": epoch, "acc": acc, "key": config["job"]["key"]})


def main(argv: list[str]) -> int:
    jobs_path, checkpoint, out, storage = argv
    jobs = json.loads(Path(jobs_path).read_text())
    import ray
    from ray import tune

    ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False, log_to_driver=False)
    started = time.perf_counter()  # from the Tuner on, as raysweep's fine-tune stage is timed
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": 1}),
        param_space={"job": tune.grid_search(jobs), "checkpoint": checkpoint},
        run_config=tune.RunConfig(storage_path=storage, name="plain", verbose=0),
    )
    grid = tuner.fit()
    results = {r.metrics["key"]: r.metrics["acc"] for r in grid if r.metrics}
    wall = time.perf_counter() - started
    Path(out).write_text(json.dumps({"wall_s": wall, "results": results}))
    ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
