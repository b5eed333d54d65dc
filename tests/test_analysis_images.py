"""Inversion-grid and t-SNE families on artifacts in a real (small) MLflow sqlite store."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from PIL import Image
from sklearn.metrics import silhouette_score

from raysweep.analysis.images import inversion_grids, load_embeddings, tsne_embeddings
from raysweep.analysis.sweepdata import NotSupported, SweepData

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SOURCES = [
    ("nat", "natural", "", 0.0),
    ("l2_1", "pgd", "l2", 1.0),
    ("linf_8", "pgd", "linf", 8 / 255),
]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A store with an inversion and a t-SNE run per source, except: linf_8's inversion run
    has no PNG and l2_1's t-SNE run no labels file. Returns uri, runs frame, files."""
    root = tmp_path_factory.mktemp("store")
    uri = f"sqlite:///{root}/mlflow.db"
    client = MlflowClient(uri)
    experiment = client.create_experiment("e", artifact_location=(root / "artifacts").as_uri())
    rng = np.random.default_rng(0)
    rows, files = [], {}
    for i, (name, training, norm, eps) in enumerate(SOURCES):
        local = root / "local" / name
        local.mkdir(parents=True)
        info = {"source": name, "source_training": training, "source_norm": norm, "source_eps": eps}
        grid = np.full((8, 24, 3), 40 * (i + 1), dtype=np.uint8)  # 1 x 3 tiles, one shade each
        Image.fromarray(grid).save(local / "inversion.png")
        emb = rng.normal(size=(30, 2)) + np.repeat(np.arange(3), 10)[:, None] * (3 - i)
        labels = np.repeat(np.arange(3), 10)
        np.save(local / "tsne_embedding.npy", emb)
        np.save(local / "tsne_labels.npy", labels)
        files[name] = {"grid": grid, "emb": emb, "labels": labels}
        for probe, names in (
            ("inversion", [] if name == "linf_8" else ["inversion.png"]),
            ("tsne", ["tsne_embedding.npy"] + ([] if name == "l2_1" else ["tsne_labels.npy"])),
        ):
            run_id = client.create_run(experiment).info.run_id
            for f in names:
                client.log_artifact(run_id, str(local / f), artifact_path=f"probe/{probe}")
            rows.append({"run_id": run_id, "end_time": len(rows), "probe": probe, **info})
    return {"uri": uri, "runs": pd.DataFrame(rows), "files": files}


def sweep_data(store: dict, probes: pd.DataFrame) -> SweepData:
    data = SweepData(store["uri"], "s")
    data.__dict__["probes"] = probes
    return data


def test_inversion_grids_panel_per_source_with_the_logged_png(store: dict, tmp_path: Path) -> None:
    data = sweep_data(store, store["runs"])
    section = inversion_grids(data, tmp_path)
    pngs = [p for p in section.paths if p.suffix == ".png"]
    assert [p.name for p in pngs] == ["inversion_grids.png"]  # no effective_images runs
    assert pngs[0].read_bytes()[:8] == PNG_MAGIC and pngs[0].with_suffix(".pdf").exists()
    assert not (tmp_path / "artifacts").exists()  # downloads are not left in the report


def test_inversion_grid_figure_shows_each_png(store: dict, tmp_path: Path) -> None:
    from raysweep.analysis.images import _grid_figure, collect_grids

    found = collect_grids(sweep_data(store, store["runs"]), "inversion", "inversion.png", tmp_path)
    # linf_8 logged no PNG: it is left out, not drawn blank.
    assert [label for label, _ in found] == ["natural", "ℓ₂ ε=1"]  # by training, not name
    panels = [(label, np.asarray(Image.open(p).convert("RGB"))) for label, p in found]
    fig = _grid_figure(panels, "t")
    axes = fig.get_axes()
    assert len(axes) == 2 and axes[1].get_title() == "ℓ₂ ε=1"
    for ax, name in zip(axes, ["nat", "l2_1"], strict=True):
        assert np.array_equal(
            np.asarray(ax.get_images()[0].get_array()), store["files"][name]["grid"]
        )


def test_inversion_grids_not_supported_without_pngs(store: dict, tmp_path: Path) -> None:
    runs = store["runs"]
    data = sweep_data(store, runs[(runs["probe"] == "tsne") | (runs["source"] == "linf_8")])
    with pytest.raises(NotSupported, match="inversion"):
        inversion_grids(data, tmp_path)


def test_tsne_loads_embeddings_and_recomputes_a_missing_silhouette(
    store: dict, tmp_path: Path
) -> None:
    runs = store["runs"].copy()
    runs["probe_tsne_silhouette"] = np.where(runs["source"] == "linf_8", 0.123, np.nan)
    items = load_embeddings(sweep_data(store, runs), tmp_path)
    # l2_1 has no labels file: left out.
    assert [i["source"] for i in items] == ["nat", "linf_8"]
    nat = store["files"]["nat"]
    assert np.array_equal(items[0]["embedding"], nat["emb"])
    assert items[0]["silhouette"] == pytest.approx(silhouette_score(nat["emb"], nat["labels"]))
    assert items[1]["silhouette"] == 0.123  # the probe's logged value wins


def test_tsne_family_writes_figure_and_silhouettes(store: dict, tmp_path: Path) -> None:
    from raysweep.analysis.images import tsne_figure

    data = sweep_data(store, store["runs"])
    section = tsne_embeddings(data, tmp_path)
    table = pd.read_csv(tmp_path / "tsne_silhouette.csv")
    assert list(table["source"]) == ["nat", "linf_8"] and list(table["points"]) == [30, 30]
    assert all(-1 <= s <= 1 for s in table["silhouette"])
    png = next(p for p in section.paths if p.suffix == ".png")
    assert png.read_bytes()[:8] == PNG_MAGIC
    fig = tsne_figure(load_embeddings(data, tmp_path / "again"))
    first = fig.get_axes()[0]
    assert [len(c.get_offsets()) for c in first.collections] == [10, 10, 10]  # one per class
    assert "silhouette +" in first.get_title() and first.get_xlabel() == "t-SNE 1"


def test_tsne_not_supported_without_runs(store: dict, tmp_path: Path) -> None:
    runs = store["runs"]
    with pytest.raises(NotSupported, match="tsne"):
        tsne_embeddings(sweep_data(store, runs[runs["probe"] == "inversion"]), tmp_path)
