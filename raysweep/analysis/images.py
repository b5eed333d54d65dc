"""Image figure families: inversion grids and t-SNE embeddings of every source side by side.

Terzi et al. 2021 (AAAI) show what a network's representation keeps by inverting it
(Def. 0.1: from noise, minimise ‖f(x') − f(x)‖/‖f(x)‖; Fig. 2) and by effective images
(App. D, Alg. 1-2: inversion under the weight noise of the Fisher posterior; Fig. 1): robust
sources give recognisable reconstructions. Their Fig. 6 shows t-SNE of the penultimate
features: the larger the training ε, the more entangled the classes. Both are drawn here from
the probes' artifacts (``probe/<name>/...`` on each probe run), downloaded through MLflow.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image
from sklearn.metrics import silhouette_score

from raysweep.analysis.figures import figure_legend, panel_grid, save_figure
from raysweep.analysis.information import latest_probe_rows, links
from raysweep.analysis.labels import label_of, source_labels
from raysweep.analysis.sweepdata import NotSupported, Section, SweepData

# (probe, artifact file, figure stem, what the rows of each grid show)
GRIDS: tuple[tuple[str, str, str, str], ...] = (
    ("inversion", "inversion.png", "inversion_grids", "representation inversion (Def. 0.1)"),
    ("effective_images", "variational.png", "variational_grids", "variational inversion"),
    ("effective_images", "effective.png", "effective_grids", "effective images (Alg. 2)"),
)
TSNE_FILES = ("tsne_embedding.npy", "tsne_labels.npy")
PANEL_INCHES = 3.0
# Widest inversion figure [inches]: a page width, so stacked grids stay readable.
GRID_WIDTH = 11.0


def _download(data: SweepData, run_id: str, path: str, dst: Path) -> Path | None:
    """The local copy of one artifact, or None when the run did not log it.

    Listed first rather than caught: stores differ in what a missing file raises.
    """
    folder = path.rsplit("/", 1)[0] if "/" in path else None
    if path not in {a.path for a in data.client.list_artifacts(run_id, folder)}:
        return None
    return data.artifact(run_id, path, dst)


def _grid_figure(panels: list[tuple[str, np.ndarray]], title: str) -> Figure:
    """A panel per source: its grid image (originals on top, results below), titled. Wide
    grids (a row of many images) are stacked one per row, square-ish ones three per row."""
    aspect = max(a.shape[1] / a.shape[0] for _, a in panels)
    ncols = 1 if aspect >= 2 else min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    width = min(GRID_WIDTH, PANEL_INCHES * aspect * ncols)
    height = nrows * (width / ncols / aspect + 0.35) + 0.5
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    axes = list(fig.subplots(nrows, ncols, squeeze=False).ravel())
    for ax, (label, image) in zip(axes, panels, strict=False):
        ax.imshow(image, interpolation="nearest")
        ax.set_title(label, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes[len(panels) :]:
        fig.delaxes(ax)
    fig.suptitle(title)
    return fig


def collect_grids(data: SweepData, probe: str, name: str, dst: Path) -> list[tuple[str, Path]]:
    """(source label, local PNG) of ``probe/<probe>/<name>`` for every source that has it,
    natural sources first, then by kind, norm and ε."""
    try:
        rows = latest_probe_rows(data, probe, [], f"{probe} grids")
    except NotSupported:
        return []
    labels = source_labels(rows)
    found = []
    for r in rows.to_dict("records"):  # one folder per run: names are data, never paths
        local = _download(data, r["run_id"], f"probe/{probe}/{name}", dst / str(r["run_id"]))
        if local is not None:
            found.append((label_of(labels, r["source"]), local))
    return found


def inversion_grids(data: SweepData, out_dir: Path) -> Section:
    """Terzi et al. 2021, Fig. 1-2: every source's inversion (and effective-image) grids."""
    paths: list[Path] = []
    for probe, name, stem, what in GRIDS:
        # Downloads are read into memory and dropped: the report keeps only the figures.
        with tempfile.TemporaryDirectory() as tmp:
            found = collect_grids(data, probe, name, Path(tmp))
            panels = [(label, np.asarray(Image.open(p).convert("RGB"))) for label, p in found]
        if not panels:
            continue
        title = f"{what}: originals (top row) and reconstructions (bottom row)"
        paths += save_figure(_grid_figure(panels, title), out_dir, stem)
    if not paths:
        raise NotSupported(
            "inversion grids: the sweep has no finished `inversion` or `effective_images` probe "
            "run with its image grid; add one of these probes to the spec"
        )
    _, figures_md = links(paths, out_dir)
    body = (
        "Per source, the probe's test images (top row) and what its representation keeps of "
        "them (bottom row): reconstructions from noise by matching penultimate features, and "
        "with Terzi et al.'s weight noise (variational inversion, effective images); robust "
        f"sources keep more recognisable shapes.\n\n{figures_md}"
    )
    return Section("Inversion and effective images (Terzi et al. 2021, Fig. 1-2)", body, paths)


