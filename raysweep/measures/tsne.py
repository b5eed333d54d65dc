"""t-SNE of penultimate features against the training ε (Terzi et al. 2021, Fig. 6): as ε
grows, robust features become less class-discriminative (more entangled)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.manifold import TSNE


def tsne_embedding(features: np.ndarray, perplexity: float = 30.0, seed: int = 0) -> np.ndarray:
    """2-D t-SNE (van der Maaten & Hinton 2008) of features [N, D] -> [N, 2] float64.

    Minimises KL(P ‖ Q) between Gaussian input affinities of the given perplexity and Student-t
    affinities of the embedding (scikit-learn, PCA initialisation, ``random_state=seed``, so a
    seed fixes the result). Needs perplexity < N.
    """
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"features must be [N >= 2, D], got {x.shape}")
    if not 0 < perplexity < x.shape[0]:
        raise ValueError(f"perplexity must lie in (0, N={x.shape[0]}), got {perplexity}")
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed)
    return tsne.fit_transform(x).astype(np.float64)


def plot_tsne(
    embeddings_by_eps: Mapping[str, tuple[np.ndarray, np.ndarray]],
    path: Path | str,
    class_names: list[str] | None = None,
) -> Path:
    """One scatter panel per ε (Terzi et al. Fig. 6), points coloured by label, one shared
    legend; written as PNG with the Agg canvas (no display, no global pyplot state)."""
    if not embeddings_by_eps:
        raise ValueError("embeddings_by_eps is empty")
    n = len(embeddings_by_eps)
    cols = min(n, 4)
    rows = math.ceil(n / cols)
    width = 3.2 * cols + 1.6  # the last 1.6 inches hold the shared legend
    legend_x = 1 - 1.6 / width
    fig = Figure(figsize=(width, 3.2 * rows))
    FigureCanvasAgg(fig)
    all_labels = np.unique(
        np.concatenate([np.asarray(lab) for _, lab in embeddings_by_eps.values()])
    )
    colours = _colours(len(all_labels))
    handles = {}
    for k, (eps, (emb, labels)) in enumerate(embeddings_by_eps.items()):
        ax = fig.add_subplot(rows, cols, k + 1)
        emb, labels = np.asarray(emb), np.asarray(labels)
        for c, lab in zip(colours, all_labels, strict=True):
            sel = labels == lab
            name = class_names[int(lab)] if class_names else str(lab)
            handles[name] = ax.scatter(emb[sel, 0], emb[sel, 1], s=6, color=c, label=name)
        ax.set_title(f"ε = {eps}")
        ax.set_xlabel("t-SNE 1")
        ax.set_ylabel("t-SNE 2")
    fig.tight_layout(rect=(0, 0, legend_x, 1))
    fig.legend(
        list(handles.values()),
        list(handles),
        loc="center left",
        bbox_to_anchor=(legend_x, 0.5),
        title="class",
        markerscale=2.0,
    )
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png", dpi=100)
    return out


def _colours(n: int) -> list[tuple[float, float, float, float]]:
    """Qualitative colours up to 20 classes; beyond that a continuous map (CIFAR-100)."""
    if n <= 20:
        cmap = colormaps["tab10" if n <= 10 else "tab20"]
        return [cmap(i) for i in range(n)]
    cmap = colormaps["viridis"]
    return [cmap(i / (n - 1)) for i in range(n)]
