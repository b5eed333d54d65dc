"""Accuracy vs. fine-tuning epoch (raysweep.analysis.epochs) on a hand-made history."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from raysweep.analysis.epochs import EPOCH_LABEL, accuracy_vs_epoch, accuracy_vs_epoch_figure
from raysweep.analysis.figures import ACCURACY_LABEL, DELTA_LABEL, source_styles
from raysweep.analysis.labels import source_labels
from raysweep.analysis.stats import gap_table, summarize
from raysweep.analysis.sweepdata import NotSupported, SweepData

T_2DOF = 4.302652729911275  # t_{0.975, 2}: the 95 % half-width factor for three seeds
T_1DOF = 12.706204736174707  # t_{0.975, 1}
STEPS = (1, 5, 10)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def nat_acc(step: int, seed: int) -> float:
    # Seed 2 is far off: pairing robust seed 0/1 against it would move the delta a lot.
    return 20.0 + 3.0 * step + 5.0 * seed**2


def rob_acc(step: int, seed: int) -> float:
    return nat_acc(step, seed) + 2.0 + seed + 0.1 * step


def history() -> pd.DataFrame:
    """nat and rob (l2) on cifar10 and svhn, 3 seeds, epochs 1/5/10, blocks 3, 100 images.
    rob has no seed-2 run on svhn; mnist has only the natural source (a hole in the sweep)."""
    rows = []
    cells = [("nat", "cifar10"), ("nat", "svhn"), ("nat", "mnist"), ("rob", "cifar10")]
    cells.append(("rob", "svhn"))
    for source, target in cells:
        for seed in range(3):
            if (source, target, seed) == ("rob", "svhn", 2):
                continue
            for step in STEPS:
                value = rob_acc(step, seed) if source == "rob" else nat_acc(step, seed)
                rows.append(
                    {
                        "run_id": f"{source}-{target}-{seed}",
                        "source": source,
                        "source_training": "pgd" if source == "rob" else "natural",
                        "source_norm": "l2" if source == "rob" else "",
                        "source_eps": 3.0 if source == "rob" else 0.0,
                        "source_architecture": "resnet50",
                        "source_dataset": "imagenet",
                        "target": target,
                        "subset_size": "100",
                        "n_train": 100,
                        "seed": seed,
                        "blocks": "3",
                        "epochs": 10,
                        "step": step,
                        "value": value,
                    }
                )
    return pd.DataFrame(rows)


def sweep(frame: pd.DataFrame) -> SweepData:
    data = SweepData("sqlite:///unused.db", "test")
    last = frame.sort_values("step").groupby("run_id").tail(1)
    data.__dict__["finetune"] = last.drop(columns=["step"]).rename(columns={"value": "test_acc"})
    data._histories[("finetune", "test/acc")] = frame
    return data


def test_summary_and_paired_delta_per_epoch(tmp_path: Path) -> None:
    section = accuracy_vs_epoch(sweep(history()), tmp_path)
    summary = pd.read_csv(tmp_path / "accuracy_vs_epoch_summary.csv", dtype={"blocks": str})
    row = summary[(summary["source"] == "rob") & (summary["target"] == "cifar10")]
    row = row[row["step"] == 5].iloc[0]
    values = [rob_acc(5, s) for s in range(3)]  # 37.5, 43.5, 59.5
    assert row["mean"] == pytest.approx(np.mean(values))
    assert row["ci95"] == pytest.approx(T_2DOF * np.std(values, ddof=1) / math.sqrt(3))
    assert row["n"] == 3

    gaps = pd.read_csv(tmp_path / "epoch_gap.csv", dtype={"blocks": str})
    cifar = gaps[(gaps["target"] == "cifar10") & (gaps["step"] == 10)].iloc[0]
    # Seed by seed the delta is 2 + seed + 0.1 * step: [3, 4, 5] at epoch 10.
    assert cifar["delta"] == pytest.approx(4.0)
    assert cifar["ci95"] == pytest.approx(T_2DOF * 1.0 / math.sqrt(3))
    svhn = gaps[(gaps["target"] == "svhn") & (gaps["step"] == 1)].iloc[0]
    # Only seeds 0 and 1 match; pairing across seeds (mean rob - mean nat) would give
    # (25.1 + 31.1) / 2 - (23 + 28 + 43) / 3 = -3.23 instead of 2.6.
    assert svhn["delta"] == pytest.approx(2.6) and svhn["n"] == 2
    unpaired = np.mean([rob_acc(1, s) for s in (0, 1)]) - np.mean([nat_acc(1, s) for s in range(3)])
    assert unpaired == pytest.approx(-3.2333, abs=1e-3)
    assert svhn["ci95"] == pytest.approx(T_1DOF * np.std([2.1, 3.1], ddof=1) / math.sqrt(2))
    mnist = gaps[gaps["target"] == "mnist"]
    assert len(mnist) == 3 and mnist["delta"].isna().all() and (mnist["n"] == 0).all()

    assert "| mnist | 100 | – | – | – |" in section.body
    cifar_row = "| cifar10 | 100 | +3.10 ± 2.48 (n=3) | +3.50 ± 2.48 (n=3) | +4.00 ± 2.48 (n=3) |"
    assert cifar_row in section.body
    pngs = [p for p in section.paths if p.suffix == ".png"]
    assert [p.name for p in pngs] == ["accuracy_vs_epoch_blocks-3_size-100.png"]
    assert pngs[0].read_bytes()[:8] == PNG_MAGIC and pngs[0].with_suffix(".pdf").exists()


def test_figure_draws_means_and_deltas_per_target() -> None:
    frame = history()
    curves = summarize(frame, ["blocks", "subset_size", "target", "source", "step"], "value")
    gaps = gap_table(frame, value="value")
    labels = source_labels(frame)
    assert labels == {"nat": "natural", "rob": "ℓ₂ ε=3"}
    fig = accuracy_vs_epoch_figure(curves, gaps, "title", source_styles(frame), labels)
    axes = fig.get_axes()
    titles = [ax.get_title() for ax in axes]
    assert titles == [
        "cifar10",
        "mnist",
        "svhn",
        "cifar10: robust − natural",
        "mnist: robust − natural",
        "svhn: robust − natural",
    ]
    assert [ax.get_ylabel() for ax in axes] == [ACCURACY_LABEL] * 3 + [DELTA_LABEL] * 3
    assert all(ax.get_xlabel() == EPOCH_LABEL for ax in axes)
    lines = {line.get_label(): line for line in axes[0].get_lines()}
    assert lines["natural"].get_xdata().tolist() == [1.0, 5.0, 10.0]
    expected = [np.mean([nat_acc(step, s) for s in range(3)]) for step in STEPS]
    assert lines["natural"].get_ydata().tolist() == pytest.approx(expected)
    pair = "ℓ₂ ε=3 − natural"
    delta = {line.get_label(): line for line in axes[5].get_lines()}[pair]
    assert delta.get_ydata().tolist() == pytest.approx([2.6, 3.0, 3.5])
    assert not [line for line in axes[4].get_lines() if line.get_label() == pair]
    # The robust source's colour means that source in both rows; hollow marks the delta.
    robust = lines["ℓ₂ ε=3"]
    assert delta.get_color() == robust.get_color() and delta.get_markerfacecolor() == "white"
    # One legend column per source, its difference right below it; n per point in the title.
    legend = fig.legends[0]
    assert [t.get_text() for t in legend.get_texts()] == ["natural", "", "ℓ₂ ε=3", pair]
    assert legend.get_title().get_text() == (
        "n = 2–3 seeds per point; differences: n = 2–3 matched seeds per point"
    )


def test_sharey_shares_accuracy_and_delta_rows_separately() -> None:
    frame = history()
    curves = summarize(frame, ["blocks", "subset_size", "target", "source", "step"], "value")
    gaps = gap_table(frame, value="value")
    fig = accuracy_vs_epoch_figure(curves, gaps, "t", source_styles(frame), sharey=True)
    axes = fig.get_axes()
    assert len({ax.get_ylim() for ax in axes[:3]}) == 1  # the accuracy panels
    assert len({ax.get_ylim() for ax in axes[3:]}) == 1  # the delta panels
    assert axes[0].get_ylim() != axes[3].get_ylim()  # accuracy and delta are not one axis


def test_one_evaluation_per_run_is_not_supported(tmp_path: Path) -> None:
    frame = history()
    with pytest.raises(NotSupported, match="at most once"):
        accuracy_vs_epoch(sweep(frame[frame["step"] == 10]), tmp_path)
    assert not list(tmp_path.iterdir())