def load_embeddings(data: SweepData, dst: Path) -> list[dict]:
    """Per source with both t-SNE artifacts: label, embedding [N, 2], labels [N], silhouette
    (the probe's ``probe/tsne_silhouette``, recomputed from the files when it is missing)."""
    try:
        rows = latest_probe_rows(data, "tsne", [], "t-SNE")
    except NotSupported:
        return []
    names = source_labels(rows)  # (``labels`` below are the images' classes)
    out = []
    for r in rows.to_dict("records"):
        local = [
            _download(data, r["run_id"], f"probe/tsne/{f}", dst / str(r["run_id"]))
            for f in TSNE_FILES
        ]
        if any(p is None for p in local):
            continue
        emb, labels = np.load(local[0]), np.load(local[1])
        sil = r.get("probe_tsne_silhouette")
        if sil is None or pd.isna(sil):
            classes = np.unique(labels).size
            sil = silhouette_score(emb, labels) if 2 <= classes < len(labels) else math.nan
        out.append({"source": r["source"], "label": label_of(names, r["source"]), "embedding": emb,
                    "labels": labels, "silhouette": float(sil)})  # fmt: skip
    return out


def _tsne_panel(ax: Axes, item: dict, classes: np.ndarray, cmap: object) -> None:
    emb, labels = item["embedding"], item["labels"]
    for k, c in enumerate(classes):
        sel = labels == c
        ax.scatter(emb[sel, 0], emb[sel, 1], s=5, color=cmap(k % cmap.N), label=f"class {c}")
    sil = item["silhouette"]
    sil_text = "silhouette n/a" if math.isnan(sil) else f"silhouette {sil:+.3f}"
    ax.set_title(f"{item['label']}\n{sil_text}", fontsize=9)
    ax.set_xlabel("t-SNE 1")
    ax.set_ylabel("t-SNE 2")
    ax.set_xticks([])
    ax.set_yticks([])


def tsne_figure(items: list[dict]) -> Figure:
    """Terzi Fig. 6: a t-SNE panel per source, points coloured by class, silhouette in the
    title (Rousseeuw 1987: −1..1, lower = classes more entangled), one shared class legend."""
    from matplotlib import colormaps

    classes = np.unique(np.concatenate([i["labels"] for i in items]))
    cmap = colormaps["tab10" if classes.size <= 10 else "tab20"]
    fig, axes = panel_grid(len(items), "t-SNE of penultimate features (Terzi et al. Fig. 6)")
    for ax, item in zip(axes, items, strict=True):
        _tsne_panel(ax, item, classes, cmap)
    figure_legend(fig, axes)
    return fig


def tsne_embeddings(data: SweepData, out_dir: Path) -> Section:
    """Terzi et al. 2021, Fig. 6: every source's t-SNE side by side, coloured by class."""
    with tempfile.TemporaryDirectory() as tmp:
        items = load_embeddings(data, Path(tmp))
    if not items:
        raise NotSupported(
            "t-SNE: the sweep has no finished `tsne` probe run with its embedding; add a `tsne` "
            "probe to the spec"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path = out_dir / "tsne_silhouette.csv"
    table = pd.DataFrame(
        [(i["source"], i["label"], len(i["labels"]), i["silhouette"]) for i in items],
        columns=["source", "label", "points", "silhouette"],
    )
    table.to_csv(csv_path, index=False)
    paths = [csv_path, *save_figure(tsne_figure(items), out_dir, "tsne_embeddings")]
    tables, figures_md = links(paths, out_dir)
    body = (
        "2-D t-SNE of each source's penultimate features on the same test images, coloured by "
        "class; the silhouette of the classes in the embedding is in each title (lower = more "
        f"entangled). Silhouettes: {tables}.\n\n{figures_md}"
    )
    return Section("t-SNE of features (Terzi et al. 2021, Fig. 6)", body, paths)
