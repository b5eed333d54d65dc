"""Worker functions without Ray: importing checkpoints into the store, and their errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from raysweep.data import dataset_info
from raysweep.models import CheckpointError, build_model, load_checkpoint, save_checkpoint
from raysweep.protocol import WorkerContext
from raysweep.worker.sources import pretrain_source


def context(tmp_path: Path) -> WorkerContext:
    return WorkerContext(
        store_root=str(tmp_path / "store"),
        data_root=None,
        download=False,
        threads=1,
        trials_root=str(tmp_path / "trials"),
    )


def source_config(checkpoint: Path) -> dict:
    return {
        "source": "imported",
        "architecture": "small_cnn",
        "dataset": "textures",
        "training": {"kind": "natural", "attack": None, "sigma": None, "beta": None},
        "checkpoint": str(checkpoint),
    }


def test_local_checkpoint_is_imported_into_the_store_unchanged(tmp_path: Path) -> None:
    info = dataset_info("textures")
    original = build_model("small_cnn", info.num_classes, info.mean, info.std).eval()
    path = tmp_path / "mine.pt"
    save_checkpoint(path, original, {"note": "trained elsewhere"})
    record = pretrain_source("k1", source_config(path), context(tmp_path))
    assert record["reused"] is False and record["history"] == []
    stored, meta = load_checkpoint(tmp_path / "store" / "checkpoints" / "k1.pt")
    assert meta["imported_from"] == str(path)
    x = torch.rand(4, 3, 32, 32)
    assert torch.equal(stored.eval()(x), original(x))
    again = pretrain_source("k1", source_config(path), context(tmp_path))
    assert again["reused"] is True


def test_corrupt_checkpoint_is_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.pt"
    path.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(CheckpointError) as caught:
        pretrain_source("k2", source_config(path), context(tmp_path))
    assert "\n" not in str(caught.value) and str(path) in str(caught.value)
    assert not (tmp_path / "store" / "checkpoints" / "k2.pt").exists()


def test_missing_published_checkpoint_names_the_download(tmp_path: Path) -> None:
    config = {
        **source_config(tmp_path),
        "architecture": "resnet50",
        "dataset": "imagenet",
        "checkpoint": "robustness:imagenet_l2_3_0",
    }
    ctx = WorkerContext(**{**context(tmp_path).__dict__, "data_root": str(tmp_path / "data")})
    with pytest.raises(FileNotFoundError) as caught:
        pretrain_source("k3", config, ctx)
    message = str(caught.value)
    assert "imagenet_l2_3_0" in message and "http" in message and "\n" not in message


def test_pretraining_tracks_input_fisher_and_cckl_per_epoch(tmp_path: Path) -> None:
    config = {
        "source": "tracked",
        "architecture": "small_cnn",
        "dataset": "digits",
        "training": {"kind": "natural", "attack": None, "sigma": None, "beta": None},
        "pretrain": {
            "epochs": 2,
            "optimizer": {
                "lr": 0.05,
                "momentum": 0.9,
                "weight_decay": 5e-4,
                "batch_size": 64,
                "nesterov": False,
            },
            "lr_milestones": [],
            "lr_decay": 0.1,
            "augment": "none",
            "eval_attack": None,
            "seed": 0,
            "track_information": 20,
        },
    }
    record = pretrain_source("k4", config, context(tmp_path))
    assert [row["epoch"] for row in record["history"]] == [1, 2]
    for row in record["history"]:
        assert row["train/fx_fnorm"] > 0 and row["train/cckl"] > 0
    assert record["history"][0]["train/cckl"] != record["history"][1]["train/cckl"]
