"""Accuracy vs. fine-tuned blocks (raysweep.analysis.blocks) on a hand-made frame."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from raysweep.analysis.blocks import (
    BLOCKS_LABEL,
    accuracy_vs_blocks,
    accuracy_vs_blocks_figure,
    block_values,
    blocks_gap_table,
)
from raysweep.analysis.figures import ACCURACY_LABEL, source_styles
from raysweep.analysis.stats import summarize
from raysweep.analysis.sweepdata import NotSupported, SweepData

T_2DOF = 4.302652729911275  # t_{0.975, 2}
T_1DOF = 12.706204736174707  # t_{0.975, 1}
ROB_BLOCKS = ("0", "1", "3", "10")  # "10" sorts before "3" as text: order must be numeric
NAT_BLOCKS = ("0", "3", "10")  # nat never fine-tuned 1 block: its steps are 3-0 and 10-3
N_TRAIN = {"100": 100, "400": 400}


def acc(source: str, blocks: str, seed: int) -> float:
    """Each step up the source's own blocks list adds 3 + seed points (and 1 for rob)."""
    index = (ROB_BLOCKS if source == "rob" else NAT_BLOCKS).index(blocks)
    return 40.0 + (3.0 + seed) * index + (1.0 if source == "rob" else 0.0)


def frame() -> pd.DataFrame:
    """rob/nat × cifar10/svhn × 100/400 images × their blocks × seeds 0-2; rob has no seed-2
    run with 3 blocks on svhn/100."""
    rows = []
    for source, blocks_list in (("rob", ROB_BLOCKS), ("nat", NAT_BLOCKS)):
        for target in ("cifar10", "svhn"):
            for subset, blocks, seed in np.ndindex(2, len(blocks_list), 3):
                size, b = list(N_TRAIN)[subset], blocks_list[blocks]
                if (source, target, size, b, seed) == ("rob", "svhn", "100", "3", 2):
                    continue
                rows.append(
                    {
                        "run_id": f"{source}-{target}-{size}-{b}-{seed}",
                        "source": source,
                        "source_training": "pgd" if source == "rob" else "natural",
                        "source_architecture": "resnet50",
                        "source_dataset": "imagenet",
                        "target": target,
                        "subset_size": size,
                        "n_train": N_TRAIN[size],
                        "seed": int(seed),
                        "blocks": b,
                        "epochs": 10,
                        "test_acc": acc(source, b, int(seed)),
                    }
                )
    return pd.DataFrame(rows)


def sweep(df: pd.DataFrame) -> SweepData:
    data = SweepData("sqlite:///unused.db", "test")
    data.__dict__["finetune"] = df
    return data


def test_block_values_sort_numerically() -> None:
    assert block_values(frame()) == ["0", "1", "3", "10"]
    assert block_values(pd.DataFrame({"blocks": ["full", "3", "head_bn", "all_bn"]})) == [
        "3",
        "head_bn",
        "all_bn",
        "full",
    ]


def test_gap_pairs_each_value_with_next_smaller_of_the_same_source() -> None:
    gaps = blocks_gap_table(frame())
    steps = gaps[["source", "blocks", "baseline_blocks"]].drop_duplicates()
    assert sorted(map(tuple, steps.to_numpy())) == [
        ("nat", "10", "3"),
        ("nat", "3", "0"),
        ("rob", "1", "0"),
        ("rob", "10", "3"),
        ("rob", "3", "1"),
    ]
    cell = gaps[
        (gaps["source"] == "rob") & (gaps["blocks"] == "10") & (gaps["target"] == "cifar10")
    ]
    row = cell[cell["subset_size"] == "400"].iloc[0]
    # Seed by seed 3 + seed: [3, 4, 5].
    assert row["delta"] == pytest.approx(4.0) and row["n"] == 3
    assert row["ci95"] == pytest.approx(T_2DOF / math.sqrt(3))
    assert row["blocks_acc"] == pytest.approx(53.0) and row["baseline_acc"] == pytest.approx(49.0)
    hole = gaps[
        (gaps["source"] == "rob")
        & (gaps["blocks"] == "3")
        & (gaps["target"] == "svhn")
        & (gaps["subset_size"] == "100")
    ].iloc[0]
    # Seeds 0 and 1 match: deltas [3, 4]. Unpaired, mean(46, 49) - mean(44, 45, 46) = 2.5.
    assert hole["delta"] == pytest.approx(3.5) and hole["n"] == 2
    assert hole["ci95"] == pytest.approx(T_1DOF * np.std([3.0, 4.0], ddof=1) / math.sqrt(2))


