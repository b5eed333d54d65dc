"""Utrera et al. 2021, Fig. 5(c)-(e): which adversarial constraint transfers better.

Two comparisons between robust sources of the same architecture, source dataset and training
method (e.g. PGD), as differences of their test accuracies:

* ``norm`` — ℓ2 vs. ℓ∞ (Fig. 5(d), (e): ‖δ‖₂ ≤ 3 minus each ℓ∞ model): every pair of sources
  whose ``source_norm`` differs, ordered so that the alphabetically first norm ("l2") is the
  minuend, whatever their ε.
* ``eps`` — small vs. large ε of the same norm (Fig. 5(c): ℓ∞ 4/255 minus ℓ∞ 8/255).

As in the paper the delta is of accuracies, not of gaps to the natural source: with seed-matched
runs (acc_A − acc_nat) − (acc_B − acc_nat) = acc_A − acc_B, so the natural source adds nothing
but lost seeds. delta = acc_first − acc_second, paired on (target, subset size, seed, blocks),
mean ± 95 % t half-width over matched seeds, drawn against the number of training images, one
panel per target, one figure per (comparison, blocks).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from raysweep.analysis.figures import delta_by_target_figure, save_figure, styles_for
from raysweep.analysis.labels import pair_column, source_labels
from raysweep.analysis.results import SOURCE_PARAMS
from raysweep.analysis.stats import (
    NATURAL,
    blocks_order,
    matched_gaps,
    pair_on_columns,
    subset_order,
)
from raysweep.analysis.sweepdata import (
    NotSupported,
    Section,
    SweepData,
    compose_section,
    require_columns,
    write_tables,
)
from raysweep.analysis.tables import pivot_markdown

COMPARISONS = ("norm", "eps")
SOURCE_COLUMNS = list(SOURCE_PARAMS)
REQUIRED = [*SOURCE_COLUMNS, "target", "subset_size", "blocks", "seed"]
NORM_NAMES = {"l2": "ℓ₂", "linf": "ℓ∞"}
SIGN = "positive = the first-named source is more accurate"
TITLE = {
    "norm": "Constraint type: seed-matched test accuracy delta between norms",
    "eps": "Constraint size: seed-matched test accuracy delta, smaller − larger ε",
}


def constraint_pairs(df: pd.DataFrame) -> pd.DataFrame:
    """Pairs of robust sources (same architecture, source dataset and training method) to
    compare: columns ``comparison`` (``norm`` / ``eps``), ``first``, ``second`` (delta =
    first − second), ``first_norm``, ``first_eps``, ``second_norm``, ``second_eps``."""
    sources = df[SOURCE_COLUMNS].drop_duplicates("source")
    robust = sources[sources["source_training"] != NATURAL]
    same = ["source_architecture", "source_dataset", "source_training"]
    pairs = robust.merge(robust, on=same, suffixes=("_1", "_2"))
    norm_1, norm_2 = pairs["source_norm_1"].astype(str), pairs["source_norm_2"].astype(str)
    by_norm = (norm_1 != norm_2) & (norm_1 < norm_2)
    by_eps = (norm_1 == norm_2) & (pairs["source_eps_1"] < pairs["source_eps_2"])
    pairs = pairs.assign(comparison=None)
    pairs.loc[by_norm, "comparison"] = "norm"
    pairs.loc[by_eps, "comparison"] = "eps"
    pairs = pairs[pairs["comparison"].notna()]
    out = pd.DataFrame(
        {
            "comparison": pairs["comparison"],
            "first": pairs["source_1"],
            "second": pairs["source_2"],
            "first_norm": pairs["source_norm_1"],
            "first_eps": pairs["source_eps_1"],
            "second_norm": pairs["source_norm_2"],
            "second_eps": pairs["source_eps_2"],
        }
    )
    return out.sort_values(["comparison", "first", "second"]).reset_index(drop=True)


def constraint_table(df: pd.DataFrame, value: str = "test_acc") -> pd.DataFrame:
    """Per pair of :func:`constraint_pairs` and cell (target, subset size, blocks[, epochs]):
    ``first_acc``, ``second_acc`` (means over matched seeds), ``delta`` = mean of the
    seed-matched first − second, ``ci95`` (t half-width), ``n`` matched seeds (0 and NaN for a
    cell only one source has), ``n_train``, and the pair's norms and ε."""
    pair_on = pair_on_columns(df)
    parts = []
    for pair in constraint_pairs(df).to_dict("records"):
        gaps = matched_gaps(df, pair["first"], pair["second"], pair_on, value)
        renamed = {"robust_acc": "first_acc", "natural_acc": "second_acc"}
        gaps = gaps.drop(columns=["robust", "natural"]).rename(columns=renamed)
        parts.append(gaps.assign(**pair))
    if not parts:
        return pd.DataFrame()
    out = pd.concat(parts, ignore_index=True)
    out["pair"] = out["first"] + " − " + out["second"]
    head = ["comparison", "pair", "first", "second", "first_norm", "first_eps"]
    head += ["second_norm", "second_eps"]
    out = out[[*head, *(c for c in out.columns if c not in head)]]
    out["_order"] = out["subset_size"].map(subset_order)
    out = out.sort_values(["comparison", "pair", "target", "blocks", "_order"], kind="stable")
    return out.drop(columns="_order").reset_index(drop=True)


