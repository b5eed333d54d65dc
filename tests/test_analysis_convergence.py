"""Report marking: cells with non-converged runs carry †, the linear probe's gap stands beside
the fine-tuned one, report.md counts converged runs (raysweep.analysis.convergence)."""

from __future__ import annotations

import pandas as pd
import pytest

from raysweep.analysis.convergence import (
    cell_flags,
    convergence_section,
    flag_gaps,
    with_linear_probe,
)
from raysweep.analysis.figures import gap_markdown
from raysweep.analysis.stats import gap_table
from raysweep.analysis.transfer_tables import table_markdown, transfer_table

SEEDS = (1, 2)


def finetune() -> pd.DataFrame:
    """rob − nat = +4 / +6 pp on digits (n=100, head only); rob's seed 2 did not converge."""
    rows = []
    for source in ("rob", "nat"):
        for seed in SEEDS:
            rows.append({
                "run_id": f"{source}-{seed}", "source": source,
                "source_training": "pgd" if source == "rob" else "natural",
                "source_norm": "l2" if source == "rob" else "", "source_eps": 0.25,
                "source_architecture": "small_cnn", "source_dataset": "shapes",
                "target": "digits", "subset_size": "100", "n_train": 100, "seed": seed,
                "blocks": "0", "epochs": 20,
                "test_acc": 60.0 + seed + (3.0 + seed if source == "rob" else 0.0),
                "train_converged": 0.0 if (source, seed) == ("rob", 2) else 1.0,
            })  # fmt: skip
    return pd.DataFrame(rows)


def probes() -> pd.DataFrame:
    """The linear probe on the same subsets: rob − nat = −1 pp on both seeds."""
    rows = [
        {"probe": "linear_probe", "source": source, "target": "digits", "subset_size": "100",
         "seed": seed, "probe_linear_acc": 80.0 + seed - (1.0 if source == "rob" else 0.0)}
        for source in ("rob", "nat") for seed in SEEDS
    ]  # fmt: skip
    rows.append({"probe": "distance", "source": "rob", "target": "digits", "probe_emd": 1.0})
    return pd.DataFrame(rows)


def test_probe_accuracy_lands_on_the_runs_of_its_subset() -> None:
    df = with_linear_probe(finetune(), probes())
    assert df.set_index("run_id")["linear_acc"].to_dict() == {
        "rob-1": 80.0, "rob-2": 81.0, "nat-1": 81.0, "nat-2": 82.0
    }  # fmt: skip
    assert with_linear_probe(finetune(), pd.DataFrame())["linear_acc"].isna().all()


def test_flagged_gap_counts_unconverged_runs_and_carries_the_probe_gap() -> None:
    df = with_linear_probe(finetune(), probes())
    gap = flag_gaps(gap_table(df), df)
    row = gap.iloc[0]
    assert row["delta"] == pytest.approx(4.5) and row["unconverged"] == 1
    assert row["probe_delta"] == pytest.approx(-1.0) and row["probe_n"] == 2
    flags = cell_flags(df).set_index("source")["unconverged"].to_dict()
    assert flags == {"nat": 0, "rob": 1}


def test_markdown_marks_the_cell_and_shows_the_probe_column() -> None:
    df = with_linear_probe(finetune(), probes())
    text = gap_markdown(flag_gaps(gap_table(df), df))
    header, _, line = text.splitlines()[2:5]
    assert "(linear probe)" in header
    # The fine-tuned gap, marked; the probe's beside it (not marked: it has no SGD to converge).
    assert line == "| digits | 100 | +4.50 ± 6.35 (n=2)† | -1.00 ± 0.00 (n=2) |"
    converged = finetune().assign(train_converged=1.0)
    assert "†" not in gap_markdown(flag_gaps(gap_table(converged), converged))


def test_transfer_table_marks_rob_and_delta_not_st() -> None:
    long = transfer_table(finetune())
    rows = table_markdown(long).splitlines()[2:]
    marks = {line.split("|")[2].strip(): line.endswith("† |") for line in rows}
    assert marks == {"Rob": True, "St": False, "Δ": True}


def test_report_section_counts_converged_runs() -> None:
    text = convergence_section({"finetune": finetune()})
    assert "- finetune: **3 of 4** runs converged; 1 of 2 cells have a run" in text
    legacy = finetune().drop(columns="train_converged")
    assert convergence_section({"finetune": legacy}) == ""


def test_gap_vs_distance_marks_the_target_and_pools_the_probe_gap() -> None:
    from raysweep.analysis.distance import _markdown, correlation_table, gap_vs_distance

    df = with_linear_probe(finetune(), probes())
    distances = pd.DataFrame([{"source": "nat", "target": "digits", "emd": 2.0}])
    table = gap_vs_distance(df, distances)
    row = table.iloc[0]
    assert row["gap"] == pytest.approx(4.5) and row["unconverged"] == 1
    assert row["probe_gap"] == pytest.approx(-1.0)
    text = _markdown(table, correlation_table(table), {})
    assert "(n=2)† | -1.00 |" in text
