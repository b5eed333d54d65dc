"""t-SNE embeddings and the per-ε panel figure (Terzi et al. Fig. 6)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from raysweep.measures.tsne import plot_tsne, tsne_embedding


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    # scikit-learn's Barnes-Hut t-SNE runs on OpenMP: two spinning threads on a busy 2-core
    # machine made a 45-point embedding take minutes instead of 0.2 s.
    with threadpool_limits(limits=1):
        yield


def _features(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(3), 15)
    centres = rng.normal(scale=5.0, size=(3, 10))
    return centres[labels] + rng.normal(size=(45, 10)), labels


def test_embedding_shape_and_seed_determinism() -> None:
    feats, labels = _features(0)
    a = tsne_embedding(feats, perplexity=10, seed=3)
    b = tsne_embedding(feats, perplexity=10, seed=3)
    assert a.shape == (45, 2) and a.dtype == np.float64
    np.testing.assert_array_equal(a, b)
    # Well-separated clusters stay separated: each point's nearest neighbour shares its label.
    dist = np.linalg.norm(a[:, None] - a[None], axis=-1) + np.eye(45) * 1e9
    assert np.mean(labels[dist.argmin(1)] == labels) > 0.95


def test_perplexity_must_be_below_sample_count() -> None:
    with pytest.raises(ValueError, match="perplexity"):
        tsne_embedding(np.zeros((5, 3)), perplexity=5)


def test_plot_writes_png_with_one_panel_per_eps(tmp_path: Path) -> None:
    panels = {}
    for k, eps in enumerate(["0", "0.25", "1"]):
        feats, labels = _features(k)
        panels[eps] = (tsne_embedding(feats, perplexity=10, seed=0), labels)
    out = plot_tsne(panels, tmp_path / "figs" / "tsne.png", class_names=["a", "b", "c"])
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5_000
    with pytest.raises(ValueError, match="empty"):
        plot_tsne({}, tmp_path / "x.png")
