"""Probe runners end to end: a saved small_cnn, every probe through ``run_probe`` on built-ins."""

from __future__ import annotations

import inspect
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from raysweep.data import dataset_info, draw_images, load_dataset
from raysweep.measures.fisher import noisy_layers
from raysweep.models import build_model, save_checkpoint
from raysweep.probes import PROBES, probe_names, run_probe, validate_probe
from raysweep.probes.context import draw_per_class, sample_curve, training_label
from raysweep.probes.run import runner

SOURCE = {
    "name": "tex",
    "architecture": "small_cnn",
    "dataset": "textures",
    "training": {"kind": "pgd", "attack": {"norm": "l2", "eps": 0.5, "steps": 3}},
}
# Small sizes: the whole file runs in well under a minute on one core.
SMALL: dict[str, dict[str, Any]] = {
    "distance": {"images_per_class": 20},
    "weight_fisher": {"images": 64, "max_steps": 5},
    "diag_fisher": {"images": 16},
    "input_fisher": {"images": 16},
    "cckl": {"images": 24, "eps": [0.01, 0.1], "pairs": 64},
    "inversion": {"images": 4, "steps": 30},
    "effective_images": {"images": 3, "steps": 10, "fisher_images": 32, "fisher_max_steps": 3},
    "tsne": {"images": 60, "perplexity": 10},
    "featvis": {"coordinates": 2, "steps": 5, "seeds": 3},
    "influence": {"train_images": 60, "test_images": 20, "k": 2, "epochs": 3},
    "linear_probe": {"cs": [0.1, 10.0], "folds": 2, "max_iter": 200},
}
METRICS = {
    "distance": {
        "probe/emd",
        "probe/similarity",
        "probe/emd_images_source",
        "probe/emd_images_target",
        "probe/emd_classes_source",
        "probe/emd_classes_target",
    },
    "weight_fisher": {
        "probe/fisher_mean_logvar",
        "probe/fisher_mean_logvar_change",
        "probe/fisher_steps",
        "probe/fisher_converged",
        "probe/fisher_final_loss",
    },
    "diag_fisher": {
        "probe/diag_fisher_trace",
        "probe/diag_fisher_mean_log",
        "probe/diag_fisher_zero_share",
    },
    "input_fisher": {"probe/fx_fnorm", "probe/fx_trace", "probe/fx_lambda_max"},
    "cckl": {
        "probe/cckl",
        "probe/g2_share",
        "probe/g2_share_median",
        "probe/kl_g1_relerr/eps_0.01",
        "probe/kl_g1_relerr/eps_0.1",
    },
    "inversion": {"probe/inversion_final_loss", "probe/inversion_pixel_rmse"},
    "effective_images": {
        "probe/effective_fisher_mean_logvar",
        "probe/effective_fisher_mean_logvar_change",
        "probe/effective_fisher_steps",
        "probe/effective_fisher_converged",
        "probe/effective_fisher_final_loss",
        "probe/variational_final_loss",
        "probe/variational_clean_loss",
        "probe/effective_final_loss",
        "probe/effective_clean_loss",
    },
    "tsne": {"probe/tsne_points", "probe/tsne_silhouette"},
    "featvis": {"probe/featvis_gain", "probe/featvis_final_activation"},
    "influence": {
        "probe/influence_topk_match",
        "probe/influence_head_train_acc",
        "probe/influence_head_test_acc",
    },
    "linear_probe": {
        "probe/linear_acc",
        "probe/linear_train_acc",
        "probe/linear_cv_acc",
        "probe/linear_c",
        "probe/linear_iterations",
        "probe/linear_converged",
        "probe/linear_images",
    },
}
TARGET = {"distance": "digits", "influence": "digits", "linear_probe": "digits"}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> str:
    info = dataset_info("textures")
    torch.manual_seed(0)
    model = build_model("small_cnn", info.num_classes, info.mean, info.std).eval()
    path = tmp_path_factory.mktemp("ckpt") / "source.pt"
    save_checkpoint(path, model, {"source": "tex"})
    return str(path)


def _run(name: str, checkpoint: str, out: Path, target: str | None = None, **extra: Any) -> dict:
    params = {**SMALL[name], **extra}
    return run_probe(
        {"name": name, "params": params},
        checkpoint,
        SOURCE,
        target if target is not None else TARGET.get(name),
        str(out),
        data_root=None,
        download=False,
        threads=1,
    )


