"""CCKL figure families (*Towards disentangling non-robust and robust components in performance
metric*, ICLR submission): CCKL against the test loss, and |KL − G1|/KL against ε.

CCKL = E_{(x_i, y_i), (x_j, y_j): y_i ≠ y_j} KL(f(x_i) ‖ f(x_j)) (Eq. 2). The paper (App. B,
Fig. 6) correlates it with the test cross-entropy over the epochs of training (Pearson r =
−0.67 on CIFAR-10, −0.80 on CIFAR-100 for a ResNet-20). Its Table 2 checks the second-order
expansion KL(f(x) ‖ f(x + η)) ≈ G1 = ½ηᵀF_xη: the relative error |KL − G1|/KL grows with ‖η‖ = ε.

Two units of correlation, named wherever r is shown: the epochs of one source's training (as
the paper does; successive epochs of one run are not independent samples, so their interval
is descriptive) and the sources (one point per source). Below four points r has no interval.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from raysweep.analysis.distance import Correlation, correlation_text, correlations
from raysweep.analysis.figures import (
    LEGEND_SIZE,
    Style,
    panel_grid,
    save_figure,
    source_styles,
)
from raysweep.analysis.information import latest_probe_rows, links
from raysweep.analysis.labels import label_of, norm_symbol, sort_sources, source_labels
from raysweep.analysis.sweepdata import NotSupported, Section, SweepData
from raysweep.analysis.tables import MISSING, markdown_table

LOSS_LABEL = "test cross-entropy [nats]"
CCKL_LABEL = "CCKL [nats]"
RELERR_PREFIX = "probe_kl_g1_relerr_eps_"
POINT_COLUMNS = ["scope", "source", "epoch", "test_loss", "cckl"]
# What one point of each scope is: the n of its correlation counts these.
UNITS = {"epoch": "epochs", "source": "sources"}


def _r_text(c: Correlation, scope: str) -> str:
    """``r=-0.67 [-0.90, -0.12] (n=10 epochs)`` (Pearson, Fisher-z 95 % CI from four points
    on), or why there is no interval or no r."""
    return correlation_text(c, UNITS.get(scope, "points"), spearman=False)


def epoch_points(data: SweepData) -> pd.DataFrame:
    """Per source and epoch of pretraining: tracked ``train/cckl`` and ``test/loss``."""
    cckl = data.history("pretrain", "train/cckl")
    loss = data.history("pretrain", "test/loss")
    if cckl.empty or loss.empty:
        return pd.DataFrame(columns=POINT_COLUMNS)
    both = cckl[["run_id", "source", "step", "value"]].merge(
        loss[["run_id", "step", "value"]], on=["run_id", "step"], suffixes=("_c", "_l")
    )
    out = both.rename(columns={"step": "epoch", "value_c": "cckl", "value_l": "test_loss"})
    return out.assign(scope="epoch")[POINT_COLUMNS]


def source_points(data: SweepData) -> pd.DataFrame:
    """Per source: the ``cckl`` probe's CCKL and the last epoch's test loss of its training."""
    pre = data.pretrain
    if "test_loss" not in pre.columns or "probe" not in data.probes.columns:
        return pd.DataFrame(columns=POINT_COLUMNS)
    try:
        probes = latest_probe_rows(data, "cckl", ["probe_cckl"], "CCKL vs. test loss")
    except NotSupported:
        return pd.DataFrame(columns=POINT_COLUMNS)
    loss = pre.dropna(subset=["source", "test_loss"]).sort_values(["end_time", "run_id"])
    loss = loss.drop_duplicates("source", keep="last")[["source", "test_loss"]]
    out = probes[["source", "probe_cckl"]].merge(loss, on="source")
    out = out.rename(columns={"probe_cckl": "cckl"}).assign(scope="source", epoch=math.nan)
    return out[POINT_COLUMNS]


def cckl_correlations(points: pd.DataFrame) -> pd.DataFrame:
    """Pearson r (Fisher-z 95 % CI) and Spearman ρ of CCKL with test loss: over the epochs of
    each source (``scope = epoch``) and over the sources (``scope = source``)."""
    rows = [
        ("epoch", source, *correlations(part, x="test_loss", y="cckl"))
        for source, part in points[points["scope"] == "epoch"].groupby("source", sort=True)
    ]
    across = points[points["scope"] == "source"]
    if not across.empty:
        rows.append(("source", "all sources", *correlations(across, x="test_loss", y="cckl")))
    return pd.DataFrame(rows, columns=["scope", "source", *Correlation._fields])


def _marker(style: Style, size: float) -> dict[str, object]:
    """Scatter keywords of a source: its colour and marker shape (greyscale-safe)."""
    return {"color": style.color, "marker": style.marker, "s": size}


def _scatter_epochs(
    ax: Axes, part: pd.DataFrame, labels: dict[str, str], styles: dict[str, Style]
) -> None:
    for source in [s for s in styles if s in set(part["source"])]:
        line = part[part["source"] == source]
        c = correlations(line, x="test_loss", y="cckl")
        ax.scatter(line["test_loss"], line["cckl"], **_marker(styles[source], 16),
                   label=f"{label_of(labels, source)}: {_r_text(c, 'epoch')}")  # fmt: skip
    ax.set_title("per epoch of pretraining (App. B, Fig. 6)")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18), fontsize=LEGEND_SIZE - 1,
              frameon=False)  # fmt: skip


def _scatter_sources(
    ax: Axes, part: pd.DataFrame, labels: dict[str, str], styles: dict[str, Style]
) -> None:
    for i, r in enumerate(part.sort_values("test_loss").to_dict("records")):
        ax.scatter([r["test_loss"]], [r["cckl"]], **_marker(styles[str(r["source"])], 36))
        # Names alternate above and below their point: neighbours along x do not collide.
        dy = 6 if i % 2 == 0 else -6
        ax.annotate(label_of(labels, r["source"]), (r["test_loss"], r["cckl"]),
                    xytext=(0, dy), textcoords="offset points", ha="center",
                    va="bottom" if dy > 0 else "top", fontsize=LEGEND_SIZE - 1)  # fmt: skip
    c = correlations(part, x="test_loss", y="cckl")
    ax.set_title(f"across sources (probe CCKL, final test loss)\n{_r_text(c, 'source')}",
                 fontsize=10)  # fmt: skip
    ax.margins(x=0.2, y=0.2)  # room for the source names around the points


def cckl_loss_figure(
    points: pd.DataFrame,
    labels: dict[str, str],
    styles: dict[str, Style] | None = None,
    sharey: bool = False,
) -> Figure:
    """A panel per scope present: CCKL against test loss with Pearson r, its 95 % CI from four
    points on, and what n counts (epochs of one source, or sources)."""
    scopes = [s for s in ("epoch", "source") if (points["scope"] == s).any()]
    title = "CCKL vs. test cross-entropy (CCKL paper, App. B)"
    fig, axes = panel_grid(len(scopes), title, sharey=sharey)
    fig.set_size_inches(5.5 * len(scopes), fig.get_size_inches()[1] + 0.8)
    styles = styles or source_styles(points)  # one style per source in both panels
    for ax, scope in zip(axes, scopes, strict=True):
        draw = _scatter_epochs if scope == "epoch" else _scatter_sources
        draw(ax, points[points["scope"] == scope], labels, styles)
        ax.set_xlabel(LOSS_LABEL)
        ax.set_ylabel(CCKL_LABEL)
        ax.grid(True, alpha=0.3)
    return fig


def _sources(data: SweepData) -> pd.DataFrame:
    """Every source the sweep trained or probed, with its params (one naming for all panels)."""
    frames = [f for f in (data.pretrain, data.probes) if "source" in f.columns]
    if not frames:
        return pd.DataFrame({"source": pd.Series(dtype=object)})
    return pd.concat(frames, ignore_index=True).dropna(subset=["source"])


def _source_labels(data: SweepData) -> dict[str, str]:
    return source_labels(_sources(data))


def cckl_vs_test_loss(data: SweepData, out_dir: Path) -> Section:
    """CCKL paper App. B (Fig. 6): CCKL against test loss, Pearson r with a Fisher-z 95 % CI."""
    points = pd.concat([epoch_points(data), source_points(data)], ignore_index=True)
    if points.empty:
        raise NotSupported(
            "CCKL vs. test loss: no source has both a CCKL and a test loss; set "
            "`pretrain.track_information` in the spec, or add a `cckl` probe to sources the "
            "sweep trains"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    points_path, corr_path = out_dir / "cckl_vs_test_loss.csv", out_dir / "cckl_correlation.csv"
    points.to_csv(points_path, index=False)
    corr = cckl_correlations(points)
    corr.to_csv(corr_path, index=False)
    sources = pd.concat([_sources(data), points[["source"]]], ignore_index=True)
    labels, styles = source_labels(sources), source_styles(sources)
    figure = cckl_loss_figure(points, labels, styles, data.options.sharey)
    paths = [points_path, corr_path, *save_figure(figure, out_dir, "cckl_vs_test_loss")]
    rows = [
        [
            UNITS.get(r["scope"], r["scope"]),
            label_of(labels, r["source"]),
            _r_text(Correlation(*(r[f] for f in Correlation._fields)), r["scope"]),
        ]
        for r in corr.to_dict("records")
    ]
    tables, figures_md = links(paths, out_dir)
    body = (
        "CCKL = mean KL(f(x_i) ‖ f(x_j)) over test pairs of different classes against the test "
        "cross-entropy; Pearson r with its Fisher-z 95% CI (none below 4 points). n counts "
        "the epochs of one source's training (successive epochs of one run are not "
        "independent samples: read that interval as descriptive), or the sources (one point "
        "each). The paper reports r = −0.67 on CIFAR-10 over the epochs of a ResNet-20. "
        f"Files: {tables}.\n\n"
        + markdown_table(["points", "source", "Pearson r [95% CI]"], rows)
        + f"\n\n{figures_md}"
    )
    return Section("CCKL vs. test loss (CCKL paper, App. B)", body, paths)


def relerr_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Long ``source, norm, eps, relerr`` from the ``probe_kl_g1_relerr_eps_<ε>`` columns of
    the ``cckl`` probe rows; ``norm`` is the probe's perturbation norm (from its config)."""
    pattern = re.compile(re.escape(RELERR_PREFIX) + r"(.+)$")
    columns = {c: float(m.group(1)) for c in rows.columns if (m := pattern.match(c))}
    norms = rows["config"].map(_probe_norm) if "config" in rows else pd.Series("", rows.index)
    long = rows.assign(norm=norms).melt(
        id_vars=["source", "norm"], value_vars=list(columns), var_name="column", value_name="relerr"
    )
    long = long.dropna(subset=["relerr"]).assign(eps=lambda f: f["column"].map(columns))
    order = {s: i for i, s in enumerate(rows["source"])}  # keep the caller's source order
    long = long.assign(_order=long["source"].map(order)).sort_values(["_order", "eps"])
    return long[["source", "norm", "eps", "relerr"]].reset_index(drop=True)


