"""Does one Tuner slow down per trial as it holds more trials? (why raysweep chunks at 1,000)

    python bench/tune_scale.py [SIZES ...]      # default: 500 2000

For each size N, a fresh process runs ONE plain Tuner over N trivial function trials (one
report each, reused actors, 1 CPU per trial, Tune's loggers off as in raysweep) and prints
seconds per trial and the driver's peak RSS. If seconds per trial grow with N, splitting the
grid into experiments of bounded size keeps the per-trial cost flat.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time


def trivial(config: dict) -> None:
    from ray import tune

    tune.report({"x": config["i"]})


def one(n: int) -> dict[str, float]:
    import ray
    from ray import tune

    ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False, log_to_driver=False)
    started = time.perf_counter()
    tune.Tuner(
        tune.with_resources(trivial, {"cpu": 1}),
        param_space={"i": tune.grid_search(list(range(n)))},
        tune_config=tune.TuneConfig(reuse_actors=True),
        run_config=tune.RunConfig(storage_path=tempfile.mkdtemp(), verbose=0),
    ).fit()
    wall = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"trials": n, "s_per_trial": wall / n, "driver_peak_mib": peak}


def main(argv: list[str]) -> int:
    if argv[:1] == ["--one"]:
        print(json.dumps(one(int(argv[1]))))
        return 0
    env = {**os.environ, "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1", "RAY_AIR_NEW_OUTPUT": "0"}
    for n in [int(a) for a in argv] or [500, 2000]:
        out = subprocess.run(
            [sys.executable, __file__, "--one", str(n)],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        r = json.loads(out.strip().splitlines()[-1])
        print(f"{n:>6} trials in one Tuner: {r['s_per_trial']:.3f} s/trial, "
              f"driver peak {r['driver_peak_mib']:.0f} MiB", flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
