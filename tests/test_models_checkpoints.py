"""Checkpoint round trip, atomic writes and the errors for bad files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from raysweep.models import (
    CheckpointError,
    build_model,
    load_checkpoint,
    replace_head,
    save_checkpoint,
)


def test_round_trip_gives_identical_outputs(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model("small_cnn", 10, [0.4914, 0.4822, 0.4465], [0.247, 0.243, 0.261])
    replace_head(model, 7, seed=3)
    with torch.no_grad():  # non-default BN statistics must survive too
        model.blocks[1].bn1.running_mean.uniform_(-1, 1)
    meta = {"source": "cifar10", "eps": 0.5, "kind": {"name": "pgd", "steps": [3]}, "seed": None}
    path = tmp_path / "sub" / "model.pt"
    save_checkpoint(path, model, meta)
    assert [p.name for p in path.parent.iterdir()] == ["model.pt"]  # no temporary left behind
    loaded, loaded_meta = load_checkpoint(path)
    assert loaded_meta == meta
    assert loaded.arch == "small_cnn" and loaded.head.out_features == 7
    x = torch.rand(4, 3, 32, 32)
    model.eval()
    loaded.eval()
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    torch.testing.assert_close(
        loaded.normalize.mean.flatten(), torch.tensor([0.4914, 0.4822, 0.4465])
    )
    save_checkpoint(path, loaded, {"v": 2})  # overwriting is atomic too
    assert load_checkpoint(path)[1] == {"v": 2}


def test_meta_must_be_plain_builtins(tmp_path: Path) -> None:
    model = build_model("small_cnn", 2, [0.5], [0.5])
    with pytest.raises(ValueError, match=r"meta\['path'\] is a PosixPath"):
        save_checkpoint(tmp_path / "m.pt", model, {"path": tmp_path})
    assert not list(tmp_path.iterdir())


def _assert_one_line_error(path: Path, fragment: str) -> None:
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"checkpoint {path} is unreadable (")
    assert message.endswith("): delete it and rerun to rebuild it")
    assert fragment in message


def test_bad_files_raise_checkpoint_error(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"definitely not a zip file" * 10)
    _assert_one_line_error(garbage, "Error")

    good = tmp_path / "good.pt"
    save_checkpoint(good, build_model("small_cnn", 2, [0.5], [0.5]), {})
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    _assert_one_line_error(truncated, "Error")

    robustness = tmp_path / "robustness.pt"
    torch.save({"model": {"module.normalizer.new_mean": torch.zeros(3)}, "epoch": 90}, robustness)
    _assert_one_line_error(robustness, "MadryLab robustness checkpoint")

    foreign = tmp_path / "foreign.pt"
    torch.save([torch.zeros(2)], foreign)
    _assert_one_line_error(foreign, "not a raysweep checkpoint: list")

    mismatched = tmp_path / "mismatched.pt"
    obj = torch.load(good, weights_only=True)
    obj["arch"] = "resnet20"
    torch.save(obj, mismatched)
    _assert_one_line_error(mismatched, "RuntimeError")

    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pt")