def _probe_norm(config: object) -> str:
    try:
        return str(json.loads(str(config))["probe"]["params"]["norm"])
    except (ValueError, KeyError, TypeError):
        return ""


def relerr_figure(
    table: pd.DataFrame,
    labels: dict[str, str],
    styles: dict[str, Style] | None = None,
    sharey: bool = False,
) -> Figure:
    """CCKL paper Table 2 as a figure: |KL − G1|/KL against the perturbation size ε (log-log),
    a line per source (``styles`` by name; default: in the table's order), a panel per
    perturbation norm."""
    norms = sorted(table["norm"].unique())
    styles = styles or source_styles(table)
    title = "Second-order error |KL − G1|/KL vs. ε (CCKL Table 2)"
    fig, axes = panel_grid(len(norms), title, sharey=sharey)
    fig.set_size_inches(5.5 * len(norms), fig.get_size_inches()[1] + 0.6)
    for ax, norm in zip(axes, norms, strict=True):
        part = table[table["norm"] == norm]
        for source, line in part.groupby("source", sort=False):
            ax.plot(line["eps"], line["relerr"], label=label_of(labels, source),
                    **styles[str(source)].kwargs())  # fmt: skip
        ax.set_xscale("log")
        if (part["relerr"] > 0).all():
            ax.set_yscale("log")
        ax.set_xlabel(f"perturbation size ε = ‖η‖ ({norm_symbol(norm) or 'norm?'}, pixels [0, 1])")
        ax.set_ylabel("|KL(f(x)‖f(x+η)) − G1| / KL")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=LEGEND_SIZE)
    return fig