def _check_artifacts(result: dict, out: Path) -> dict[str, Path]:
    """Every artifact is a non-empty, readable file under ``out``; returns them by name."""
    found = {}
    for raw in result["artifacts"]:
        path = Path(raw)
        assert path.is_file() and path.stat().st_size > 0
        assert path.resolve().is_relative_to(out.resolve())
        if path.suffix == ".png":
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        elif path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix in (".npy", ".npz"):
            np.load(path)
        found[path.name] = path
    return found


@pytest.mark.parametrize("name", list(PROBES))
def test_every_probe_returns_its_documented_metrics(
    name: str, checkpoint: str, tmp_path: Path
) -> None:
    result = _run(name, checkpoint, tmp_path)
    assert set(result) == {"metrics", "series", "artifacts"}
    metrics = result["metrics"]
    assert METRICS[name] | {"probe/seconds"} <= set(metrics)
    assert all(math.isfinite(v) for v in metrics.values()), metrics
    assert result["artifacts"]
    _check_artifacts(result, tmp_path)
    for points in result["series"].values():
        assert points[0][0] == 0 and all(isinstance(s, int) for s, _ in points)
    json.dumps(result)  # JSON-able as promised


def test_distance_to_itself_is_zero_and_to_another_dataset_positive(
    checkpoint: str, tmp_path: Path
) -> None:
    same = _run("distance", checkpoint, tmp_path / "same", target="textures")["metrics"]
    other = _run("distance", checkpoint, tmp_path / "other", target="digits")["metrics"]
    # Same subset, same class means: only the round-off of ot.dist's ‖a‖² + ‖b‖² − 2ab remains.
    assert 0.0 <= same["probe/emd"] < 1e-6 * other["probe/emd"]
    assert same["probe/similarity"] == pytest.approx(1.0)
    assert other["probe/emd"] > 1e-3
    assert other["probe/similarity"] == pytest.approx(math.exp(-0.01 * other["probe/emd"]))
    means = np.load(tmp_path / "other" / "class_means.npz")
    assert means["source"].shape == (10, 128) and means["target"].shape == (10, 128)
    assert means["target_w"].sum() == pytest.approx(1.0)


@pytest.mark.parametrize("per_class", [20, 50])
def test_distance_uses_images_per_class_capped_by_the_split(
    per_class: int, checkpoint: str, tmp_path: Path
) -> None:
    """textures' test split has 100 images of each of 10 classes, digits' 43-46: at 50 per
    class, digits gives every image it has; at 20, both give 200."""
    m = _run("distance", checkpoint, tmp_path, images_per_class=per_class)["metrics"]
    digits = np.bincount(load_dataset("digits", "test").labels.numpy(), minlength=10)
    expected = np.minimum(per_class, digits)
    assert m["probe/emd_images_source"] == 10 * per_class
    assert m["probe/emd_images_target"] == expected.sum()
    assert m["probe/emd_classes_source"] == m["probe/emd_classes_target"] == 10
    saved = json.loads((tmp_path / "distance.json").read_text())
    assert saved["source"]["per_class"] == [per_class] * 10
    assert saved["target"]["per_class"] == expected.tolist()
    assert saved["target"]["dataset"] == "digits" and saved["images_per_class"] == per_class
    assert saved["target"]["split_per_class"] == digits.tolist()
    # Class masses are the shares of the whole split (Cui et al.), not of the balanced draw.
    weights = np.load(tmp_path / "class_means.npz")["target_w"]
    np.testing.assert_allclose(weights, digits / digits.sum())


def test_draw_per_class_is_seeded_nested_and_capped() -> None:
    labels = np.repeat(np.arange(4), [10, 3, 7, 0 + 5])
    a = draw_per_class(labels, 4, seed=7)
    assert np.bincount(labels[a]).tolist() == [4, 3, 4, 4]  # class 1 has only 3
    assert np.array_equal(a, draw_per_class(torch.as_tensor(labels), 4, seed=7))
    assert set(a) <= set(draw_per_class(labels, 6, seed=7))  # nested in per_class
    assert not np.array_equal(a, draw_per_class(labels, 4, seed=8))
    assert np.array_equal(draw_per_class(labels, 100, seed=7), np.arange(labels.size))
    with pytest.raises(ValueError, match="per_class must be a positive integer"):
        draw_per_class(labels, 0, seed=7)


