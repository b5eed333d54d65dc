"""The linear probe reaches the optimum of its convex problem; it is planned per grid subset."""

from __future__ import annotations

import numpy as np
import yaml

from raysweep.measures.linear_probe import cv_folds, fit_linear_probe
from raysweep.plan import make_plan
from raysweep.spec import parse_spec

CS = (0.01, 0.1, 1.0, 10.0)


def blobs(n: int, seed: int, spread: float) -> tuple[np.ndarray, np.ndarray]:
    """4 Gaussian classes in 8 dimensions, means 3 apart on the axes."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 4
    x = rng.normal(scale=spread, size=(n, 8))
    x[np.arange(n), y] += 3.0
    return x, y


def test_separable_classes_are_learned_exactly() -> None:
    x, y = blobs(80, 0, spread=0.1)
    xt, yt = blobs(200, 1, spread=0.1)
    result = fit_linear_probe(x, y, xt, yt, cs=CS, folds=4, seed=0)
    assert result.test_acc == 100.0 and result.train_acc == 100.0 and result.converged


def test_the_fit_is_the_optimum_of_its_objective() -> None:
    """KKT: at the optimum of C·Σ CE(Wz + b) + ½‖W‖², C·(P − Y)ᵀZ + W = 0 and Σ(P − Y) = 0."""
    x, y = blobs(120, 2, spread=1.5)  # overlapping: a finite optimum with errors
    xt, yt = blobs(400, 3, spread=1.5)
    r = fit_linear_probe(x, y, xt, yt, cs=CS, folds=3, seed=0)
    z = (x - r.mean) / r.scale
    logits = z @ r.weight.T + r.bias
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    residual = p - np.eye(4)[y]
    assert np.abs(r.c * residual.T @ z + r.weight).max() < 1e-3
    assert np.abs(residual.sum(0)).max() < 1e-3
    assert 60.0 < r.test_acc < 100.0 and r.c in CS
    again = fit_linear_probe(x, y, xt, yt, cs=CS, folds=3, seed=0)
    assert again.test_acc == r.test_acc and again.c == r.c  # deterministic in the seed


def test_folds_respect_small_classes() -> None:
    y = np.array([0] * 10 + [1] * 3 + [2])
    assert cv_folds(y, 5) == 3  # the second-largest class has 3 images
    assert cv_folds(np.array([0, 1, 2, 3]), 5) == 2


def test_planned_once_per_grid_subset_with_the_trials_subset_and_seed() -> None:
    spec = yaml.safe_load(open("search_spaces/quickstart.yaml"))
    spec["probes"] = [{"name": "distance"}, {"name": "linear_probe", "folds": 3}]
    plan = make_plan(parse_spec(spec))
    probes = [j for j in plan.jobs["probe"] if j.config["probe"]["name"] == "linear_probe"]
    cells = {(j.config["source_key"], j.config["target"], j.config["subset_size"],
              j.config["seed"]) for j in plan.jobs["finetune"]}  # fmt: skip
    assert len(probes) == len(cells) == 81
    assert {(j.config["source_key"], j.config["target"], j.config["subset_size"],
             j.config["seed"]) for j in probes} == cells  # fmt: skip
    assert all(j.config["normalization"] == "source" for j in probes)
    assert probes[0].axes["subset_size"] == "100" and probes[0].axes["seed"] == "20000000"
    assert probes[0].name == "linear_probe natural→shapes_outline n100 s20000000"
    distance = [j for j in plan.jobs["probe"] if j.config["probe"]["name"] == "distance"]
    assert all("seed" not in j.config for j in distance) and len(distance) == 9
