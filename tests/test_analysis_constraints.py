"""ℓ2 vs. ℓ∞ and small vs. large ε (raysweep.analysis.constraints) on a hand-made frame."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from raysweep.analysis.constraints import (
    constraint_comparison,
    constraint_pairs,
    constraint_table,
)
from raysweep.analysis.sweepdata import NotSupported, SweepData

T_2DOF = 4.302652729911275  # t_{0.975, 2}
T_1DOF = 12.706204736174707  # t_{0.975, 1}
# source: (training, norm, eps, architecture, bonus, per-seed slope)
SOURCES = {
    "nat": ("natural", "", 0.0, "resnet50", 0.0, 0.0),
    "l2_3": ("pgd", "l2", 3.0, "resnet50", 6.0, 2.0),
    "linf_4": ("pgd", "linf", 4 / 255, "resnet50", 4.0, 1.0),
    "linf_8": ("pgd", "linf", 8 / 255, "resnet50", 1.0, 0.0),
    # Same norm as l2_3 family but another architecture: never compared with the others.
    "cnn_linf": ("pgd", "linf", 8 / 255, "small_cnn", 0.0, 0.0),
    # Another training method: not a constraint comparison with the PGD sources.
    "trades_l2": ("trades", "l2", 3.0, "resnet50", 0.0, 0.0),
}
BLOCKS_OFFSET = {"1": 0.0, "3": 10.0}


def acc(source: str, blocks: str, seed: int) -> float:
    *_, bonus, slope = SOURCES[source]
    # linf_8 with 3 blocks gets a seed-dependent bump so that pairing across blocks (or
    # across seeds) would change the numbers.
    bump = 4.0 * seed**2 if (source, blocks) == ("linf_8", "3") else 0.0
    return 50.0 + BLOCKS_OFFSET[blocks] + bonus + slope * seed + bump


def frame() -> pd.DataFrame:
    """All sources on cifar10 and svhn, 100 images, blocks 1 and 3, seeds 0-2; linf_8 lacks
    seed 0 on svhn with 3 blocks; l2_3 has no svhn run with 1 block at all."""
    rows = []
    for source, (training, norm, eps, arch, *_) in SOURCES.items():
        for target, blocks, seed in np.ndindex(2, 2, 3):
            target, blocks = ("cifar10", "svhn")[target], ("1", "3")[blocks]
            if (source, target, blocks, seed) == ("linf_8", "svhn", "3", 0):
                continue
            if (source, target, blocks) == ("l2_3", "svhn", "1"):
                continue
            rows.append(
                {
                    "run_id": f"{source}-{target}-{blocks}-{seed}",
                    "source": source,
                    "source_training": training,
                    "source_norm": norm,
                    "source_eps": eps,
                    "source_architecture": arch,
                    "source_dataset": "imagenet",
                    "target": target,
                    "subset_size": "100",
                    "n_train": 100,
                    "seed": int(seed),
                    "blocks": blocks,
                    "epochs": 10,
                    "test_acc": acc(source, blocks, int(seed)),
                }
            )
    return pd.DataFrame(rows)


def sweep(df: pd.DataFrame) -> SweepData:
    data = SweepData("sqlite:///unused.db", "test")
    data.__dict__["finetune"] = df
    return data


def test_pairs_differ_in_norm_or_eps_only_within_architecture_and_training() -> None:
    pairs = constraint_pairs(frame())
    assert list(map(tuple, pairs[["comparison", "first", "second"]].to_numpy())) == [
        ("eps", "linf_4", "linf_8"),
        ("norm", "l2_3", "linf_4"),
        ("norm", "l2_3", "linf_8"),
    ]


def test_deltas_pair_seeds_within_blocks() -> None:
    table = constraint_table(frame())

    def cell(pair: str, target: str, blocks: str) -> pd.Series:
        hit = table[(table["pair"] == pair) & (table["target"] == target)]
        return hit[hit["blocks"] == blocks].iloc[0]

    # l2_3 − linf_4 = 2 + seed per seed: [2, 3, 4].
    row = cell("l2_3 − linf_4", "cifar10", "1")
    assert row["delta"] == pytest.approx(3.0) and row["n"] == 3
    assert row["ci95"] == pytest.approx(T_2DOF / math.sqrt(3))
    assert row["first_acc"] == pytest.approx(58.0) and row["second_acc"] == pytest.approx(55.0)
    # With 3 blocks linf_8 adds 4 seed²: l2_3 − linf_8 = 5 + 2 seed − 4 seed² = [5, 3, -7].
    row = cell("l2_3 − linf_8", "cifar10", "3")
    assert row["delta"] == pytest.approx(1.0 / 3.0)
    assert row["ci95"] == pytest.approx(T_2DOF * np.std([5, 3, -7], ddof=1) / math.sqrt(3))
    # Within blocks 1 there is no bump: pairing across blocks would mix in 10 points.
    assert cell("l2_3 − linf_8", "cifar10", "1")["delta"] == pytest.approx(5.0 + 2.0)
    # svhn, 3 blocks: linf_8 lacks seed 0, so only seeds 1, 2 pair: eps delta
    # linf_4 − linf_8 = 3 + seed − 4 seed² = [0, -11]; unpaired 65 − 71 = −6.
    row = cell("linf_4 − linf_8", "svhn", "3")
    assert row["delta"] == pytest.approx(-5.5) and row["n"] == 2
    assert row["ci95"] == pytest.approx(T_1DOF * np.std([0.0, -11.0], ddof=1) / math.sqrt(2))
    # l2_3 never ran svhn with 1 block: the cell stays, empty.
    row = cell("l2_3 − linf_4", "svhn", "1")
    assert math.isnan(row["delta"]) and row["n"] == 0 and math.isnan(row["first_acc"])


def test_family_writes_csv_markdown_and_figures(tmp_path: Path) -> None:
    section = constraint_comparison(sweep(frame()), tmp_path)
    names = sorted(p.name for p in section.paths)
    assert names == sorted(
        [
            "constraint_deltas.csv",
            "constraint_deltas.md",
            *(
                f"constraint_{c}_blocks-{b}.{e}"
                for c in ("eps", "norm")
                for b in "13"
                for e in ("png", "pdf")
            ),
        ]
    )
    table = pd.read_csv(tmp_path / "constraint_deltas.csv", dtype={"blocks": str})
    assert len(table) == 3 * 2 * 2
    text = (tmp_path / "constraint_deltas.md").read_text()
    # Labels from the params; linf_8 and cnn_linf are both ℓ∞ 8/255, told apart by architecture.
    header = "| target | subset_size | ℓ₂ ε=3 − ℓ∞ ε=4/255 | ℓ₂ ε=3 − ℓ∞ ε=8/255 (resnet50) |"
    assert header in text
    assert "| svhn | 100 | – | – |" in text
    # Differences are signed and never bold: the sign says which source was more accurate.
    assert "| cifar10 | 100 | +3.00 ± 2.48 (n=3) | +7.00 ± 4.97 (n=3) |" in text
    assert "**" not in text and "positive = the first-named source is more accurate" in text


def test_without_a_comparable_pair_it_is_not_supported(tmp_path: Path) -> None:
    df = frame()
    with pytest.raises(NotSupported, match="differ in norm or ε"):
        constraint_comparison(sweep(df[df["source"].isin(["nat", "l2_3", "cnn_linf"])]), tmp_path)