def test_family_writes_tables_and_figures(tmp_path: Path) -> None:
    df = frame()
    df = df[~((df["source"] == "nat") & (df["target"] == "svhn") & (df["blocks"] == "10"))]
    section = accuracy_vs_blocks(sweep(df), tmp_path)
    names = sorted(p.name for p in section.paths if p.suffix == ".png")
    assert names == [
        "accuracy_vs_blocks_size-100.png",
        "accuracy_vs_blocks_size-400.png",
        "blocks_delta_1-minus-0.png",
        "blocks_delta_10-minus-3.png",
        "blocks_delta_3-minus-0.png",
        "blocks_delta_3-minus-1.png",
    ]
    summary = pd.read_csv(tmp_path / "blocks_summary.csv", dtype={"blocks": str})
    assert len(summary) == 2 * 2 * 4 + 2 * 2 * 3 - 2
    gaps = pd.read_csv(tmp_path / "blocks_gap.csv", dtype={"blocks": str, "baseline_blocks": str})
    missing = gaps[
        (gaps["source"] == "nat") & (gaps["target"] == "svhn") & (gaps["blocks"] == "10")
    ]
    assert len(missing) == 2 and missing["delta"].isna().all() and (missing["n"] == 0).all()
    text = (tmp_path / "blocks_gap.md").read_text()
    assert "| target | subset_size | 0 | 1 | 3 | 10 |" in text
    assert "| target | subset_size | 3 − 0 | 10 − 3 |" in text  # nat has no 1-block runs
    assert "| svhn | 100 | +4.00 ± 2.48 (n=3) | – |" in text
    assert "| cifar10 | 400 | 41.00 ± 0.00 (n=3) | 45.00 ± 2.48 (n=3) |" in text


def test_blocks_are_categories_not_a_scale() -> None:
    """0/1/3/10 blocks sit at 0..k-1 (evenly, in order), each source a little to the side so
    the error bars do not hide one another, and no line joins the settings."""
    df = frame()
    summary = summarize(df[df["subset_size"] == "100"], ["target", "source", "blocks"])
    labels = {"nat": "natural", "rob": "ℓ₂ ε=1"}
    fig = accuracy_vs_blocks_figure(summary, list(ROB_BLOCKS), "t", source_styles(frame()), labels)
    ax = fig.get_axes()[0]
    assert ax.get_title() == "cifar10" and ax.get_xlabel() == BLOCKS_LABEL
    assert ax.get_ylabel() == ACCURACY_LABEL
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "1", "3", "10"]
    assert list(ax.get_xticks()) == [0, 1, 2, 3]
    bars = {c.get_label(): c for c in ax.containers}
    assert set(bars) == {"natural", "ℓ₂ ε=1"}
    nat, rob = (bars[k].lines[0] for k in ("natural", "ℓ₂ ε=1"))
    x = np.asarray(nat.get_xdata(), dtype=float)
    assert np.round(x).tolist() == [0.0, 2.0, 3.0]  # no 1-block point for nat
    assert np.all(np.abs(x - np.round(x)) <= 0.3)
    assert np.round(rob.get_xdata()).tolist() == [0.0, 1.0, 2.0, 3.0]
    assert nat.get_xdata()[0] != rob.get_xdata()[0]  # side by side, not on top of each other
    assert nat.get_linestyle() == "None" and rob.get_linestyle() == "None"  # not joined
    assert nat.get_ydata().tolist() == pytest.approx([40.0, 44.0, 48.0])
    assert fig.legends[0].get_title().get_text() == "n = 2–3 seeds per point"


def test_blocks_sharey_shares_limits_across_targets() -> None:
    df = frame()
    df = df.assign(test_acc=df["test_acc"] + np.where(df["target"] == "svhn", 30.0, 0.0))
    summary = summarize(df, ["target", "source", "blocks"])
    styles = source_styles(df)
    own = accuracy_vs_blocks_figure(summary, list(ROB_BLOCKS), "t", styles).get_axes()
    assert own[0].get_ylim() != own[1].get_ylim()
    shared = accuracy_vs_blocks_figure(summary, list(ROB_BLOCKS), "t", styles, sharey=True)
    assert shared.get_axes()[0].get_ylim() == shared.get_axes()[1].get_ylim()


def test_one_blocks_value_is_not_supported(tmp_path: Path) -> None:
    df = frame()
    with pytest.raises(NotSupported, match="needs ≥ 2 `blocks` values"):
        accuracy_vs_blocks(sweep(df[df["blocks"] == "3"]), tmp_path)