def _ylabel(comparison: str, part: pd.DataFrame) -> str:
    if comparison == "eps":
        return "acc(smaller ε) − acc(larger ε) [pp]"
    first, second = set(part["first_norm"]), set(part["second_norm"])
    if len(first) == 1 and len(second) == 1:
        a, b = (NORM_NAMES.get(n, n) for n in (first.pop(), second.pop()))
        return f"acc({a} source) − acc({b} source) [pp]"
    return "acc(first) − acc(second) [pp]"


def labelled(table: pd.DataFrame, labels: dict[str, str]) -> tuple[pd.DataFrame, list[str]]:
    """``table`` with ``pair`` as labels (``ℓ₂ ε=3 − ℓ∞ ε=4/255``) and the pairs in order."""
    pair, order = pair_column(table, "first", "second", labels)
    return table.assign(pair=pair), order


def plot_constraints(
    table: pd.DataFrame, out_dir: Path, labels: dict[str, str] | None = None, sharey: bool = False
) -> list[Path]:
    """``constraint_<comparison>_blocks-<b>`` per comparison and blocks value with matches;
    a line per pair (named by ``labels``), hollow markers (a difference)."""
    table, order = labelled(table, labels or {})
    styles = styles_for(order)
    paths: list[Path] = []
    for comparison in COMPARISONS:
        part = table[(table["comparison"] == comparison) & table["delta"].notna()]
        for blocks in sorted(part["blocks"].unique(), key=blocks_order):
            here = part[part["blocks"] == blocks].assign(line=lambda f: f["pair"])
            title = f"{TITLE[comparison]} (blocks={blocks}, mean ± 95% CI over seeds)"
            ylabel = _ylabel(comparison, here)
            fig = delta_by_target_figure(here, title, ylabel, styles, sharey=sharey)
            paths += save_figure(fig, out_dir, f"constraint_{comparison}_blocks-{blocks}")
    return paths


def constraint_markdown(table: pd.DataFrame, labels: dict[str, str] | None = None) -> str:
    """Per (comparison, blocks): rows (target, subset size), one column per pair (named by
    ``labels``), cells ``delta ± ci95 (n)`` [pp], signed, no bold (a difference has no best)."""
    table, order = labelled(table, labels or {})
    sections = []
    index = ["target", "subset_size"]
    if "epochs" in table and table["epochs"].nunique() > 1:
        index.append("epochs")
    for comparison in COMPARISONS:
        part = table[table["comparison"] == comparison]
        for blocks in sorted(part["blocks"].unique(), key=blocks_order):
            cells = part[part["blocks"] == blocks]
            columns = [p for p in order if p in set(cells["pair"])]
            markdown = pivot_markdown(cells, index, "pair", mean="delta", signed=True,
                                      column_values=columns)  # fmt: skip
            sections.append(f"### {comparison}: blocks = {blocks}\n\n{markdown}")
    return "\n\n".join(sections)


def constraint_comparison(data: SweepData, out_dir: Path) -> Section:
    """Utrera et al. 2021, Fig. 5(c)-(e): ℓ2 − ℓ∞ and small − large ε, seed-matched.

    Writes ``constraint_deltas.csv`` / ``.md`` (:func:`constraint_table`) and the figures.
    """

    df = data.finetune
    require_columns(df, REQUIRED, "constraint comparison")
    table = constraint_table(df)
    if table.empty or table["delta"].notna().sum() == 0:
        raise NotSupported(
            "constraint comparison: needs two robust sources of the same architecture, source "
            "dataset and training method that differ in norm or ε, fine-tuned on the same cells"
        )
    labels = source_labels(df)
    markdown = constraint_markdown(table, labels)
    files = write_tables(
        out_dir,
        {"constraint_deltas.csv": table},
        {"constraint_deltas.md": f"# Constraint comparison [pp]\n\n{SIGN}.\n\n{markdown}"},
    )
    figures = plot_constraints(table, out_dir, labels, data.options.sharey)
    text = (
        "Test accuracy of one robust source minus another's (same architecture, source dataset "
        "and training method), matched by target, subset size, seed and blocks; mean ± 95% t "
        "half-width (n matched seeds); "
        f"{SIGN}. `norm`: ℓ₂ − ℓ∞ sources; `eps`: smaller − larger ε of one norm."
    )
    title = "Constraint type and size (Utrera et al. 2021, Fig. 5)"
    return compose_section(title, text, files, figures, markdown, out_dir)
