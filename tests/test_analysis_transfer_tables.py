"""Transfer tables (raysweep.analysis.transfer_tables) on a hand-made frame."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from raysweep.analysis.sweepdata import NotSupported, SweepData
from raysweep.analysis.tables import MISSING
from raysweep.analysis.transfer_tables import (
    mode_label,
    table_markdown,
    transfer_table,
    transfer_tables,
)

T_2DOF = 4.302652729911275  # t_{0.975, 2}
T_1DOF = 12.706204736174707  # t_{0.975, 1}
MODES = ("full", "head_bn", "all_bn")  # deliberately not in Terzi's order 0/1/2
N_TRAIN = {"100": 100, "all": 1000}


def acc(source: str, target: str, mode: str, seed: int) -> float:
    """rob beats nat on svhn (+5 + seed), loses on cifar10 (−2); nat seeds spread by 3 seed²."""
    base = {"head_bn": 40.0, "all_bn": 60.0, "full": 80.0}[mode]
    if source == "nat":
        return base + 3.0 * seed**2
    return base + 3.0 * seed**2 + (5.0 + seed if target == "svhn" else -2.0)


def frame() -> pd.DataFrame:
    """rob (pgd) and nat on cifar10/svhn, 100 and all images, Terzi's three modes, seeds 0-2;
    rob lacks seed 2 on svhn/all/head_bn; nat never ran svhn/all/full."""
    rows = []
    for source in ("rob", "nat"):
        for target, size, mode, seed in np.ndindex(2, 2, 3, 3):
            target, size, mode = ("cifar10", "svhn")[target], list(N_TRAIN)[size], MODES[mode]
            if (source, target, size, mode, seed) == ("rob", "svhn", "all", "head_bn", 2):
                continue
            if (source, target, size, mode) == ("nat", "svhn", "all", "full"):
                continue
            rows.append(
                {
                    "run_id": f"{source}-{target}-{size}-{mode}-{seed}",
                    "source": source,
                    "source_training": "pgd" if source == "rob" else "natural",
                    "source_norm": "l2" if source == "rob" else "",
                    "source_eps": 1.0 if source == "rob" else 0.0,
                    "source_architecture": "resnet50",
                    "source_dataset": "cifar100",
                    "target": target,
                    "subset_size": size,
                    "n_train": N_TRAIN[size],
                    "seed": int(seed),
                    "blocks": mode,
                    "epochs": 10,
                    "test_acc": acc(source, target, mode, int(seed)),
                }
            )
    return pd.DataFrame(rows)


def sweep(df: pd.DataFrame) -> SweepData:
    data = SweepData("sqlite:///unused.db", "test")
    data.__dict__["finetune"] = df
    return data


def test_long_table_values() -> None:
    long = transfer_table(frame())
    assert len(long) == 2 * 3 * 3 * 2  # sizes × modes × rows × targets, one pair
    assert list(long["blocks"].drop_duplicates()) == ["head_bn", "all_bn", "full"]

    def cell(size: str, mode: str, row: str, target: str) -> pd.Series:
        hit = long[(long["subset_size"] == size) & (long["blocks"] == mode)]
        return hit[(hit["row"] == row) & (hit["target"] == target)].iloc[0]

    nat = cell("100", "all_bn", "St", "cifar10")
    values = [60.0, 63.0, 72.0]
    assert nat["mean"] == pytest.approx(65.0) and nat["n"] == 3
    assert nat["ci95"] == pytest.approx(T_2DOF * np.std(values, ddof=1) / math.sqrt(3))
    delta = cell("100", "all_bn", "Δ", "svhn")
    assert delta["mean"] == pytest.approx(6.0)  # 5 + seed: [5, 6, 7]
    assert delta["ci95"] == pytest.approx(T_2DOF / math.sqrt(3))
    # rob has seeds 0, 1 only: matched deltas [5, 6]. Unpaired: mean(45, 51) − mean(40, 43,
    # 52) = 48 − 45 = 3, not 5.5.
    hole = cell("all", "head_bn", "Δ", "svhn")
    assert hole["mean"] == pytest.approx(5.5) and hole["n"] == 2
    assert hole["ci95"] == pytest.approx(T_1DOF * np.std([5.0, 6.0], ddof=1) / math.sqrt(2))
    assert cell("all", "head_bn", "Rob", "svhn")["n"] == 2
    missing = cell("all", "full", "St", "svhn")
    assert math.isnan(missing["mean"]) and missing["n"] == 0
    assert math.isnan(cell("all", "full", "Δ", "svhn")["mean"])


def test_markdown_layout_bold_and_missing() -> None:
    long = transfer_table(frame())
    text = table_markdown(long[long["subset_size"] == "all"])
    lines = text.splitlines()
    assert lines[0] == "| mode |  | cifar10 | svhn |"
    assert [line.split(" | ")[0] for line in lines[2:]] == [
        "| head_bn (mode 0)",
        "| ",
        "| ",
        "| all_bn (mode 1)",
        "| ",
        "| ",
        "| full (mode 2)",
        "| ",
        "| ",
    ]
    # all_bn: St wins on cifar10 (65 vs 63), Rob on svhn (71 vs 65); Δ is signed, never bold.
    assert lines[5] == "| all_bn (mode 1) | Rob | 63.00 ± 15.51 (n=3) | **71.00 ± 17.91 (n=3)** |"
    assert lines[6] == "|  | St | **65.00 ± 15.51 (n=3)** | 65.00 ± 15.51 (n=3) |"
    assert lines[7] == "|  | Δ | -2.00 ± 0.00 (n=3) | +6.00 ± 2.48 (n=3) |"
    # full on svhn: no natural run, so no bold for Rob and en dashes for St and Δ.
    assert lines[8] == "| full (mode 2) | Rob | 83.00 ± 15.51 (n=3) | 91.00 ± 17.91 (n=3) |"
    assert lines[9].endswith(f"| {MISSING} |") and lines[10].endswith(f"| {MISSING} |")
    assert mode_label("3") == "3"


def test_family_shows_largest_subset_and_writes_all(tmp_path: Path) -> None:
    section = transfer_tables(sweep(frame()), tmp_path)
    assert [p.name for p in section.paths] == ["transfer_tables.csv", "transfer_tables.md"]
    assert "subset size all" in section.body and "subset size 100" not in section.body
    text = (tmp_path / "transfer_tables.md").read_text()
    assert text.index("subset size 100") < text.index("subset size all")
    csv = pd.read_csv(tmp_path / "transfer_tables.csv", dtype={"subset_size": str})
    assert len(csv) == 36 and csv["mean"].isna().sum() == 2


def test_without_natural_partner_it_is_not_supported(tmp_path: Path) -> None:
    df = frame()
    with pytest.raises(NotSupported, match="natural source"):
        transfer_tables(sweep(df[df["source"] == "rob"]), tmp_path)
