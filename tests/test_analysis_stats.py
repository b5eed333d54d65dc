"""Statistics of raysweep.analysis.stats on hand-made frames with known answers."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from raysweep.analysis.stats import gap_table, natural_partners, paired_delta, summarize, t_interval

SOURCES = {
    # name: (training, norm, eps, architecture)
    "nat": ("natural", "", 0.0, "resnet50"),
    "l2_3": ("pgd", "l2", 3.0, "resnet50"),
    "linf_8": ("pgd", "linf", 8 / 255, "resnet18"),  # no natural resnet18: no partner
}


def run(source: str, target: str, subset: str, seed: int, acc: float, blocks: str = "3") -> dict:
    training, norm, eps, arch = SOURCES[source]
    n_train = 50_000 if subset == "all" else int(subset)
    return {
        "source": source,
        "source_training": training,
        "source_norm": norm,
        "source_eps": eps,
        "source_architecture": arch,
        "source_dataset": "imagenet",
        "target": target,
        "subset_size": subset,
        "n_train": n_train,
        "seed": seed,
        "blocks": blocks,
        "epochs": 10,
        "test_acc": acc,
    }


def test_t_interval_matches_scipy() -> None:
    values = [61.0, 64.5, 59.25, 70.0, 66.0]
    mean, half, n = t_interval(values)
    s = np.std(values, ddof=1)
    assert n == 5
    assert mean == pytest.approx(64.15)
    assert half == pytest.approx(scipy_stats.t.ppf(0.975, 4) * s / math.sqrt(5), rel=1e-12)
    _, half90, _ = t_interval(values, confidence=0.9)
    assert half90 == pytest.approx(scipy_stats.t.ppf(0.95, 4) * s / math.sqrt(5), rel=1e-12)


def test_t_interval_small_and_missing() -> None:
    mean, half, n = t_interval([42.0])
    assert (mean, n) == (42.0, 1) and math.isnan(half)
    mean, half, n = t_interval([1.0, np.nan, 3.0])  # a missing run is ignored, not a zero
    assert (mean, n) == (2.0, 2)
    assert half == pytest.approx(scipy_stats.t.ppf(0.975, 1) * math.sqrt(2) / math.sqrt(2))
    assert t_interval([])[2] == 0 and math.isnan(t_interval([])[0])
    with pytest.raises(ValueError, match="confidence"):
        t_interval([1.0, 2.0], confidence=95)


def test_summarize_groups() -> None:
    df = pd.DataFrame(
        [run("nat", "cifar10", "100", s, a) for s, a in enumerate([50.0, 52.0, 57.0])]
        + [run("nat", "svhn", "100", 0, 80.0)]
    )
    out = summarize(df, ["target", "subset_size"])
    assert list(out.columns) == ["target", "subset_size", "mean", "ci95", "n"]
    assert out["n"].tolist() == [3, 1]
    assert out["mean"].tolist() == pytest.approx([53.0, 80.0])
    s = np.std([50.0, 52.0, 57.0], ddof=1)
    assert out["ci95"].iloc[0] == pytest.approx(scipy_stats.t.ppf(0.975, 2) * s / math.sqrt(3))
    assert math.isnan(out["ci95"].iloc[1])
    with pytest.raises(ValueError, match="not in frame"):
        summarize(df, ["nope"])


def test_paired_delta_pairs_within_cells_only() -> None:
    rows = [
        # robust seeds 0,1,2 in cifar10/100/3; natural listed in another order
        run("l2_3", "cifar10", "100", 0, 60.0),
        run("l2_3", "cifar10", "100", 1, 70.0),
        run("l2_3", "cifar10", "100", 2, 80.0),
        run("nat", "cifar10", "100", 2, 90.0),
        run("nat", "cifar10", "100", 0, 50.0),
        run("nat", "cifar10", "100", 1, 70.0),
        # same seeds in other cells: pairing across subset size, target or blocks would mix these
        run("nat", "cifar10", "200", 0, 0.0),
        run("nat", "svhn", "100", 0, 0.0),
        run("nat", "cifar10", "100", 0, 0.0, blocks="1"),
        # unmatched on each side
        run("l2_3", "cifar10", "100", 3, 99.0),
        run("nat", "cifar10", "100", 4, 1.0),
    ]
    df = pd.DataFrame(rows)
    out = paired_delta(df, robust="l2_3", natural="nat")
    out = out.sort_values("seed").reset_index(drop=True)
    assert out["seed"].tolist() == [0, 1, 2]
    assert out["delta"].tolist() == [10.0, 0.0, -10.0]  # seed-matched: mean 0
    assert out["robust"].tolist() == [60.0, 70.0, 80.0]
    assert out["natural"].tolist() == [50.0, 70.0, 90.0]
    assert set(out["subset_size"]) == {"100"} and set(out["blocks"]) == {"3"}
    assert out["n_train"].tolist() == [100, 100, 100]
    assert out.attrs["unmatched_robust"] == 1
    assert out.attrs["unmatched_natural"] == 4  # seed 4, and the three other cells


def test_paired_delta_rejects_ambiguous_and_unknown() -> None:
    df = pd.DataFrame([run("nat", "mnist", "100", 0, 1.0), run("nat", "mnist", "100", 0, 2.0)])
    df = pd.concat([df, pd.DataFrame([run("l2_3", "mnist", "100", 0, 3.0)])])
    with pytest.raises(ValueError, match="several runs per cell"):
        paired_delta(df, robust="l2_3", natural="nat")
    with pytest.raises(ValueError, match="valid: l2_3, nat"):
        paired_delta(df, robust="l2_eps9", natural="nat")


def test_gap_table_numbers_and_missing_cells() -> None:
    rows = [run("l2_3", "cifar10", "100", s, a) for s, a in enumerate([60.0, 62.0, 64.0])]
    rows += [run("nat", "cifar10", "100", s, a) for s, a in enumerate([55.0, 55.0, 58.0])]
    rows += [run("l2_3", "svhn", "100", s, 70.0) for s in range(2)]  # natural never ran here
    rows += [run("l2_3", "mnist", "all", 0, 99.0), run("nat", "mnist", "all", 0, 98.5)]
    rows += [run("nat", "mnist", "all", 1, 97.0)]  # unmatched seed
    rows += [run("linf_8", "cifar10", "100", 0, 10.0)]
    df = pd.DataFrame(rows)
    assert natural_partners(df) == [("l2_3", "nat")]
    gap = gap_table(df)
    assert gap["robust"].unique().tolist() == ["l2_3"]  # linf_8 has no resnet18 natural source
    by_cell = gap.set_index(["target", "subset_size"])
    c10 = by_cell.loc[("cifar10", "100")]
    assert c10["delta"] == pytest.approx(6.0)  # deltas 5, 7, 6
    assert c10["ci95"] == pytest.approx(scipy_stats.t.ppf(0.975, 2) * 1.0 / math.sqrt(3))
    assert c10["n"] == 3
    assert (c10["robust_acc"], c10["natural_acc"]) == pytest.approx((62.0, 56.0))
    assert c10["source_norm"] == "l2" and c10["source_eps"] == 3.0
    assert c10["n_train"] == 100
    svhn = by_cell.loc[("svhn", "100")]
    assert svhn["n"] == 0 and math.isnan(svhn["delta"]) and math.isnan(svhn["ci95"])
    mnist = by_cell.loc[("mnist", "all")]
    assert mnist["delta"] == pytest.approx(0.5) and mnist["n"] == 1
    assert math.isnan(mnist["ci95"]) and mnist["n_train"] == 50_000
    assert len(gap) == 3


def test_gap_table_without_pairs_is_empty_with_columns() -> None:
    gap = gap_table(pd.DataFrame([run("nat", "cifar10", "100", 0, 50.0)]))
    assert gap.empty
    assert {"robust", "natural", "delta", "ci95", "n"} <= set(gap.columns)


def test_eps_is_written_as_the_papers_do() -> None:
    from raysweep.analysis.labels import eps_text

    assert eps_text(2 / 255, "linf") == "2/255" and eps_text(0.03, "linf") == "0.03"
    assert eps_text(0.25, "l2") == "0.25" and eps_text(0.0, "") == "0"
    assert eps_text(float("nan"), "") == "–" and eps_text(None, "linf") == "–"