def kl_g1_relerr_vs_eps(data: SweepData, out_dir: Path) -> Section:
    """CCKL paper Table 2: mean |KL − G1|/KL over test images per ε, one line per source."""
    what = "|KL − G1|/KL vs. ε"
    probes = data.probes
    # "Not drawn" names the probe to add, never the metric columns it would have logged.
    missing = (
        f"{what}: no finished `cckl` probe run measured |KL − G1|/KL; add a `cckl` probe (with "
        "its `eps` values) to the spec"
    )
    relerr = [c for c in probes.columns if c.startswith(RELERR_PREFIX)]
    if not relerr or "probe" not in probes.columns:
        raise NotSupported(missing)
    rows = probes[probes["probe"] == "cckl"].dropna(subset=relerr, how="all")
    if rows.empty:
        raise NotSupported(missing)
    rows = rows.sort_values(["end_time", "run_id"]).drop_duplicates("source", keep="last")
    rows = sort_sources(rows)
    table = relerr_table(rows)
    labels = _source_labels(data)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path = out_dir / "kl_g1_relerr.csv"
    table.to_csv(csv_path, index=False)
    figure = relerr_figure(table, labels, source_styles(rows), data.options.sharey)
    paths = [csv_path, *save_figure(figure, out_dir, "kl_g1_relerr_vs_eps")]
    wide = table.pivot_table(index="source", columns="eps", values="relerr", aggfunc="first")
    wide = wide.reindex(table["source"].unique())
    md = [
        [label_of(labels, s), *(MISSING if pd.isna(v) else f"{v:.3g}" for v in r)]
        for s, r in wide.iterrows()
    ]
    tables, figures_md = links(paths, out_dir)
    body = (
        "Mean over test images of |KL(f(x)‖f(x+η)) − G1|/KL with G1 = ½ηᵀF_xη, for a random η "
        f"of size ε: small where the second-order (Fisher) expansion holds. Values: {tables}."
        "\n\n"
        + markdown_table(["source", *(f"ε={e:g}" for e in wide.columns)], md)
        + f"\n\n{figures_md}"
    )
    return Section("|KL − G1|/KL vs. ε (CCKL paper, Table 2)", body, paths)
