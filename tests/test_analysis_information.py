"""Information and CCKL figure families on hand-made frames with known answers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from raysweep.analysis.cckl import (
    cckl_vs_test_loss,
    epoch_points,
    kl_g1_relerr_vs_eps,
    source_points,
)
from raysweep.analysis.families import family_names
from raysweep.analysis.information import (
    TRAINING_PANELS,
    eps_groups,
    fisher_vs_eps,
    information_during_training,
)
from raysweep.analysis.labels import eps_text, source_label
from raysweep.analysis.sweepdata import NotSupported, SweepData

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SOURCES = [  # name, training, norm, eps, mean log-variance
    ("nat", "natural", "", 0.0, -9.0),
    ("l2_0.5", "pgd", "l2", 0.5, -8.5),
    ("l2_1", "pgd", "l2", 1.0, -8.0),
    ("linf_8", "pgd", "linf", 8 / 255, -7.5),
    ("noise", "gaussian", "", math.nan, -6.0),
]


def sweep_data(tmp_path: Path) -> SweepData:
    """A SweepData whose frames the test sets; its URI points into tmp_path, never queried."""
    return SweepData(f"sqlite:///{tmp_path}/unused.db", "s")


def source_row(name: str, training: str, norm: str, eps: float) -> dict:
    return {
        "source": name,
        "source_training": training,
        "source_norm": norm,
        "source_eps": eps,
        "source_architecture": "small_cnn",
        "source_dataset": "shapes",
    }


def fisher_probes() -> pd.DataFrame:
    rows = []
    for i, (name, training, norm, eps, logvar) in enumerate(SOURCES):
        row = {**source_row(name, training, norm, eps), "probe": "weight_fisher"}
        row.update(run_id=f"r{i}", end_time=100 + i, probe_fisher_mean_logvar=logvar)
        row["probe_fisher_logvar_stem.conv1"] = logvar - 1.0
        rows.append(row)
    # An older run of l2_1 (params changed since): replaced by the newer one.
    rows.append({**rows[2], "run_id": "old", "end_time": 1, "probe_fisher_mean_logvar": 0.0})
    rows.append({**source_row("nat", "natural", "", 0.0), "probe": "cckl", "run_id": "c",
                 "end_time": 5, "probe_cckl": 1.0})  # fmt: skip
    return pd.DataFrame(rows)


def test_labels_show_kind_norm_and_eps() -> None:
    assert eps_text(8 / 255, "linf") == "8/255" and eps_text(0.5, "l2") == "0.5"
    assert source_label(source_row("l2_1", "pgd", "l2", 1.0)) == "ℓ₂ ε=1"
    assert source_label(source_row("nat", "natural", "", 0.0)) == "natural"
    assert set(family_names()) >= {"fisher_vs_eps", "tsne_embeddings", "kl_g1_relerr_vs_eps"}


def test_eps_groups_put_natural_at_zero_in_every_norm() -> None:
    groups = eps_groups(fisher_probes().drop_duplicates("source", keep="first"))
    assert set(groups) == {("pgd", "l2"), ("pgd", "linf")}
    assert groups[("pgd", "l2")].set_index("source")["source_eps"].to_dict() == {
        "nat": 0.0,
        "l2_0.5": 0.5,
        "l2_1": 1.0,
    }
    assert list(groups[("pgd", "linf")]["source"]) == ["nat", "linf_8"]


def test_fisher_vs_eps_writes_values_per_eps(tmp_path: Path) -> None:
    data = sweep_data(tmp_path)
    data.__dict__["probes"] = fisher_probes()
    section = fisher_vs_eps(data, tmp_path / "out")
    table = pd.read_csv(tmp_path / "out" / "fisher_vs_eps.csv")
    got = dict(zip(table["source"], table["mean_logvar"], strict=True))
    # Natural first, then by kind, norm, ε; the newest l2_1 run; Gaussian kept in the table.
    assert list(table["source"]) == ["nat", "noise", "l2_0.5", "l2_1", "linf_8"]
    assert got == {name: logvar for name, _, _, _, logvar in SOURCES}
    assert table.set_index("source").loc["l2_1", "logvar/stem.conv1"] == -9.0
    for png in (p for p in section.paths if p.suffix == ".png"):
        assert png.read_bytes()[:8] == PNG_MAGIC and png.with_suffix(".pdf").exists()
    assert "| ℓ₂ ε=1 | -8.000 |" in section.body
    assert "| Gaussian noise | -6.000 |" in section.body
    assert "fisher_logvar_vs_eps.png" in section.body


def test_fisher_figure_lines_are_the_means_per_eps(tmp_path: Path) -> None:
    from raysweep.analysis.information import fisher_figures, fisher_table

    rows = fisher_probes().sort_values("end_time").drop_duplicates("source", keep="last")
    figures = fisher_figures(fisher_table(rows[rows["probe"] == "weight_fisher"]))
    l2, linf = figures["fisher_logvar_vs_eps"].get_axes()[:2]
    line = l2.get_lines()[0]
    assert list(line.get_xdata()) == [0.0, 0.5, 1.0]
    assert list(line.get_ydata()) == [-9.0, -8.5, -8.0]
    assert list(linf.get_lines()[0].get_ydata()) == [-9.0, -7.5]
    assert "ℓ₂" in l2.get_xlabel() and "ln σ²" in l2.get_ylabel()
    layer_axis = figures["fisher_layer_logvar_vs_eps"].get_axes()[0]
    assert list(layer_axis.get_lines()[0].get_ydata()) == [-10.0, -9.5, -9.0]


def test_fisher_not_supported_without_weight_fisher_runs(tmp_path: Path) -> None:
    data = sweep_data(tmp_path)
    probes = fisher_probes()
    data.__dict__["probes"] = probes[probes["probe"] == "cckl"]
    with pytest.raises(NotSupported, match="weight_fisher"):
        fisher_vs_eps(data, tmp_path)
    data = sweep_data(tmp_path)
    data.__dict__["probes"] = pd.DataFrame({"run_id": pd.Series(dtype=object)})
    with pytest.raises(NotSupported) as info:
        fisher_vs_eps(data, tmp_path)
    # Said in the user's terms: which probe to add, not which column is missing.
    assert "add a `weight_fisher` probe to the spec" in str(info.value)
    assert "probe_" not in str(info.value) and "column" not in str(info.value)


def history(values: dict[str, list[float]]) -> pd.DataFrame:
    """A ``SweepData.history`` frame: per source, value i at epoch i + 1."""
    rows = []
    for name, series in values.items():
        training = "natural" if name == "nat" else "pgd"
        info = source_row(
            name, training, "" if name == "nat" else "l2", 0.0 if name == "nat" else 1
        )
        for epoch, value in enumerate(series, start=1):
            rows.append({"run_id": f"run-{name}", **info, "step": epoch, "value": value})
    return pd.DataFrame(rows)


def training_data(tmp_path: Path, metrics: dict[str, dict[str, list[float]]]) -> SweepData:
    data = sweep_data(tmp_path)
    names = sorted({s for m in metrics.values() for s in m})
    data.__dict__["pretrain"] = pd.DataFrame(
        [{"run_id": f"run-{n}", "end_time": 1, **source_row(n, "natural", "", 0.0)} for n in names]
    )
    for metric, _, _ in TRAINING_PANELS:
        frame = history(metrics[metric]) if metric in metrics else history({})
        data._histories[("pretrain", metric)] = frame
    return data


def test_information_during_training_plots_every_logged_metric(tmp_path: Path) -> None:
    fnorm = {"nat": [4.0, 2.0, 1.0], "l2": [1.0, 0.5, 0.25]}
    acc = {"nat": [50.0, 60.0, 70.0], "l2": [40.0, 45.0, 50.0]}
    data = training_data(tmp_path, {"train/fx_fnorm": fnorm, "test/acc": acc})
    section = information_during_training(data, tmp_path)
    curves = pd.read_csv(tmp_path / "information_during_training.csv")
    assert set(curves["metric"]) == {"train/fx_fnorm", "test/acc"}
    got = curves[(curves["metric"] == "train/fx_fnorm") & (curves["source"] == "l2")]
    assert list(got["epoch"]) == [1, 2, 3] and list(got["value"]) == fnorm["l2"]
    png = next(p for p in section.paths if p.suffix == ".png")
    assert png.read_bytes()[:8] == PNG_MAGIC


def test_information_during_training_needs_tracking(tmp_path: Path) -> None:
    data = training_data(tmp_path, {"test/acc": {"nat": [1.0, 2.0]}})
    with pytest.raises(NotSupported, match="set `pretrain.track_information`") as info:
        information_during_training(data, tmp_path)
    assert "train/" not in str(info.value)  # no metric names


def test_cckl_vs_test_loss_pearson_equals_scipy(tmp_path: Path) -> None:
    loss = {"nat": [2.0, 1.5, 1.2, 1.0, 0.9], "l2": [2.2, 1.9, 1.4, 1.3, 1.25]}
    cckl = {"nat": [0.5, 1.4, 2.0, 2.1, 2.6], "l2": [0.3, 0.9, 1.0, 1.6, 1.7]}
    data = training_data(tmp_path, {"test/loss": loss, "train/cckl": cckl})
    probes = pd.DataFrame(
        [
            {
                "run_id": f"p{i}",
                "end_time": i,
                "probe": "cckl",
                "probe_cckl": value,
                **source_row(name, "pgd", "l2", 1.0),
            }  # fmt: skip
            for i, (name, value) in enumerate([("nat", 2.7), ("l2", 1.8), ("orphan", 9.0)])
        ]
    )
    data.__dict__["probes"] = probes
    data.__dict__["pretrain"] = data.pretrain.assign(test_loss=[0.95, 1.2])  # sorted: l2, nat
    section = cckl_vs_test_loss(data, tmp_path)
    corr = pd.read_csv(tmp_path / "cckl_correlation.csv").set_index("source")
    for name in ("nat", "l2"):
        r, p = scipy_stats.pearsonr(loss[name], cckl[name])
        assert corr.loc[name, "pearson_r"] == pytest.approx(r, abs=1e-12)
        assert corr.loc[name, "pearson_p"] == pytest.approx(p, abs=1e-12)
        assert corr.loc[name, "pearson_low"] < r < corr.loc[name, "pearson_high"]
        assert corr.loc[name, "n"] == 5
    # Two sources have a probe CCKL and a loss: r across sources is undefined (n < 3); the
    # orphan probe (no pretraining loss) stays out rather than being paired with anything.
    assert corr.loc["all sources", "n"] == 2 and math.isnan(corr.loc["all sources", "pearson_r"])
    across = source_points(data).set_index("source")
    assert across["test_loss"].to_dict() == {"nat": 1.2, "l2": 0.95}
    assert "orphan" not in across.index
    assert len(epoch_points(data)) == 10
    assert "cckl_vs_test_loss.png" in section.body and "r=" in section.body
    # What n counts is said with every r: epochs of one source, or sources.
    assert "(n=5 epochs)" in section.body
    assert "r undefined (n=2 sources; needs ≥ 3 with spread)" in section.body


def test_cckl_vs_test_loss_not_supported_without_loss(tmp_path: Path) -> None:
    data = training_data(tmp_path, {"train/cckl": {"nat": [1.0, 2.0]}})
    data.__dict__["probes"] = pd.DataFrame({"run_id": pd.Series(dtype=object)})
    with pytest.raises(NotSupported, match="a CCKL and a test loss") as info:
        cckl_vs_test_loss(data, tmp_path)
    assert "add a `cckl` probe" in str(info.value)


def relerr_probes() -> pd.DataFrame:
    config = json.dumps({"probe": {"name": "cckl", "params": {"norm": "linf"}}})
    rows = []
    for i, (name, scale) in enumerate([("nat", 1.0), ("l2_1", 0.5)]):
        row = {**source_row(name, "natural" if name == "nat" else "pgd", "l2", 1.0)}
        row.update(run_id=f"r{i}", end_time=i, probe="cckl", config=config)
        for eps in (0.01, 0.1, 1.0):
            row[f"probe_kl_g1_relerr_eps_{eps:g}"] = scale * eps
        rows.append(row)
    rows[1]["probe_kl_g1_relerr_eps_0.1"] = np.nan  # never measured: must stay missing
    return pd.DataFrame(rows)


def test_kl_g1_relerr_values_per_eps(tmp_path: Path) -> None:
    data = sweep_data(tmp_path)
    data.__dict__["probes"] = relerr_probes()
    data.__dict__["pretrain"] = pd.DataFrame({"source": pd.Series(dtype=object)})
    section = kl_g1_relerr_vs_eps(data, tmp_path)
    table = pd.read_csv(tmp_path / "kl_g1_relerr.csv")
    assert set(table["norm"]) == {"linf"}
    nat = table[table["source"] == "nat"]
    assert list(nat["eps"]) == [0.01, 0.1, 1.0] and list(nat["relerr"]) == [0.01, 0.1, 1.0]
    robust = table[table["source"] == "l2_1"]
    assert list(robust["eps"]) == [0.01, 1.0] and list(robust["relerr"]) == [0.005, 0.5]
    assert "| ℓ₂ ε=1 | 0.005 | – | 0.5 |" in section.body


def test_kl_g1_relerr_not_supported_without_cckl_probe(tmp_path: Path) -> None:
    data = sweep_data(tmp_path)
    data.__dict__["probes"] = fisher_probes()
    with pytest.raises(NotSupported, match="add a `cckl` probe") as info:
        kl_g1_relerr_vs_eps(data, tmp_path)
    assert "probe_" not in str(info.value) and "kl_g1_relerr" not in str(info.value)


def test_families_read_a_real_mlflow_sweep(tmp_path: Path) -> None:
    """Through MlflowClient: per-epoch pretraining metrics and probe runs as the driver logs
    them (tags raysweep.sweep / role / stage, params, steps = epochs)."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    experiment = client.create_experiment("raysweep/s", (tmp_path / "artifacts").as_uri())
    loss = {"nat": [2.0, 1.0, 0.5], "l2_1": [2.5, 1.5, 1.0], "l2_2": [3.0, 2.0, 1.8]}
    for i, (name, values) in enumerate(loss.items()):
        eps = 0.0 if name == "nat" else float(name[-1])
        info = source_row(name, "natural" if eps == 0 else "pgd", "" if eps == 0 else "l2", eps)
        for stage in ("pretrain", "probe"):
            tags = {"raysweep.sweep": "s", "raysweep.role": "job", "raysweep.stage": stage,
                    "raysweep.key": f"{stage}{i}"}  # fmt: skip
            run_id = client.create_run(experiment, tags=tags).info.run_id
            params = {**info, **({"probe": "cckl"} if stage == "probe" else {})}
            for key, value in params.items():
                client.log_param(run_id, key, value)
            if stage == "pretrain":
                for epoch, v in enumerate(values, start=1):
                    client.log_metric(run_id, "test/loss", v, step=epoch)
                    client.log_metric(run_id, "train/cckl", 4.0 - v, step=epoch)
                    client.log_metric(run_id, "train/fx_fnorm", v / 10, step=epoch)
            else:
                client.log_metric(run_id, "probe/cckl", 10.0 - i, step=0)
            client.set_terminated(run_id)
    data = SweepData(uri, "s")
    information_during_training(data, tmp_path / "out")
    curves = pd.read_csv(tmp_path / "out" / "information_during_training.csv")
    fnorm = curves[(curves["metric"] == "train/fx_fnorm") & (curves["source"] == "l2_2")]
    assert list(fnorm["value"]) == pytest.approx([0.3, 0.2, 0.18])
    cckl_vs_test_loss(data, tmp_path / "out")
    corr = pd.read_csv(tmp_path / "out" / "cckl_correlation.csv").set_index("source")
    assert corr.loc["nat", "pearson_r"] == pytest.approx(-1.0)  # cckl = 4 - loss exactly
    final = [values[-1] for values in loss.values()]
    r = scipy_stats.pearsonr(final, [10.0, 9.0, 8.0]).statistic
    assert corr.loc["all sources", "pearson_r"] == pytest.approx(r)
    assert corr.loc["all sources", "n"] == 3