def test_weight_fisher_reports_every_layer(checkpoint: str, tmp_path: Path) -> None:
    result = _run("weight_fisher", checkpoint, tmp_path)
    info = dataset_info("textures")
    layers = noisy_layers(build_model("small_cnn", info.num_classes, info.mean, info.std))
    per_layer = {k for k in result["metrics"] if k.startswith("probe/fisher_logvar/")}
    assert per_layer == {f"probe/fisher_logvar/{n}" for n in layers}
    assert [s for s, _ in result["series"]["probe/fisher_loss"]] == [0, 1, 2, 3, 4]
    assert [s for s, _ in result["series"]["probe/fisher_mean_logvar_curve"]] == [0, 1, 2, 3, 4]
    m = result["metrics"]
    assert m["probe/fisher_steps"] == 5 and m["probe/fisher_converged"] == 0  # max_steps hit
    saved = json.loads((tmp_path / "weight_fisher.json").read_text())
    assert len(saved["layers"]["stem.conv1"]["logvar"]) == 16
    assert saved["steps"] == 5 and saved["converged"] == 0 and saved["start"] == "fisher"
    assert m["probe/fisher_mean_logvar_change"] == pytest.approx(
        saved["mean_logvar"] - saved["initial_mean_logvar"]
    )


def test_input_fisher_orders_its_norms(checkpoint: str, tmp_path: Path) -> None:
    # For a PSD matrix: λ_max ≤ ‖F‖_F ≤ tr F, per image and so in the mean.
    m = _run("input_fisher", checkpoint, tmp_path)["metrics"]
    assert 0 < m["probe/fx_lambda_max"] <= m["probe/fx_fnorm"] * (1 + 1e-9)
    assert m["probe/fx_fnorm"] <= m["probe/fx_trace"] * (1 + 1e-9)
    assert len(json.loads((tmp_path / "input_fisher.json").read_text())["trace"]) == 16


def test_cckl_pairs_and_split(checkpoint: str, tmp_path: Path) -> None:
    m = _run("cckl", checkpoint, tmp_path)["metrics"]
    pairs = np.load(tmp_path / "cckl_pairs.npz")
    labels = load_dataset("textures", "test").labels.numpy()
    y = labels[draw_images(torch.as_tensor(labels), 24, 0, 10, "textures")]
    assert pairs["kl"].size == int((y[:, None] != y[None, :]).sum())
    assert (y[pairs["i"]] != y[pairs["j"]]).all()
    assert m["probe/cckl"] == pytest.approx(pairs["kl"].mean()) and m["probe/cckl"] > 0
    assert pairs["g1"].size == 64
    np.testing.assert_allclose(pairs["g1"] + pairs["g2"], pairs["pair_kl"], rtol=1e-6)


@pytest.mark.parametrize("perturbation", ["adversarial", "random"])
def test_cckl_records_its_perturbation(perturbation: str, checkpoint: str, tmp_path: Path) -> None:
    result = _run("cckl", checkpoint, tmp_path, perturbation=perturbation, relerr_images=8)
    saved = json.loads((tmp_path / "cckl.json").read_text())
    assert saved["perturbation"] == perturbation and saved["norm"] == "linf"
    assert saved["relerr_images"] == 8
    near = saved["near_x"]
    assert [row["eps"] for row in near] == [0.01, 0.1]
    for row in near:
        assert row["eta_norm_max"] <= row["eps"] * (1 + 1e-12) and row["kl_mean"] > 0
        value = result["metrics"][f"probe/kl_g1_relerr/eps_{row['eps']:g}"]
        assert math.isfinite(value) and value >= 0


def test_inversion_lowers_its_loss_and_draws_both_rows(checkpoint: str, tmp_path: Path) -> None:
    result = _run("inversion", checkpoint, tmp_path)
    curve = result["series"]["probe/inversion_loss"]
    assert curve[-1][0] == 30 and curve[-1][1] < curve[0][1]
    assert result["metrics"]["probe/inversion_final_loss"] == curve[-1][1]
    # 2 rows x 4 tiles of 32 px with 2 px padding, upscaled 3x to >= 96 px tiles.
    assert Image.open(tmp_path / "inversion.png").size == (3 * (4 * 34 + 2), 3 * (2 * 34 + 2))


