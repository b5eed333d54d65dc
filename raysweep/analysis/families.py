"""The figure families that ``raysweep analyze`` draws, in report order.

Each entry is ``(name, family)`` with ``family(data, out_dir) -> Section`` (see
:mod:`raysweep.analysis.sweepdata`); a family raises ``NotSupported`` when the sweep holds
nothing it can draw. The modules below each own one family (or a few close ones).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from raysweep.analysis.blocks import accuracy_vs_blocks
from raysweep.analysis.cckl import cckl_vs_test_loss, kl_g1_relerr_vs_eps
from raysweep.analysis.constraints import constraint_comparison
from raysweep.analysis.convergence import MARK_NOTE, flag_gaps
from raysweep.analysis.distance import DISTANCE_CAPTION, distance_table, write_gap_vs_distance
from raysweep.analysis.epochs import accuracy_vs_epoch
from raysweep.analysis.figures import (
    GAP_SIGN,
    accuracy_markdown,
    gap_markdown,
    plot_accuracy_vs_subset,
    write_gap_table,
)
from raysweep.analysis.images import inversion_grids, tsne_embeddings
from raysweep.analysis.information import fisher_vs_eps, information_during_training
from raysweep.analysis.labels import source_labels
from raysweep.analysis.search_plots import search_plots
from raysweep.analysis.stats import gap_table, natural_partners, summarize
from raysweep.analysis.sweepdata import (
    NotSupported,
    Section,
    SweepData,
    figure_links,
    file_links,
    link,
    require_columns,
)
from raysweep.analysis.transfer_tables import transfer_tables

# The link helpers live in sweepdata; re-exported for modules that import them from here.
__all__ = ["FAMILIES", "Family", "family_names", "figure_links", "file_links", "link"]

Family = Callable[[SweepData, Path], Section]
CELL = ["source", "target", "subset_size", "blocks"]
NO_PAIR = (
    "{what}: needs a robust and a natural source of the same architecture and source dataset, "
    "both fine-tuned on the same targets"
)


def accuracy_vs_subset(data: SweepData, out_dir: Path) -> Section:
    """Utrera et al. 2021, Fig. 2: accuracy and robust − natural delta vs. training-set size."""
    df = data.finetune
    require_columns(df, CELL, "accuracy vs. subset size")
    summary = summarize(df, CELL)
    summary_path = out_dir / "accuracy_summary.csv"
    summary.to_csv(summary_path, index=False)
    figures = plot_accuracy_vs_subset(df, out_dir, sharey=data.options.sharey)
    labels = source_labels(df)
    parts = [
        "Mean over seeds with its 95% t-interval (band; n seeds per point in the legend); the "
        "delta panels subtract the natural source's accuracy seed by seed "
        f"({GAP_SIGN}). Test accuracy [%] per cell, mean ± 95% t half-width (n runs), best "
        f"accuracy per row in bold; all cells: {file_links([summary_path], out_dir)}.",
        figure_links(figures, out_dir),
    ]
    for b, part in summary.groupby("blocks", sort=True):
        table = accuracy_markdown(part, labels, ["target", "subset_size"])
        parts.append(f"### blocks = {b}\n\n{table}")
    title = "Accuracy vs. training-set size (Utrera et al. 2021, Fig. 2)"
    return Section(title, "\n\n".join(parts), [summary_path, *figures])


def robust_natural_gap(data: SweepData, out_dir: Path) -> Section:
    """Every robust source minus its natural partner, per cell (Utrera Fig. 2(b) as a table)."""
    df = data.finetune
    require_columns(df, CELL, "robust − natural gap")
    if not natural_partners(df):
        raise NotSupported(NO_PAIR.format(what="robust − natural gap"))
    paths = write_gap_table(df, out_dir)
    text = (
        "Each robust source minus the natural source of the same architecture and source "
        "dataset, matched by target, subset size, seed and blocks; mean ± 95% t half-width "
        f"(n matched seeds); {GAP_SIGN}. {MARK_NOTE}; a \"(linear probe)\" column gives the "
        f"linear probe's gap on the same subsets. Files: {file_links(paths, out_dir)}."
    )
    gap = flag_gaps(gap_table(df), df)
    table = gap_markdown(gap, heading="###", labels=source_labels(df))
    return Section("Robust − natural gap [pp]", f"{text}\n\n{table}", paths)


def gap_vs_distance(data: SweepData, out_dir: Path) -> Section:
    """Terzi et al. 2021, Fig. 3: the gap per target against the source → target EMD."""
    what = "gap vs. distance"
    distances = distance_table(data.tracking_uri, data.sweep)
    if distances.empty:
        raise NotSupported(
            f"{what}: the sweep has no finished `distance` probe runs; add a `distance` probe "
            "to the spec"
        )
    if data.finetune.empty or not natural_partners(data.finetune):
        raise NotSupported(NO_PAIR.format(what=what))
    paths = write_gap_vs_distance(data.finetune, distances, out_dir, sharey=data.options.sharey)
    if not paths:
        raise NotSupported(
            f"{what}: no target has both a robust − natural gap and a `distance` probe run "
            "(of the natural or the robust source) to it"
        )
    body = (
        f"{DISTANCE_CAPTION} Table and correlations: {file_links(paths, out_dir)}."
        f"\n\n{figure_links(paths, out_dir)}"
    )
    return Section("Gap vs. dataset distance (Terzi et al. 2021, Fig. 3)", body, paths)


FAMILIES: list[tuple[str, Family]] = [
    ("accuracy_vs_subset", accuracy_vs_subset),
    ("robust_natural_gap", robust_natural_gap),
    ("gap_vs_distance", gap_vs_distance),
    ("accuracy_vs_epoch", accuracy_vs_epoch),
    ("accuracy_vs_blocks", accuracy_vs_blocks),
    ("constraint_comparison", constraint_comparison),
    ("transfer_tables", transfer_tables),
    ("fisher_vs_eps", fisher_vs_eps),
    ("information_during_training", information_during_training),
    ("cckl_vs_test_loss", cckl_vs_test_loss),
    ("kl_g1_relerr_vs_eps", kl_g1_relerr_vs_eps),
    ("inversion_grids", inversion_grids),
    ("tsne_embeddings", tsne_embeddings),
    ("search_plots", search_plots),
]


def family_names() -> list[str]:
    return [name for name, _ in FAMILIES]
