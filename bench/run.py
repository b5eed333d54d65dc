"""raysweep's throughput benchmark: naive vs plain Ray Tune vs raysweep, feature cache, overhead.

    python bench/run.py [--quick] [--root DIR] [--cores N] [--parts micro,overhead] [--epochs E]

1. The micro-sweep (one small_cnn source pretrained on `textures`, fine-tuned on built-in
   `digits`: 2 subset sizes × blocks {0, 1} × 50 seeds = 200 trials; --quick: 10 seeds = 40)
   three ways: (a) naive — one `python` process per trial, sequentially (bench/plain_trial.py);
   (b) plain Ray Tune written like Ray's PyTorch example (bench/plain_tune.py); (c) `raysweep
   launch` (bench/launch_probe.py). (a) and (b) run a fixed, evenly spaced sample of the trials
   (every 5th, every 4th) so the whole bench stays near 30 min; their trials/hour are rates, and
   accuracies are compared on the sampled trials.
2. Head-only trials with and without the feature cache, in one warm single-thread process.
3. Orchestration overhead: `raysweep launch` of near-zero-work trials (1 epoch of a 10-image
   head-only subset on cached features) at 1,000 and 4,000 trials (--quick: 100, 400).

Ends with one line:
bench: naive_x=… plain_tune_x=… cache_x=… acc_diff=… efficiency=… overhead_s=… overhead_growth=…
driver_mib=…
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
PY = sys.executable
SOURCE = {
    "name": "natural",
    "architecture": "small_cnn",
    "dataset": "textures",
    "training": {"kind": "natural"},
}
PRETRAIN = {"epochs": 2, "optimizer": {"lr": 0.05, "batch_size": 128}, "augment": "none"}
NAIVE_EVERY, PLAIN_EVERY = 5, 4


def micro_spec(name: str, seeds: int, epochs: int = 64) -> dict[str, Any]:
    """The micro-sweep; ``epochs`` scales each trial (10: ≈0.26 s, 64: ≈0.95 s of compute here)."""
    rule = {
        "up_to": "all",
        "epochs": epochs,
        "eval_every": epochs // 2,
        "lr_milestones": [epochs * 4 // 5],
    }
    return {
        "name": name,
        "sources": [SOURCE],
        "pretrain": PRETRAIN,
        "targets": ["digits"],
        "subset_sizes": [100, 200],
        "seeds": seeds,
        "blocks": [0, 1],
        "finetune": {
            "optimizer": {"lr": 0.05, "batch_size": 32},
            "head_init": "default",
            "rules": [rule],
        },
        "resources": {"cpu": 1},
    }


def trivial_spec(name: str, trials: int) -> dict[str, Any]:
    """Near-zero work per trial: one epoch of a 10-image head-only subset on cached features."""
    spec = micro_spec(name, trials)
    spec.update(subset_sizes=[10], blocks=[0])
    spec["finetune"]["rules"] = [{"up_to": "all", "epochs": 1, "eval_every": 1}]
    return spec


def write_spec(folder: Path, spec: dict[str, Any]) -> Path:
    path = folder / f"{spec['name']}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def jobs_of(spec_path: Path) -> tuple[list[dict[str, Any]], str]:
    """The fine-tune job configs (with keys) and the source's key, as raysweep plans them."""
    import raysweep

    plan = raysweep.make_plan(raysweep.load_spec(spec_path))
    jobs = [{**job.config, "key": job.key} for job in plan.jobs["finetune"]]
    return jobs, plan.jobs["pretrain"][0].key