def test_tsne_and_featvis_files(checkpoint: str, tmp_path: Path) -> None:
    tsne = _run("tsne", checkpoint, tmp_path / "tsne")
    assert np.load(tmp_path / "tsne" / "tsne_embedding.npy").shape == (60, 2)
    assert tsne["metrics"]["probe/tsne_points"] == 60
    assert -1 <= tsne["metrics"]["probe/tsne_silhouette"] <= 1
    _run("featvis", checkpoint, tmp_path / "fv")
    record = json.loads((tmp_path / "fv" / "featvis.json").read_text())
    assert record["seed_dataset"] == "shapes"  # OOD for a textures source
    assert len(record["coordinates"]) == 2 and np.asarray(record["curves"]).shape == (2, 6)
    # seeds row + one row per coordinate, 3 tiles each
    assert Image.open(tmp_path / "fv" / "featvis.png").size == (3 * (3 * 34 + 2), 3 * (3 * 34 + 2))


def test_influence_matrix_shape_and_match(checkpoint: str, tmp_path: Path) -> None:
    m = _run("influence", checkpoint, tmp_path)["metrics"]
    assert np.load(tmp_path / "influence.npy").shape == (20, 60)
    assert 0.0 <= m["probe/influence_topk_match"] <= 1.0
    assert m["probe/influence_head_train_acc"] > 0.1  # above chance on digits after 3 epochs


def test_same_seed_same_result_and_threads_restored(checkpoint: str, tmp_path: Path) -> None:
    before = torch.get_num_threads()
    a = _run("tsne", checkpoint, tmp_path / "a")["metrics"]
    b = _run("tsne", checkpoint, tmp_path / "b")["metrics"]
    assert a["probe/tsne_silhouette"] == b["probe/tsne_silhouette"]
    assert torch.get_num_threads() == before


def test_the_probe_table_is_the_only_one() -> None:
    """One row per probe: a one-line reference, a runner that resolves on the worker side, and
    the per-target flag on exactly the probes that need a target."""
    assert probe_names() == sorted(PROBES) and len(PROBES) == 11
    assert {name for name, probe in PROBES.items() if probe.per_target} == {
        "distance",
        "influence",
        "linear_probe",
    }
    assert {name for name, probe in PROBES.items() if probe.per_subset} == {"linear_probe"}
    for name, probe in PROBES.items():
        assert probe.follows and "\n" not in probe.follows and len(probe.follows) < 100
        function = runner(name)
        assert callable(function) and function.__name__ == f"run_{name}"
        assert probe.runner == f"{function.__module__}:{function.__name__}"


def test_table_defaults_match_the_measures_and_the_papers() -> None:
    """The table is torch-free, so it repeats a few of the measures' names and defaults."""
    from raysweep.measures.fisher import STARTS, Plateau, weight_fisher_logvar
    from raysweep.measures.input_fisher import PERTURBATIONS
    from raysweep.probes import table

    assert table.PERTURBATIONS == PERTURBATIONS and table.FISHER_STARTS == STARTS
    fisher = validate_probe("weight_fisher", {}).params
    rule = Plateau()
    assert (fisher["max_steps"], fisher["min_steps"]) == (rule.max_steps, rule.min_steps)
    assert fisher["tolerance"] == rule.tolerance
    defaults = inspect.signature(weight_fisher_logvar).parameters
    assert fisher["lr"] == defaults["lr"].default and fisher["start"] == defaults["start"].default
    cckl = validate_probe("cckl", {}).params
    # CCKL paper Table 2: ε = 1/255 … 8/255, ℓ∞ (TRADES), adversarial η.
    assert cckl["eps"] == pytest.approx([k / 255 for k in range(1, 9)])
    assert (cckl["norm"], cckl["perturbation"]) == ("linf", "adversarial")
    assert validate_probe("distance", {}).params == {"images_per_class": 20, "gamma": 0.01}
    effective = validate_probe("effective_images", {}).params
    assert "fisher_steps" not in effective and effective["fisher_max_steps"] == 100
    assert validate_probe("cckl", {"eps": ["1/255", " 8/255", 0.5]}).params["eps"] == [
        1 / 255,
        8 / 255,
        0.5,
    ]


