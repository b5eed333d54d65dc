"""The search_plots family on search trials logged as the driver logs them (a real sqlite
store): Optuna's own matplotlib plots, headless, quiet, and without side effects."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag

from raysweep.analysis.search_plots import search_plots
from raysweep.analysis.sweepdata import NotSupported, SweepData

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SPACE = {
    "params": [
        {"name": "lr", "distribution": "loguniform", "low": 1e-3, "high": 0.3, "log": True},
        {"name": "weight_decay", "distribution": "uniform", "low": 0.0, "high": 0.01, "log": False},
    ]
}
GROUPS = {  # group -> (source, training, norm, eps, hyperparameters searched)
    "g1": ("linf_2", "pgd", "linf", 2 / 255, SPACE),
    "g2": ("nat", "natural", "", 0.0, {"params": SPACE["params"][:1]}),
}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Six trials of a two-hyperparameter group and four of a one-hyperparameter group."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('search')}/mlflow.db"
    client = MlflowClient(uri)
    experiment = client.create_experiment("raysweep/srch")
    rng = np.random.default_rng(0)
    for group, (source, training, norm, eps, space) in GROUPS.items():
        for trial in range(6 if group == "g1" else 4):
            lr, wd = 10 ** rng.uniform(-3, np.log10(0.3)), rng.uniform(0, 0.01)
            params = {
                "source": source,
                "source_training": training,
                "source_norm": norm,
                "source_eps": f"{eps:g}",
                "source_architecture": "small_cnn",
                "source_dataset": "shapes",
                "target": "digits",
                "subset_size": "100",
                "blocks": "1",
                "search_group": group,
                "config": json.dumps({"group": group, "trial": trial, "space": space}),
                "search.lr": f"{lr:.6g}",
                "search.optuna_trial": str(trial),
            }
            if len(space["params"]) == 2:
                params["search.weight_decay"] = f"{wd:.6g}"
            tags = {"raysweep.sweep": "srch", "raysweep.role": "job", "raysweep.stage": "search"}
            tags["raysweep.key"] = f"{group}-{trial}"
            run_id = client.create_run(experiment, tags=tags).info.run_id
            client.log_batch(
                run_id,
                metrics=[Metric("search/value", 50.0 + 100 * lr + rng.normal(), 0, 0)],
                params=[Param(k, v) for k, v in params.items()],
                tags=[RunTag(k, v) for k, v in params.items()],
            )
            client.set_terminated(run_id)
    return uri


def test_search_plots_use_optuna_quietly_and_headless(store: str, tmp_path: Path) -> None:
    from optuna.exceptions import ExperimentalWarning

    before = dict(matplotlib.rcParams)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        section = search_plots(SweepData(store, "srch"), tmp_path)
    # Optuna's plotting functions are experimental: their warning stays inside the family.
    assert not [w for w in caught if issubclass(w.category, ExperimentalWarning)]
    # Optuna applies its ggplot style through pyplot: undone once the family returns.
    assert dict(matplotlib.rcParams) == before
    from matplotlib import pyplot as plt

    assert plt.get_fignums() == []  # every pyplot figure Optuna made was closed
    names = sorted(p.name for p in section.paths)
    assert names == [
        "search_g1.pdf",
        "search_g1.png",
        "search_g1_importances.pdf",
        "search_g1_importances.png",
        "search_g2.pdf",  # one hyperparameter: its importance is 1 by definition, no figure
        "search_g2.png",
        "search_importances.csv",
        "search_trials.csv",
    ]
    for path in section.paths:
        data = path.read_bytes()
        assert data.startswith({".png": PNG_MAGIC, ".pdf": b"%PDF"}.get(path.suffix, b""))
    importances = pd.read_csv(tmp_path / "search_importances.csv")
    g1 = importances[importances["group"] == "g1"]
    assert set(g1["param"]) == {"lr", "weight_decay"} and g1["importance"].sum() == pytest.approx(1)
    assert importances[importances["group"] == "g2"]["importance"].tolist() == [1.0]
    trials = pd.read_csv(tmp_path / "search_trials.csv")
    assert trials.groupby("group").size().to_dict() == {"g1": 6, "g2": 4}
    # Groups are named by the source's training, not by its spec name.
    assert "ℓ∞ ε=2/255 → digits" in section.body and "natural → digits" in section.body
    assert "6 trials, best validation accuracy" in section.body


def test_importances_are_the_same_run_after_run(store: str, tmp_path: Path) -> None:
    search_plots(SweepData(store, "srch"), tmp_path / "a")
    search_plots(SweepData(store, "srch"), tmp_path / "b")
    a, b = (pd.read_csv(tmp_path / d / "search_importances.csv") for d in "ab")
    pd.testing.assert_frame_equal(a, b)


def test_without_search_trials_it_says_what_to_add(store: str, tmp_path: Path) -> None:
    with pytest.raises(NotSupported, match="add a `search:` section to the spec"):
        search_plots(SweepData(store, "no_such_sweep"), tmp_path)
