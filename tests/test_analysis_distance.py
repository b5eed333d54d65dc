"""Gap vs. dataset distance (Terzi et al. 2021, Fig. 3) on hand-built frames and a real store."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from scipy import stats as scipy_stats

from raysweep.analysis.distance import (
    EMD_LABEL,
    MIN_CI_POINTS,
    correlation_text,
    correlations,
    distance_table,
    gap_vs_distance,
    gap_vs_distance_figure,
    plot_gap_vs_distance,
)
from raysweep.analysis.figures import DELTA_LABEL
from raysweep.analysis.report import write_sweep_report

TARGETS = {"near": 1.0, "mid": 2.0, "far": 4.0}  # robust bonus in pp grows with distance
SOURCES = {"nat": "natural", "l2": "pgd"}
LABELS = {"nat": "natural", "l2": "ℓ₂ ε=1"}


def finetune_frame(targets: dict[str, float] = TARGETS) -> pd.DataFrame:
    """Two sources, two subset sizes, three seeds; robust = natural + bonus + seed/2 per cell."""
    rows = []
    for source, training in SOURCES.items():
        for target, bonus in targets.items():
            for subset, seed in itertools.product(["10", "all"], range(3)):
                extra = bonus + seed / 2 if training == "pgd" else 0.0
                rows.append(
                    {
                        "source": source,
                        "source_training": training,
                        "source_norm": "l2" if training == "pgd" else "",
                        "source_eps": 1.0 if training == "pgd" else 0.0,
                        "source_architecture": "small_cnn",
                        "source_dataset": "shapes",
                        "target": target,
                        "subset_size": subset,
                        "n_train": 10 if subset == "10" else 40,
                        "seed": seed,
                        "blocks": "0",
                        "test_acc": 50.0 + 5 * seed + extra,
                    }
                )
    return pd.DataFrame(rows)


def distances() -> pd.DataFrame:
    """Natural source measures near < mid < far; the robust source measures differently."""
    rows = [("nat", "near", 5.0), ("nat", "mid", 8.0), ("nat", "far", 20.0)]
    rows += [("l2", "near", 50.0), ("l2", "mid", 60.0), ("l2", "far", 70.0)]
    df = pd.DataFrame(rows, columns=["source", "target", "emd"])
    return df.assign(similarity=np.exp(-0.01 * df["emd"]))


def test_gap_uses_natural_partner_emd_and_averages_sizes_per_seed() -> None:
    table = gap_vs_distance(finetune_frame(), distances()).set_index("target")
    assert table.loc["far", "emd"] == 20.0 and table.loc["near", "emd"] == 5.0
    assert set(table["emd_from"]) == {"natural"}
    # 6 matched cells per target (2 sizes x 3 seeds), deltas bonus + seed / 2 at both sizes.
    # The sizes are settings of one target, not independent points: each seed is averaged
    # over them first, and the interval counts the 3 seeds, not 6 cells.
    per_seed = TARGETS["mid"] + np.array([0, 0.5, 1])
    half = scipy_stats.t.ppf(0.975, 2) * per_seed.std(ddof=1) / math.sqrt(3)
    assert table.loc["mid", "gap"] == pytest.approx(2.5)
    assert table.loc["mid", "ci95"] == pytest.approx(half)
    mid = table.loc["mid"]
    assert (mid["n"], mid["n_sizes"], mid["n_cells"]) == (3, 2, 6)  # seeds, sizes, cells
    assert set(table["robust"]) == {"l2"} and set(table["natural"]) == {"nat"}


def test_a_seed_missing_a_size_is_still_one_point() -> None:
    df = finetune_frame()
    df = df[~((df["target"] == "mid") & (df["seed"] == 2) & (df["subset_size"] == "10"))]
    row = gap_vs_distance(df, distances()).set_index("target").loc["mid"]
    assert (row["n"], row["n_cells"]) == (3, 5)
    assert row["gap"] == pytest.approx(np.mean([2.0, 2.5, 3.0]))


def test_gap_falls_back_to_robust_emd_when_natural_is_missing() -> None:
    dist = distances()
    dist = dist[~((dist["source"] == "nat") & (dist["target"] == "mid"))]
    table = gap_vs_distance(finetune_frame(), dist).set_index("target")
    assert table.loc["mid", "emd"] == 60.0 and table.loc["mid", "emd_from"] == "robust"
    table = gap_vs_distance(finetune_frame(), dist[dist["target"] != "mid"]).set_index("target")
    assert math.isnan(table.loc["mid", "emd"]) and pd.isna(table.loc["mid", "emd_from"])


def test_correlations_match_scipy_and_fisher_z() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=12)
    df = pd.DataFrame({"emd": x, "gap": 0.6 * x + rng.normal(size=12)})
    c = correlations(df)
    r, p_r = scipy_stats.pearsonr(df["emd"], df["gap"])
    rho, p_rho = scipy_stats.spearmanr(df["emd"], df["gap"])
    assert (c.n, c.pearson_r, c.pearson_p) == (12, pytest.approx(r), pytest.approx(p_r))
    assert c.spearman_rho == pytest.approx(rho) and c.spearman_p == pytest.approx(p_rho)
    z = 1.959963984540054
    assert c.pearson_low == pytest.approx(math.tanh(math.atanh(r) - z / 3.0))
    assert c.pearson_high == pytest.approx(math.tanh(math.atanh(r) + z / 3.0))
    se = math.sqrt((1 + rho**2 / 2) / 9)  # Bonett-Wright
    assert c.spearman_low == pytest.approx(math.tanh(math.atanh(rho) - z * se))
    assert c.spearman_high == pytest.approx(math.tanh(math.atanh(rho) + z * se))


def test_small_n_spearman_p_is_exact() -> None:
    x = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    y = np.array([2.0, 1.0, 4.0, 3.0, 5.0])
    c = correlations(pd.DataFrame({"emd": x, "gap": y}))
    rhos = [scipy_stats.spearmanr(x, p).statistic for p in itertools.permutations(y)]
    exact = np.mean(np.abs(rhos) >= abs(c.spearman_rho) - 1e-12)
    assert c.spearman_rho == pytest.approx(0.8) and c.spearman_p == pytest.approx(exact)
    three = correlations(pd.DataFrame({"emd": [1.0, 2.0, 3.0], "gap": [3.0, 2.0, 1.5]}))
    assert three.spearman_rho == pytest.approx(-1.0) and three.spearman_p == pytest.approx(1 / 3)
    # n - 3 = 0: Fisher z would give [-1, +1] whatever the data; no interval at all instead.
    assert all(math.isnan(v) for v in three[2:4] + three[6:8])


def test_below_four_targets_no_interval_and_the_text_says_why() -> None:
    assert MIN_CI_POINTS == 4
    three = correlations(pd.DataFrame({"emd": [1.0, 2.0, 3.0], "gap": [1.0, 3.0, 2.5]}))
    text = correlation_text(three)
    assert text == "r=+0.72, ρ=+0.50 (n=3 targets; no CI below 4)"
    assert "[" not in text  # no interval drawn
    four = correlations(pd.DataFrame({"emd": [1.0, 2.0, 3.0, 4.0], "gap": [1.0, 3.0, 2.5, 4.0]}))
    assert four.n == 4 and four.pearson_low < four.pearson_r < four.pearson_high
    assert correlation_text(four).startswith(f"r={four.pearson_r:+.2f} [")
    assert correlation_text(four).endswith("(n=4 targets)")


def test_a_perfect_correlation_has_no_degenerate_interval() -> None:
    four = correlations(pd.DataFrame({"emd": [1.0, 2.0, 3.0, 4.0], "gap": [1.0, 3.0, 3.5, 9.0]}))
    assert four.spearman_rho == pytest.approx(1.0) and math.isnan(four.spearman_low)
    assert not math.isnan(four.pearson_low)  # r < 1: its interval stays
    assert "ρ=+1.00 (no CI at |ρ| = 1)" in correlation_text(four)


def test_fewer_than_three_targets_or_constant_give_nan() -> None:
    two = correlations(pd.DataFrame({"emd": [1.0, 2.0, np.nan], "gap": [1.0, 3.0, 2.0]}))
    assert two.n == 2 and all(math.isnan(v) for v in two[1:])
    flat = correlations(pd.DataFrame({"emd": [1.0, 2.0, 3.0], "gap": [1.0, 1.0, 1.0]}))
    assert flat.n == 3 and math.isnan(flat.pearson_r) and math.isnan(flat.spearman_p)
    table = gap_vs_distance(finetune_frame({"near": 1.0, "far": 3.0}), distances())
    fig = gap_vs_distance_figure(table)  # two targets: drawn, correlations stated undefined
    assert "undefined (n=2 targets" in fig.get_axes()[0].get_legend().get_texts()[0].get_text()


def test_figure_labels_points_and_zero_line(tmp_path: Path) -> None:
    table = gap_vs_distance(finetune_frame(), distances())
    fig = gap_vs_distance_figure(table, LABELS)
    (ax,) = fig.get_axes()
    assert ax.get_xlabel() == EMD_LABEL and ax.get_ylabel() == DELTA_LABEL
    assert ax.get_title() == "blocks = 0"
    assert sorted(t.get_text() for t in ax.texts) == ["far", "mid", "near"]
    # Names sit above the error bars, neighbours at two heights: never on a point.
    offsets = sorted(t.xyann[1] for t in ax.texts)
    assert offsets[0] > 0 and len(set(offsets)) == 2
    legend = ax.get_legend().get_texts()[0].get_text()
    # Three targets: r and ρ without an interval, n counts targets and the reason is given.
    assert legend.startswith("ℓ₂ ε=1 − natural\nr=+") and "ρ=+1.00" in legend
    assert legend.endswith("(n=3 targets; no CI below 4)")
    zero = [line for line in ax.get_lines() if list(line.get_ydata()) == [0.0, 0.0]]
    assert zero and zero[0].get_linestyle() == "--"
    points = ax.containers[0].lines[0]  # the errorbar's data line
    np.testing.assert_allclose(sorted(points.get_ydata()), [1.5, 2.5, 4.5])
    paths = plot_gap_vs_distance(table, tmp_path)
    assert [p.name for p in paths] == ["gap_vs_distance.png", "gap_vs_distance.pdf"]
    assert paths[0].read_bytes()[:4] == b"\x89PNG" and paths[1].read_bytes()[:4] == b"%PDF"


def _child(client: MlflowClient, exp: str, parent: str, key: str, stage: str, tags: dict) -> str:
    base = {"mlflow.parentRunId": parent, "raysweep.sweep": "dist", "raysweep.role": "job"}
    base |= {"raysweep.key": key, "raysweep.stage": stage}
    run_id = client.create_run(exp, tags=base).info.run_id
    strings = {k: str(v) for k, v in tags.items()}
    client.log_batch(
        run_id,
        params=[Param(k, v) for k, v in strings.items()],
        tags=[RunTag(k, v) for k, v in strings.items()],
    )
    return run_id


def test_report_on_sqlite_store_with_probe_runs(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    exp = client.create_experiment("raysweep/dist")
    parent = client.create_run(exp, tags={"raysweep.sweep": "dist", "raysweep.role": "sweep"})
    parent_id = parent.info.run_id
    cells = ["source", "source_training", "source_norm", "source_eps", "source_architecture"]
    cells += ["source_dataset", "target", "subset_size", "n_train", "seed", "blocks"]
    for i, row in enumerate(finetune_frame().to_dict("records")):
        run_id = _child(client, exp, parent_id, f"ft{i}", "finetune", {k: row[k] for k in cells})
        client.log_batch(run_id, metrics=[Metric("test/acc", row["test_acc"], 0, 5)])
        client.set_terminated(run_id)
    info = {"nat": ("natural", "", 0.0), "l2": ("pgd", "l2", 1.0)}
    for i, row in enumerate(distances().to_dict("records")):
        training, norm, eps = info[row["source"]]
        tags = {"probe": "distance", "source": row["source"], "target": row["target"]}
        tags |= {"source_training": training, "source_norm": norm, "source_eps": eps}
        run_id = _child(client, exp, parent_id, f"d{i}", "probe", tags)
        metrics = [Metric("probe/emd", row["emd"], 0, 0)]
        metrics += [Metric("probe/similarity", row["similarity"], 0, 0)]
        client.log_batch(run_id, metrics=metrics)
        client.set_terminated(run_id)
    table = distance_table(uri, "dist")
    assert list(table.columns) == ["source", "target", "emd", "similarity"]
    assert len(table) == 6
    assert table.set_index(["source", "target"]).loc[("nat", "far"), "emd"] == 20.0
    written = write_sweep_report(uri, "dist", tmp_path / "report")
    names = {p.name for p in written}
    assert {"gap_vs_distance.png", "gap_vs_distance.pdf", "gap_vs_distance.csv"} <= names
    csv = pd.read_csv(tmp_path / "report" / "gap_vs_distance.csv").set_index("target")
    assert csv.loc["far", "gap"] == pytest.approx(4.5) and csv.loc["far", "emd"] == 20.0
    report = (tmp_path / "report" / "report.md").read_text(encoding="utf-8")
    assert "## Gap vs. dataset distance" in report and "gap_vs_distance.png" in report
    assert "correlations count targets, not runs" in report
    assert str(tmp_path) not in report  # links and the store relative to the report folder
    assert "local SQLite store `../mlflow.db`" in report
    assert distance_table(uri, "no-such-sweep").empty