def test_validate_probe_fills_defaults() -> None:
    spec = validate_probe("cckl", {"eps": [1, 2]})
    assert spec.params == {
        "images": 256,
        "eps": [1.0, 2.0],
        "norm": "linf",
        "perturbation": "adversarial",
        "relerr_images": 128,
        "pairs": 2048,
    }
    assert not spec.per_target
    assert validate_probe("distance", {}).per_target
    assert validate_probe("influence", {}).params["train_images"] == 400


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("nope", {}, "unknown probe 'nope'; valid: cckl, diag_fisher, distance"),
        (
            "cckl",
            {"x": 1},
            "probe 'cckl': unknown parameter 'x'; allowed: eps, images, norm, pairs, perturbation, "
            "relerr_images",
        ),
        ("cckl", {"images": 0}, "parameter 'images' must be a positive integer, got 0"),
        ("cckl", {"images": 2.5}, "parameter 'images' must be a positive integer, got 2.5"),
        ("tsne", {"images": True}, "parameter 'images' must be a positive integer, got True"),
        ("cckl", {"norm": "l3"}, "parameter 'norm' must be one of l2, linf, got 'l3'"),
        (
            "cckl",
            {"perturbation": "worst"},
            "parameter 'perturbation' must be one of adversarial, random, got 'worst'",
        ),
        ("cckl", {"eps": ["8/0"]}, "must be a non-empty list of positive numbers (such as 0.5"),
        ("cckl", {"eps": ["1/255x"]}, "must be a non-empty list of positive numbers"),
        ("weight_fisher", {"start": "zero"}, "'start' must be one of fisher, weights, got 'zero'"),
        ("weight_fisher", {"tolerance": -0.1}, "parameter 'tolerance' must be a number >= 0"),
        ("distance", {"images": 200}, "unknown parameter 'images'; allowed: gamma, images_per"),
        ("cckl", {"eps": []}, "parameter 'eps' must be a non-empty list of positive numbers"),
        ("cckl", {"eps": [0.1, -1]}, "must be a non-empty list of positive numbers"),
        ("distance", {"gamma": "big"}, "parameter 'gamma' must be a positive number, got 'big'"),
        ("inversion", {"start_sigma": -1}, "parameter 'start_sigma' must be a number >= 0"),
        ("tsne", {"images": 20}, "probe 'tsne': parameter 'perplexity' must be below images (20)"),
        ("influence", {"train_images": 5, "k": 6}, "'k' must be at most train_images (5)"),
    ],
)
def test_validate_probe_errors(name: str, params: dict, message: str) -> None:
    with pytest.raises(ValueError, match=None) as err:
        validate_probe(name, params)
    assert message in str(err.value)


def test_run_probe_checks_target_and_threads(checkpoint: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="runs per target; no target given"):
        run_probe(
            {"name": "distance", "params": {}},
            checkpoint,
            SOURCE,
            None,
            str(tmp_path),
            data_root=None,
            download=False,
            threads=1,
        )
    with pytest.raises(ValueError, match="runs once per source; got target 'digits'"):
        _run("tsne", checkpoint, tmp_path, target="digits")
    with pytest.raises(ValueError, match="threads must be a positive integer"):
        run_probe(
            {"name": "tsne"},
            checkpoint,
            SOURCE,
            None,
            str(tmp_path),
            data_root=None,
            download=False,
            threads=0,
        )


def test_helpers() -> None:
    labels = torch.arange(10).repeat(5)
    few = draw_images(labels, 4, 3, 10, "x")
    assert len(few) == 4 and len(set(labels[few].tolist())) == 4  # distinct classes
    assert draw_images(labels, 500, 3, 10, "x").tolist() == list(range(50))
    assert len(set(labels[draw_images(labels, 12, 3, 10, "x")].tolist())) == 10
    assert sample_curve([5.0, 4.0, 3.0], points=2) == [[0, 5.0], [1, 4.0], [2, 3.0]]
    assert [s for s, _ in sample_curve(list(range(2001)))] == list(range(0, 2001, 20))
    assert training_label(SOURCE) == "0.5 (pgd, l2)"
    assert training_label({"training": {"kind": "natural", "attack": None}}) == "0 (natural)"


def test_linear_probe_fits_the_subset_a_fine_tune_trial_draws(
    checkpoint: str, tmp_path: Path
) -> None:
    """subset_size and seed select the trial's subset (sample_subset), not the probe's own draw."""
    probe = {"name": "linear_probe", "params": SMALL["linear_probe"]}
    runs = [
        run_probe(probe, checkpoint, SOURCE, "digits", str(tmp_path / str(seed)), data_root=None,
                  download=False, threads=1, seed=seed, subset_size=50)["metrics"]
        for seed in (20000000, 20000000, 20100000)
    ]  # fmt: skip
    assert all(m["probe/linear_images"] == 50 for m in runs)
    assert runs[0] == {**runs[1], "probe/seconds": runs[0]["probe/seconds"]}  # deterministic
    assert 10.0 < runs[0]["probe/linear_acc"] <= 100.0
