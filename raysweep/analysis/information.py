"""Information figure families: the weight Fisher against ε and information during training.

Terzi et al. 2021 (AAAI), Fig. 4: adversarial training reduces the Fisher information of the
weights; the variational log-variance ln σ² of the weight noise a network tolerates (the
``weight_fisher`` probe, Achille & Soatto 2019) grows with the training ε. The CCKL paper
(Fig. 3-4, 7-8) follows the input-Fisher Frobenius norm ‖F_x‖_F and CCKL epoch by epoch while
a source trains (``pretrain.track_information``), next to its accuracy.

Also the helpers the probe families share: one row per source of a probe (sources are named
and ordered by :mod:`raysweep.analysis.labels`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from raysweep.analysis.figures import (
    LEGEND_SIZE,
    figure_legend,
    panel_grid,
    save_figure,
    source_styles,
)
from raysweep.analysis.labels import (
    KIND_NAMES,
    eps_text,
    is_natural,
    label_of,
    norm_symbol,
    sort_sources,
    source_labels,
)
from raysweep.analysis.sweepdata import (
    NotSupported,
    Section,
    SweepData,
    figure_links,
    file_links,
    require_columns,
)
from raysweep.analysis.tables import markdown_table

FISHER_MEAN = "probe_fisher_mean_logvar"
FISHER_LAYER_PREFIX = "probe_fisher_logvar_"
LOGVAR_LABEL = "ln σ² of weight noise (mean over filters)"
# Panel titles in words (the y labels carry units); metric names are for the CSV.
PANEL_TITLES = {
    "train/fx_fnorm": "input Fisher norm",
    "train/cckl": "CCKL",
    "test/acc": "clean accuracy",
    "adv/acc": "PGD accuracy",
    "adv/acc_cw": "CW accuracy",
    "test/loss": "test loss",
    "train/weight_norm": "weight norm",
}
# More trained ε values than this: a plain numeric axis instead of one tick per source.
MAX_EPS_TICKS = 8
SOURCE_INFO = ["source", "source_training", "source_norm", "source_eps"]
# Families of sources that share an ε axis: a natural source is ε = 0 only of its own kind.
FAMILY = ["source_architecture", "source_dataset"]
# (metric, y label, log y) of the per-epoch pretraining panels, in panel order.
TRAINING_PANELS: tuple[tuple[str, str, bool], ...] = (
    ("train/fx_fnorm", "input Fisher ‖F_x‖_F (mean over images)", True),
    ("train/cckl", "CCKL [nats]", False),
    ("test/acc", "clean test accuracy [%]", False),
    ("adv/acc", "PGD test accuracy [%]", False),
    ("adv/acc_cw", "CW (PGD on the margin) test accuracy [%]", False),
    ("test/loss", "test cross-entropy [nats]", False),
    ("train/weight_norm", "weight norm ‖W‖₂ (conv + linear)", False),
)


def latest_probe_rows(
    data: SweepData, probe: str, needed: Sequence[str], what: str
) -> pd.DataFrame:
    """The FINISHED runs of ``probe`` with every ``needed`` column set, one per source: the one
    that ended last (a probe re-run with new params replaces the old one). Sorted by training
    kind, norm, ε, source. Raises :class:`NotSupported` when there is none."""
    # What the user reads in "Not drawn": which probe to add, never which column is missing.
    reason = f"the sweep has no finished `{probe}` probe runs; add a `{probe}` probe to the spec"
    df = data.probes
    require_columns(df, ["probe", "source", *needed], what, reason)
    rows = df[(df["probe"] == probe)].dropna(subset=["source", *needed])
    if rows.empty:
        raise NotSupported(f"{what}: {reason}")
    rows = rows.sort_values(["end_time", "run_id"]).drop_duplicates("source", keep="last")
    return sort_sources(rows)


def links(paths: list[Path], out_dir: Path) -> tuple[str, str]:
    """(table links, inline figures) of ``paths`` for a report section."""

    return file_links(paths, out_dir), figure_links(paths, out_dir)


def _family_name(row: pd.Series | tuple) -> str:
    return " / ".join(str(v) for v in row if isinstance(v, str) and v)


def eps_groups(df: pd.DataFrame) -> dict[tuple[str, str], pd.DataFrame]:
    """Per (training kind, norm) of the robust sources: its rows plus the natural rows at
    ε = 0. Sources without an ε (e.g. Gaussian noise) are on no ε axis and are left out; a sweep
    with natural sources only gives one ``("natural", "")`` group."""
    natural = df[is_natural(df)].assign(source_eps=0.0)
    # Gaussian-noise sources log ε = 0 (they have no attack budget): not on any ε axis either.
    robust = df[~is_natural(df) & (pd.to_numeric(df["source_eps"], errors="coerce") > 0)]
    groups: dict[tuple[str, str], pd.DataFrame] = {}
    for (kind, norm), part in robust.groupby(["source_training", "source_norm"], dropna=False):
        groups[(str(kind), str(norm))] = pd.concat([natural, part], ignore_index=True)
    if not groups and not natural.empty:
        groups[("natural", "")] = natural
    return groups


def _line_per_family(ax: Axes, part: pd.DataFrame, value: str, color: object = None) -> None:
    """``value`` against ε, one line per (architecture, dataset) through the per-ε means."""
    family = [c for c in FAMILY if c in part.columns]
    grouped = part.groupby(family, dropna=False) if family else [((), part)]
    many = family and part[family].drop_duplicates().shape[0] > 1
    for keys, line in grouped:
        means = line.groupby("source_eps")[value].mean().sort_index()
        label = _family_name(keys if isinstance(keys, tuple) else (keys,)) if many else None
        ax.plot(means.index, means.to_numpy(), marker="o", color=color, label=label)
        ax.scatter(line["source_eps"], line[value], s=12, color=color, alpha=0.5)


def fisher_table(rows: pd.DataFrame) -> pd.DataFrame:
    """source, training, norm, ε, architecture, dataset, mean log-variance, one column per
    layer (``logvar/<layer>``): one row per source as the probe logged it."""
    layers = [c for c in rows.columns if c.startswith(FISHER_LAYER_PREFIX)]
    keep = [*SOURCE_INFO, *(c for c in FAMILY if c in rows), FISHER_MEAN, *layers]
    out = rows[keep].rename(columns={FISHER_MEAN: "mean_logvar"})
    return out.rename(columns={c: "logvar/" + c[len(FISHER_LAYER_PREFIX) :] for c in layers})


def group_title(kind: str, norm: str) -> str:
    """``PGD ℓ₂``, ``TRADES ℓ∞``: the title of one ε axis."""
    name = KIND_NAMES.get(kind) if kind in ("natural", "gaussian") else kind.upper()
    return f"{name} {norm_symbol(norm)}".strip()


def _eps_ticks(ax: Axes, eps: pd.Series, norm: str) -> None:
    """Ticks on the trained ε values, written as the sources are (``8/255``), while few."""
    values = sorted(set(pd.to_numeric(eps, errors="coerce").dropna()))
    if 0 < len(values) <= MAX_EPS_TICKS:
        ax.set_xticks(values, [eps_text(v, norm) for v in values])


def fisher_figures(table: pd.DataFrame, sharey: bool = False) -> dict[str, Figure]:
    """Terzi Fig. 4: mean ln σ² against training ε, a panel per (kind, norm) with the natural
    source at ε = 0; and the same per layer (a line per layer), a panel per kind and norm.
    ``sharey`` gives the panels of each figure one y-axis."""
    groups = eps_groups(table)
    if not groups:
        raise ValueError(
            "no natural or adversarially trained source to place on an ε axis (Gaussian-noise "
            "sources have no ε)"
        )
    layers = [c for c in table.columns if c.startswith("logvar/")]
    title = "Weight-Fisher log-variance vs. training ε (Terzi Fig. 4)"
    fig, axes = panel_grid(len(groups), title, sharey=sharey)
    layer_title = title.replace(" vs.", " per layer vs.")
    per_layer, layer_axes = panel_grid(len(groups), layer_title, sharey=sharey)
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    for ax, lax, ((kind, norm), part) in zip(axes, layer_axes, groups.items(), strict=True):
        _line_per_family(ax, part, "mean_logvar", color="black")
        for i, layer in enumerate(layers):
            lpart = part.dropna(subset=[layer])
            means = lpart.groupby("source_eps")[layer].mean().sort_index()
            color = cmap(i / max(1, len(layers) - 1))
            lax.plot(means.index, means.to_numpy(), marker=".", color=color, label=layer[7:])
        for a in (ax, lax):
            a.set_title(group_title(kind, norm))
            a.set_xlabel(f"training ε ({norm_symbol(norm) or 'none'}, pixels in [0, 1])")
            a.set_ylabel(LOGVAR_LABEL)
            a.grid(True, alpha=0.3)
            _eps_ticks(a, part["source_eps"], norm)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=LEGEND_SIZE)
    figure_legend(per_layer, layer_axes)
    return {"fisher_logvar_vs_eps": fig, "fisher_layer_logvar_vs_eps": per_layer}


def fisher_vs_eps(data: SweepData, out_dir: Path) -> Section:
    """Terzi et al. 2021, Fig. 4: weight-Fisher log-variance of each source against its ε."""
    what = "Fisher log-variance vs. ε"
    rows = latest_probe_rows(data, "weight_fisher", [FISHER_MEAN], what)
    require_columns(
        rows,
        SOURCE_INFO,
        what,
        "the `weight_fisher` probe runs do not record how their sources were trained (kind, "
        "norm, ε); re-run the probes with this version of raysweep",
    )
    table = fisher_table(rows)
    try:
        figures = fisher_figures(table, data.options.sharey)
    except ValueError as error:
        raise NotSupported(f"{what}: {error}") from error
    csv_path = out_dir / "fisher_vs_eps.csv"
    out_dir.mkdir(parents=True, exist_ok=True)
    table.to_csv(csv_path, index=False)
    paths = [csv_path]
    for stem, fig in figures.items():
        paths += save_figure(fig, out_dir, stem)
    labels = source_labels(table)
    md = [
        [label_of(labels, r["source"]), f"{r['mean_logvar']:.3f}"] for r in table.to_dict("records")
    ]
    tables, figures_md = links(paths, out_dir)
    body = (
        "Mean over filters of ln σ², the log-variance of the weight noise each source tolerates "
        "(variational weight Fisher, Achille & Soatto 2019): larger = less information in the "
        f"weights. Natural sources at ε = 0. Per-layer values: {tables}.\n\n"
        + markdown_table(["source", "mean ln σ²"], md)
        + f"\n\n{figures_md}"
    )
    return Section("Weight Fisher vs. ε (Terzi et al. 2021, Fig. 4)", body, paths)


def training_curves(data: SweepData) -> pd.DataFrame:
    """Long frame ``source, source_training, source_norm, source_eps, metric, epoch, value``
    of the per-epoch pretraining metrics of :data:`TRAINING_PANELS` that were logged."""
    frames = []
    for metric, _, _ in TRAINING_PANELS:
        h = data.history("pretrain", metric)
        if h.empty:
            continue
        info = [c for c in SOURCE_INFO if c in h.columns]
        frames.append(h[[*info, "step", "value"]].assign(metric=metric))
    if not frames:
        return pd.DataFrame(columns=[*SOURCE_INFO, "metric", "epoch", "value"])
    out = pd.concat(frames, ignore_index=True).rename(columns={"step": "epoch"})
    return out.sort_values(["metric", "source", "epoch"]).reset_index(drop=True)


def training_figure(curves: pd.DataFrame) -> Figure:
    """A panel per logged metric of :data:`TRAINING_PANELS` against the epoch, a line per
    source (CCKL paper Fig. 3-4: ‖F_x‖_F during natural / PGD / TRADES training)."""
    panels = [p for p in TRAINING_PANELS if p[0] in set(curves["metric"])]
    styles, labels = source_styles(curves), source_labels(curves)
    # Panels show different quantities (F-norm, CCKL, accuracy...): no shared y-axis here.
    fig, axes = panel_grid(len(panels), "Information and accuracy during pretraining")
    for ax, (metric, ylabel, log) in zip(axes, panels, strict=True):
        part = curves[curves["metric"] == metric]
        for source in [s for s in styles if s in set(part["source"])]:
            line = part[part["source"] == source]
            ax.plot(line["epoch"], line["value"], label=label_of(labels, source),
                    **styles[source].kwargs())  # fmt: skip
        if log and (curves.loc[curves["metric"] == metric, "value"] > 0).all():
            ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(ylabel)
        ax.set_title(PANEL_TITLES.get(metric, metric))
        ax.grid(True, alpha=0.3)
    figure_legend(fig, axes)
    return fig


def information_during_training(data: SweepData, out_dir: Path) -> Section:
    """CCKL paper Fig. 3-4 (Terzi Fig. 5 for the weight norm): F-norm, CCKL, accuracy per epoch."""
    what = "information during training"
    fix = "set `pretrain.track_information` in the spec to track it while a source trains"
    require_columns(data.pretrain, ["source"], what, f"the sweep trained no source; {fix}")
    if data.history("pretrain", "train/fx_fnorm").empty:
        raise NotSupported(f"{what}: no source tracked its input Fisher during training; {fix}")
    curves = training_curves(data)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path = out_dir / "information_during_training.csv"
    curves.to_csv(csv_path, index=False)
    paths = [
        csv_path,
        *save_figure(training_figure(curves), out_dir, "information_during_training"),
    ]
    tables, figures_md = links(paths, out_dir)
    body = (
        "Per epoch of pretraining, on the fixed test subset of `pretrain.track_information`: the "
        "mean Frobenius norm of the input Fisher F_x = Σ_j p_j ∇ₓlog p_j ∇ₓlog p_jᵀ and CCKL; "
        f"accuracy, test loss and weight norm on the whole test set. Values: {tables}."
        f"\n\n{figures_md}"
    )
    return Section("Information during pretraining (CCKL paper Fig. 3-4)", body, paths)