def run(args: list[str], env: dict[str, str] | None = None) -> float:
    started = time.perf_counter()
    subprocess.run(args, check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def launch(root: Path, spec_path: Path, out: Path) -> dict[str, Any]:
    """`raysweep launch` through bench/launch_probe.py; its timings and driver peak RSS."""
    argv = [PY, str(HERE / "launch_probe.py"), str(out), "--", "--root", str(root)]
    subprocess.run([*argv, "launch", str(spec_path)], stdout=subprocess.DEVNULL)
    result = json.loads(out.read_text()) if out.is_file() else {}
    if result.get("finetune_s") is None:
        raise RuntimeError(f"raysweep launch of {spec_path} failed: {result.get('error', '?')}")
    if result["exit"] != 0:
        why = result["error"] or "failed jobs"
        print(f"  note: launch exited {result['exit']} after its fine-tune stage ({why})")
    return result


def raysweep_accuracies(root: Path, name: str) -> dict[str, float]:
    from mlflow.tracking import MlflowClient

    from raysweep.schema import KEY_TAG, iter_runs, job_filter, sweep_experiment

    client = MlflowClient(f"sqlite:///{root / name / 'mlflow.db'}")
    runs = iter_runs(client, sweep_experiment(client, name), job_filter("finetune"))
    return {r.data.tags[KEY_TAG]: r.data.metrics["test/acc"] for r in runs}


def naive(jobs: list[dict[str, Any]], checkpoint: Path, work: Path) -> tuple[float, dict]:
    """Sequential, one fresh `python` process per trial: the reference code's way."""
    results, wall = {}, 0.0
    for job in jobs:
        job_file, out = work / f"{job['key']}.json", work / f"{job['key']}.out.json"
        job_file.write_text(json.dumps(job))
        wall += run([PY, str(HERE / "plain_trial.py"), str(job_file), str(checkpoint), str(out)])
        results[job["key"]] = json.loads(out.read_text())["acc"]
    return wall, results


def plain_tune(jobs: list[dict[str, Any]], checkpoint: Path, work: Path) -> tuple[float, dict]:
    jobs_file, out = work / "plain_jobs.json", work / "plain_out.json"
    jobs_file.write_text(json.dumps(jobs))
    env = {**os.environ, "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "0"}
    run([PY, str(HERE / "plain_tune.py"), str(jobs_file), str(checkpoint), str(out),
         str(work / "tune")], env=env)  # fmt: skip
    data = json.loads(out.read_text())
    return data["wall_s"], data["results"]


def warm(
    jobs: list[dict[str, Any]], store: Path, work: Path, mode: str, tag: str = ""
) -> dict[str, Any]:
    """Each job's warm single-thread compute (bench/warm_trials.py) and final accuracy."""
    jobs_file, out = work / f"warm_{mode}{tag}_jobs.json", work / f"warm_{mode}{tag}.json"
    jobs_file.write_text(json.dumps(jobs))
    run([PY, str(HERE / "warm_trials.py"), str(jobs_file), str(store), str(out), "--mode", mode])
    return json.loads(out.read_text())


def mean_gap(a: dict[str, float], b: dict[str, float]) -> float:
    """|mean(a) − mean(b)| in points over the trials both ran."""
    common = sorted(set(a) & set(b))
    if not common:
        return float("nan")
    return abs(statistics.fmean(a[k] for k in common) - statistics.fmean(b[k] for k in common))


def per_hour(trials: int, seconds: float) -> float:
    return 3600.0 * trials / max(seconds, 1e-9)


def compare_runners(
    root: Path, work: Path, quick: bool, say: Any, epochs: int = 64
) -> dict[str, Any]:
    """Part 1: the micro-sweep through raysweep, naive processes and plain Tune."""
    spec_path = write_spec(work, micro_spec("bench_micro", 10 if quick else 50, epochs))
    jobs, source_key = jobs_of(spec_path)
    checkpoint = root / "store" / "checkpoints" / f"{source_key}.pt"
    say(f"[1] micro-sweep: {len(jobs)} trials (the launch also pretrains the source)")
    c = launch(root, spec_path, work / "launch_micro.json")
    rs_acc = raysweep_accuracies(root, "bench_micro")
    rs_rate = per_hour(len(jobs), c["finetune_s"])
    say(f"  (c) raysweep   {len(jobs)} trials, fine-tune stage {c['finetune_s']:.1f} s "
        f"(launch {c['total_s']:.1f} s): {rs_rate:,.0f} trials/h")  # fmt: skip
    sample = jobs[::NAIVE_EVERY]
    n_wall, n_acc = naive(sample, checkpoint, work)
    n_rate = per_hour(len(sample), n_wall)
    say(f"  (a) naive      {len(sample)} trials in {n_wall:.1f} s: {n_rate:,.0f} trials/h")
    sample = jobs[::PLAIN_EVERY]
    p_wall, p_acc = plain_tune(sample, checkpoint, work)
    p_rate = per_hour(len(sample), p_wall)
    say(f"  (b) plain Tune {len(sample)} trials in {p_wall:.1f} s: {p_rate:,.0f} trials/h")
    gaps = mean_gap(rs_acc, n_acc), mean_gap(rs_acc, p_acc)
    say(f"  mean accuracy: raysweep {statistics.fmean(rs_acc.values()):.2f} %; "
        f"|Δ| vs naive {gaps[0]:.2f}, vs plain Tune {gaps[1]:.2f} points")  # fmt: skip
    return {
        "jobs": jobs,
        "finetune_s": c["finetune_s"],
        "naive_x": rs_rate / n_rate,
        "plain_tune_x": rs_rate / p_rate,
        "acc_diff": max(gaps),
    }


def efficiency(root: Path, work: Path, part1: dict[str, Any], cores: int, say: Any) -> float:
    """Σ of each trial's warm single-thread compute ÷ (raysweep's stage wall × cores)."""
    compute = sum(warm(part1["jobs"], root / "store", work, "trial")["seconds"].values())
    value = compute / (part1["finetune_s"] * cores)
    say(f"  efficiency: Σ warm 1-thread compute {compute:.1f} s / "
        f"({part1['finetune_s']:.1f} s × {cores} cores) = {value:.2f}")  # fmt: skip
    return value


def feature_cache(root: Path, work: Path, jobs: list[dict[str, Any]], say: Any) -> float:
    """Part 2: head-only trials with the store's features and with no caching at all."""
    head = [job for job in jobs if job["blocks"] == 0]
    cached = warm(head, root / "store", work, "cached")
    uncached = warm(head, root / "store", work, "nocache")
    with_s, without_s = sum(cached["seconds"].values()), sum(uncached["seconds"].values())
    speedup = without_s / max(with_s, 1e-9)
    gap = mean_gap(cached["acc"], uncached["acc"])
    say(f"[2] head-only ×{len(head)}: cached {with_s:.2f} s, uncached {without_s:.2f} s → "
        f"{speedup:.1f}×; |Δ mean acc| {gap:.2f} points")  # fmt: skip
    return speedup


def overhead(root: Path, work: Path, sizes: tuple[int, int], cores: int, say: Any) -> dict:
    per_trial: list[float] = []
    peak = 0.0
    for n in sizes:
        spec_path = write_spec(work, trivial_spec(f"bench_trivial_{n}", n))
        jobs, _ = jobs_of(spec_path)
        c = launch(root, spec_path, work / f"launch_trivial_{n}.json")
        compute = warm(jobs[:50], root / "store", work, "trial", f"_trivial{n}")["seconds"]
        work_s = statistics.fmean(compute.values())
        per = c["finetune_s"] / n - work_s / cores
        per_trial.append(per)
        peak = max(peak, c["driver_peak_mib"])
        say(f"[3] {n:>5} trivial trials: fine-tune stage {c['finetune_s']:.1f} s, compute "
            f"{work_s * 1000:.1f} ms/trial → overhead {per:.3f} s/trial; driver peak "
            f"{c['driver_peak_mib']:.0f} MiB")  # fmt: skip
    return {
        "overhead_s": per_trial[0],
        "overhead_growth": per_trial[1] / max(per_trial[0], 1e-9),
        "driver_mib": peak,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes (about 5 min)")
    parser.add_argument("--root", type=Path, help="runs folder (default: a new temp folder)")
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--parts",
        default="micro,overhead",
        help="comma-separated parts to run: micro (1 and 2), overhead (3); default both",
    )
    parser.add_argument(
        "--epochs",
        type=int,
        default=64,
        help="fine-tune epochs per micro-sweep trial (64, the default: ≈0.95 s each, the size of "
        "the issue's reference trials; 10: ≈0.26 s, the harder case for efficiency)",
    )
    args = parser.parse_args(argv)
    root = args.root or Path(tempfile.mkdtemp(prefix="raysweep-bench-"))
    work = root / "bench"
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    def say(line: str) -> None:
        print(f"[{time.perf_counter() - started:6.0f} s] {line}", flush=True)

    say(f"root {root}, {args.cores} cores{' (quick)' if args.quick else ''}")
    nan = float("nan")
    f = dict.fromkeys(("naive_x", "plain_tune_x", "acc_diff", "efficiency", "cache_x"), nan)
    if "micro" in args.parts:
        part1 = compare_runners(root, work, args.quick, say, args.epochs)
        f.update({k: part1[k] for k in ("naive_x", "plain_tune_x", "acc_diff")})
        f["efficiency"] = efficiency(root, work, part1, args.cores, say)
        f["cache_x"] = feature_cache(root, work, part1["jobs"], say)
    f.update(dict.fromkeys(("overhead_s", "overhead_growth", "driver_mib"), nan))
    if "overhead" in args.parts:
        sizes = (100, 400) if args.quick else (1000, 4000)
        f.update(overhead(root, work, sizes, args.cores, say))
    print(
        f"bench: naive_x={f['naive_x']:.1f} plain_tune_x={f['plain_tune_x']:.1f} "
        f"cache_x={f['cache_x']:.1f} acc_diff={f['acc_diff']:.2f} "
        f"efficiency={f['efficiency']:.2f} overhead_s={f['overhead_s']:.3f} "
        f"overhead_growth={f['overhead_growth']:.2f} driver_mib={f['driver_mib']:.0f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
