"""Figures and tables of raysweep.analysis.figures / tables on a hand-made frame."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from raysweep.analysis.figures import (
    ACCURACY_LABEL,
    DELTA_LABEL,
    SIZE_LABEL,
    TICK_SIZE,
    accuracy_vs_subset_figure,
    delta_vs_subset_figure,
    plot_accuracy_vs_subset,
    size_axis,
    source_styles,
    write_gap_table,
)
from raysweep.analysis.stats import gap_table
from raysweep.analysis.tables import MISSING, format_cell, pivot_markdown

N_TRAIN = {"100": 100, "400": 400, "all": 50_000}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
NAT, L2 = "natural", "ℓ₂ ε=3"  # how the two sources are shown: by training, not by name


def frame() -> pd.DataFrame:
    """Two targets, natural and l2 sources, three sizes, three seeds; robust is 2 + seed/2
    points better. svhn/all has only the robust source (a hole in the sweep)."""
    rows = []
    for source, training, bonus in [("nat", "natural", 0.0), ("l2_3", "pgd", 2.0)]:
        for target, base in [("cifar10", 50.0), ("svhn", 70.0)]:
            for i, subset in enumerate(N_TRAIN):
                if target == "svhn" and subset == "all" and source == "nat":
                    continue
                for seed in range(3):
                    rows.append(
                        {
                            "source": source,
                            "source_training": training,
                            "source_norm": "" if training == "natural" else "l2",
                            "source_eps": 0.0 if training == "natural" else 3.0,
                            "source_architecture": "resnet50",
                            "source_dataset": "imagenet",
                            "target": target,
                            "subset_size": subset,
                            "n_train": N_TRAIN[subset],
                            "seed": seed,
                            "blocks": "3",
                            "epochs": 5,
                            "test_acc": base + 10 * i + seed + bonus * (1 + seed / 2),
                        }
                    )
    return pd.DataFrame(rows)


def lines_by_label(ax: object) -> dict[str, object]:
    return {line.get_label(): line for line in ax.get_lines()}  # type: ignore[attr-defined]


def test_accuracy_figure_has_labelled_panels_and_means() -> None:
    fig = accuracy_vs_subset_figure(frame(), "3")
    axes = fig.get_axes()
    assert [ax.get_title() for ax in axes] == ["cifar10", "svhn"]
    for ax in axes:
        assert ax.get_xlabel() == SIZE_LABEL and ax.get_ylabel() == ACCURACY_LABEL
        assert ax.get_xscale() == "log"
        assert [t.get_text() for t in ax.get_xticklabels()] == ["100", "400", "all\n(50k)"]
        assert {line.get_label() for line in ax.get_lines()} == {NAT, L2}
    cifar = lines_by_label(axes[0])
    assert cifar[NAT].get_xdata().tolist() == [100.0, 400.0, 50_000.0]
    assert cifar[NAT].get_ydata().tolist() == pytest.approx([51.0, 61.0, 71.0])
    assert cifar[L2].get_ydata().tolist() == pytest.approx([54.0, 64.0, 74.0])
    svhn_nat = lines_by_label(axes[1])[NAT]
    assert svhn_nat.get_xdata().tolist() == [100.0, 400.0]  # the hole stays a hole
    assert fig._suptitle.get_text().startswith("Fine-tuning accuracy")
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == [NAT, L2]  # natural first
    assert legend.get_title().get_text() == "n = 3 seeds per point"
    with pytest.raises(ValueError, match="valid: 3"):
        accuracy_vs_subset_figure(frame(), "9")


def test_labels_come_from_params_not_names() -> None:
    df = frame().replace({"source": {"nat": "run_a", "l2_3": "run_b"}})
    fig = accuracy_vs_subset_figure(df, "3")
    assert {line.get_label() for line in fig.get_axes()[0].get_lines()} == {NAT, L2}


def test_sources_differ_in_marker_and_dashes_not_only_colour() -> None:
    """Readable in greyscale: each source has its own marker and line style."""
    lines = lines_by_label(accuracy_vs_subset_figure(frame(), "3").get_axes()[0])
    assert lines[NAT].get_marker() != lines[L2].get_marker()
    assert lines[NAT].get_linestyle() != lines[L2].get_linestyle()
    styles = source_styles(frame())
    assert list(styles) == ["nat", "l2_3"] and styles["nat"].color == "black"


def test_tick_labels_are_horizontal_readable_and_thinned() -> None:
    fig = accuracy_vs_subset_figure(frame(), "3")
    for label in fig.get_axes()[0].get_xticklabels():
        assert label.get_rotation() == 0 and label.get_fontsize() >= TICK_SIZE >= 9
    sizes = ["100", "200", "400", "800", "1600", "3200", "6400", "12800", "25600", "all"]
    ticks = pd.DataFrame({"subset_size": sizes, "x": [*map(float, sizes[:-1]), 50_000.0]})
    ax = fig.get_axes()[0]
    size_axis(ax, ticks)
    texts = [t.get_text() for t in ax.get_xticklabels()]
    assert len(ax.get_xticks()) == 10  # a tick on every size ...
    assert texts == ["", "200", "", "800", "", "3.2k", "", "12.8k", "", "all\n(50k)"]  # ... apart


def test_sharey_gives_panels_one_y_axis() -> None:
    own = [ax.get_ylim() for ax in accuracy_vs_subset_figure(frame(), "3").get_axes()]
    assert own[0] != own[1]  # cifar10 is ~20 points below svhn: each panel scales itself
    shared = [
        ax.get_ylim() for ax in accuracy_vs_subset_figure(frame(), "3", sharey=True).get_axes()
    ]
    assert shared[0] == shared[1]
    assert shared[0][0] <= min(own[0][0], own[1][0]) and shared[0][1] >= max(own[0][1], own[1][1])
    delta = delta_vs_subset_figure(gap_table(frame()), "3", sharey=True).get_axes()
    assert delta[0].get_ylim() == delta[1].get_ylim()


def test_delta_figure_has_zero_line_and_deltas() -> None:
    fig = delta_vs_subset_figure(gap_table(frame()), "3", labels={"nat": NAT, "l2_3": L2})
    axes = fig.get_axes()
    assert [ax.get_title() for ax in axes] == ["cifar10", "svhn"]
    pair = f"{L2} − {NAT}"
    for ax in axes:
        assert ax.get_xlabel() == SIZE_LABEL and ax.get_ylabel() == DELTA_LABEL
        zero = [line for line in ax.get_lines() if list(line.get_ydata()) == [0.0, 0.0]]
        assert len(zero) == 1 and zero[0].get_linestyle() == "--"
    delta = lines_by_label(axes[0])[pair]
    assert delta.get_ydata().tolist() == pytest.approx([3.0, 3.0, 3.0])  # 2 * (1 + mean seed/2)
    svhn = lines_by_label(axes[1])[pair]
    assert svhn.get_xdata().tolist() == [100.0, 400.0]
    assert fig.legends[0].get_title().get_text() == "n = 3 matched seeds per point"


def test_delta_keeps_the_source_colour_with_hollow_markers(tmp_path: Path) -> None:
    """The delta of a robust source is its colour (one meaning per colour), marked as a
    difference by hollow markers; the accuracy line of the same source is filled."""
    styles = source_styles(frame())
    accuracy = lines_by_label(accuracy_vs_subset_figure(frame(), "3", styles=styles).get_axes()[0])
    labels = {"nat": NAT, "l2_3": L2}
    fig = delta_vs_subset_figure(gap_table(frame()), "3", styles=styles, labels=labels)
    delta = lines_by_label(fig.get_axes()[0])[f"{L2} − {NAT}"]
    assert delta.get_color() == accuracy[L2].get_color()
    assert delta.get_marker() == accuracy[L2].get_marker()
    assert delta.get_markerfacecolor() == "white" != accuracy[L2].get_markerfacecolor()


def test_plot_accuracy_vs_subset_writes_png_and_pdf(tmp_path: Path) -> None:
    paths = plot_accuracy_vs_subset(frame(), tmp_path / "figs")
    names = sorted(p.name for p in paths)
    assert names == [
        "accuracy_vs_subset_blocks-3.pdf",
        "accuracy_vs_subset_blocks-3.png",
        "delta_vs_subset_blocks-3.pdf",
        "delta_vs_subset_blocks-3.png",
    ]
    for path in paths:
        data = path.read_bytes()
        assert len(data) > 10_000
        assert data.startswith(PNG_MAGIC if path.suffix == ".png" else b"%PDF")
    with pytest.raises(ValueError, match="valid: 3"):
        plot_accuracy_vs_subset(frame(), tmp_path, blocks="full")


def test_natural_only_frame_draws_no_delta(tmp_path: Path) -> None:
    df = frame()
    paths = plot_accuracy_vs_subset(df[df["source"] == "nat"], tmp_path)
    assert sorted(p.name for p in paths) == [
        "accuracy_vs_subset_blocks-3.pdf",
        "accuracy_vs_subset_blocks-3.png",
    ]


def test_write_gap_table(tmp_path: Path) -> None:
    csv_path, md_path = write_gap_table(frame(), tmp_path)
    gap = pd.read_csv(csv_path, dtype={"subset_size": str, "blocks": str})
    assert len(gap) == 6
    row = gap.set_index(["target", "subset_size"]).loc[("cifar10", "100")]
    assert row["delta"] == pytest.approx(3.0) and row["n"] == 3
    # deltas 2, 3, 4 -> s = 1
    assert row["ci95"] == pytest.approx(4.302652729749464 / math.sqrt(3))
    hole = gap.set_index(["target", "subset_size"]).loc[("svhn", "all")]
    assert np.isnan(hole["delta"]) and hole["n"] == 0
    text = md_path.read_text()
    assert f"| target | subset_size | {L2} − {NAT} |" in text
    assert "| svhn | all | –" in text
    assert "| cifar10 | 100 | +3.00 ± 2.48 (n=3) |" in text
    assert "**" not in text  # a difference has no "best": no bold, the sign says which way
    assert "positive = the robust source is more accurate" in text


def test_markdown_cells_and_bold_best() -> None:
    assert format_cell(float("nan"), 1.0, 0) == MISSING
    assert format_cell(61.234, float("nan"), 1) == "61.23 (n=1)"
    assert format_cell(-0.5, 0.25, 4, signed=True) == "-0.50 ± 0.25 (n=4)"
    summary = pd.DataFrame(
        {
            "target": ["a", "a", "a", "b"],
            "subset_size": ["all", "100", "100", "100"],
            "source": ["x", "x", "y", "x"],
            "mean": [90.0, 50.0, 55.0, 40.0],
            "ci95": [1.0, 2.0, 3.0, float("nan")],
            "n": [3, 3, 3, 1],
        }
    )
    index = ["target", "subset_size"]
    lines = pivot_markdown(summary, index, "source", bold_best=True).splitlines()
    assert lines[0] == "| target | subset_size | x | y |"
    assert lines[2] == "| a | 100 | 50.00 ± 2.00 (n=3) | **55.00 ± 3.00 (n=3)** |"
    assert lines[3] == "| a | all | 90.00 ± 1.00 (n=3) | – |"  # one value: nothing to bold
    assert lines[4] == "| b | 100 | 40.00 (n=1) | – |"
    assert "**" not in pivot_markdown(summary, index, "source")  # bold only when asked
    with pytest.raises(ValueError, match="no 'best'"):
        pivot_markdown(summary, index, "source", signed=True, bold_best=True)
