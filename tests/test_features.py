"""Frozen-feature cache: hits and misses, sharing between trials, concurrency, same accuracies."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path
from typing import Any

import pytest
import torch

from raysweep.data import ArrayDataset, DatasetInfo, dataset_info
from raysweep.models import TransferNet, build_model, load_checkpoint, save_checkpoint
from raysweep.models.net import Normalize
from raysweep.protocol import WorkerContext
from raysweep.spec import SpecError, parse_spec
from raysweep.store import Store, sha256_file
from raysweep.train import OptimConfig, ScheduleConfig, make_training_kind, pretrain
from raysweep.worker import features
from raysweep.worker import finetune as finetune_worker
from raysweep.worker.finetune import finetune_job, prepare_target_model
from raysweep.worker.inputs import make_prepare

SOURCE_KEY = "src0000000000000"
TRAIN_N, TEST_N = 240, 120


def toy(n: int, seed: int) -> ArrayDataset:
    """4 classes = 4 fixed colours + noise, 16x16 uint8: tiny, real format, separable."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 4, (n,), generator=g)
    templates = torch.rand(4, 3, 1, 1, generator=torch.Generator().manual_seed(7))
    img = 0.5 + 0.5 * (templates[y] - 0.5) + 0.1 * torch.randn(n, 3, 16, 16, generator=g)
    info = DatasetInfo("digits", 4, 3, 16, (0.5,) * 3, (0.25,) * 3, TRAIN_N, True)
    return ArrayDataset((img.clamp(0, 1) * 255).round().to(torch.uint8), y, info)


TOY = {"train": toy(TRAIN_N, 1), "test": toy(TEST_N, 2)}


@pytest.fixture(autouse=True)
def toy_target(monkeypatch: pytest.MonkeyPatch) -> None:
    """Jobs read the toy splits under the name ``digits`` (its info gives the head's size)."""
    monkeypatch.setattr(finetune_worker, "cached_dataset", lambda name, split, *rest: TOY[split])


@pytest.fixture(scope="module")
def source() -> TransferNet:
    """A briefly pretrained small_cnn (an untrained one has near-constant eval features)."""
    torch.manual_seed(0)
    info = dataset_info("digits")
    model = build_model("small_cnn", info.num_classes, info.mean, info.std)
    pretrain(
        model, TOY["train"].images, TOY["train"].labels, TOY["test"].images[:8],
        TOY["test"].labels[:8], kind=make_training_kind("natural"),
        optim=OptimConfig(lr=0.05, batch_size=32), schedule=ScheduleConfig(epochs=1),
        prepare=make_prepare(model), augment=None, seed=0,
    )  # fmt: skip
    return model.eval()


def job(**changes: Any) -> dict[str, Any]:
    base = {
        "key": "job0",
        "source_key": SOURCE_KEY,
        "target": "digits",
        "subset_size": 100,
        "seed": 20_000_000,
        "blocks": 0,
        "epochs": 4,
        "eval_epochs": [2, 4],
        "lr_milestones": [3],
        "lr_decay": 0.1,
        "optimizer": {
            "lr": 0.05,
            "momentum": 0.9,
            "weight_decay": 5e-4,
            "batch_size": 32,
            "nesterov": False,
        },
        "augment": "none",
        "update_frozen_bn_stats": False,
        "head_init": "default",
        "normalization": "source",
    }
    return {**base, **changes}


def context(root: Path) -> WorkerContext:
    return WorkerContext(
        store_root=str(root / "store"),
        data_root=None,
        download=False,
        threads=1,
        trials_root=str(root / "trials"),
    )


def run_job(root: Path, config: dict[str, Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    finetune_job(config, context(root), rows.append)
    return rows


@pytest.fixture()
def sweep_root(tmp_path: Path, source: TransferNet) -> Path:
    save_checkpoint(Store(tmp_path / "store").checkpoint(SOURCE_KEY), source, {"key": "src"})
    features.load_features.cache_clear()
    return tmp_path


def count_computations(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = features.compute_features

    def counting(*args: Any) -> torch.Tensor:
        calls.append(len(args[1]))
        return real(*args)

    monkeypatch.setattr(features, "compute_features", counting)
    return calls


def test_cached_path_gives_the_uncached_accuracies(
    sweep_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cached = run_job(sweep_root, job())
    assert sorted(p.name for p in (sweep_root / "store" / "features").glob("*.pt")) != []
    monkeypatch.setattr(features, "head_inputs", lambda *a, **k: (None, None))
    uncached = run_job(sweep_root, job())
    assert [r["epoch"] for r in cached] == [2, 4] == [r["epoch"] for r in uncached]
    for a, b in zip(cached, uncached, strict=True):
        # Measured bit-identical here; a tolerance because the features come from other
        # batch compositions (the whole split), which a CPU kernel may round differently.
        assert a["test/acc"] == pytest.approx(b["test/acc"], abs=0.5)
        assert a["train/loss"] == pytest.approx(b["train/loss"], rel=1e-4)
    assert cached[-1]["test/acc"] > 50.0  # 4 balanced classes: far above chance


def test_features_are_computed_once_and_shared_by_trials(
    sweep_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = count_computations(monkeypatch)
    run_job(sweep_root, job())
    assert calls == [TEST_N, TRAIN_N]  # the whole test and train splits, once
    run_job(sweep_root, job(key="job1", seed=20_100_000, subset_size=40))
    features.load_features.cache_clear()  # a fresh process reads the files
    run_job(sweep_root, job(key="job2", seed=20_200_000))
    assert calls == [TEST_N, TRAIN_N]
    stored = sorted(
        (sweep_root / "store" / "features").glob("*.pt"), key=lambda p: p.stat().st_mtime
    )
    assert len(stored) == 2
    payload = torch.load(stored[0], weights_only=True)
    assert (
        payload["features"].shape == (TEST_N, 128) and payload["meta"]["source_key"] == SOURCE_KEY
    )


def test_jobs_that_cannot_use_the_cache_do_not(
    sweep_root: Path, source: TransferNet, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = count_computations(monkeypatch)
    run_job(sweep_root, job(blocks=1))
    run_job(sweep_root, job(update_frozen_bn_stats=True))
    assert calls == []
    run_job(sweep_root, job(augment="flip_crop"))
    assert calls == [TEST_N]  # only the test split: augmented training inputs change every epoch
    model = prepare_target_model(source, job(), "digits")
    store = Store(sweep_root / "store")
    x = TOY["test"].images
    prep = make_prepare(model)
    index = torch.arange(3)
    assert features.head_inputs(job(blocks="head_bn"), model, store, x, x, index, prep) == (
        None,
        None,
    )


def test_feature_key_depends_on_what_the_network_sees(source: TransferNet) -> None:
    by_source = prepare_target_model(source, job(), "digits")
    renormed = prepare_target_model(source, job(), "digits")
    renormed.normalize = Normalize([0.3], [0.2], 3)
    keys = {
        features.feature_key(SOURCE_KEY, "digits", "train", by_source),
        features.feature_key(SOURCE_KEY, "digits", "test", by_source),
        features.feature_key(SOURCE_KEY, "digits", "train", renormed),
        features.feature_key("other", "digits", "train", by_source),
    }
    assert len(keys) == 4
    # The source was pretrained on digits: target statistics are its own, so features match.
    by_target = prepare_target_model(source, job(normalization="target"), "digits")
    assert features.feature_key(SOURCE_KEY, "digits", "train", by_target) in keys
    again = prepare_target_model(source, job(seed=7), "digits")
    assert features.feature_key(SOURCE_KEY, "digits", "train", again) in keys


def _compute_in_child(root: str, checkpoint: str, queue: Any) -> None:
    computed: list[int] = []
    real = features.compute_features

    def slow(*args: Any) -> torch.Tensor:
        computed.append(1)
        return real(*args)

    features.compute_features = slow  # type: ignore[assignment]
    model, _ = load_checkpoint(Path(checkpoint))
    x = TOY["test"].images
    out, hit = features.stored_features(
        Store(Path(root)), SOURCE_KEY, "digits", "test", model, x, make_prepare(model)
    )
    queue.put((len(computed), hit, float(out.sum())))


def test_concurrent_trials_compute_once_and_read_the_same_file(
    tmp_path: Path, source: TransferNet
) -> None:
    checkpoint = tmp_path / "source.pt"
    save_checkpoint(checkpoint, source, {})
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    args = (str(tmp_path), str(checkpoint), queue)
    children = [ctx.Process(target=_compute_in_child, args=args) for _ in "abc"]
    for child in children:
        child.start()
    results = [queue.get(timeout=60) for _ in children]
    for child in children:
        child.join(timeout=60)
        assert child.exitcode == 0
    assert sorted(r[0] for r in results) == [0, 0, 1]
    assert sorted(r[1] for r in results) == [False, True, True]
    assert len({r[2] for r in results}) == 1
    leftovers = [p.name for p in (tmp_path / "features").iterdir() if p.suffix != ".pt"]
    assert all(name.endswith((".lock", ".json")) for name in leftovers)  # no half file
    (stored,) = (tmp_path / "features").glob("*.pt")
    record = json.loads(stored.with_suffix(".json").read_text())
    assert record["sha256"] == sha256_file(stored) and record["split"] == "test"


def test_a_corrupt_feature_file_is_recomputed(sweep_root: Path, source: TransferNet) -> None:
    store = Store(sweep_root / "store")
    x = TOY["test"].images
    prep = make_prepare(source)
    first, hit = features.stored_features(store, SOURCE_KEY, "digits", "test", source, x, prep)
    (stored,) = (sweep_root / "store" / "features").glob("*.pt")
    data = bytearray(stored.read_bytes())
    data[-20] ^= 0xFF  # a flipped byte in the tensor data
    stored.write_bytes(bytes(data))
    features.load_features.cache_clear()
    args = (store, SOURCE_KEY, "digits", "test", source, x, prep)
    again, hit_again = features.stored_features(*args)
    assert not hit and not hit_again  # recomputed, never read
    assert torch.equal(first, again)
    assert features.features_intact(stored)


def test_speed_switches_parse_and_apply(sweep_root: Path, source: TransferNet) -> None:
    raw = {
        "name": "s",
        "sources": [{"name": "n", "architecture": "small_cnn", "dataset": "digits",
                     "training": {"kind": "natural"}}],
        "pretrain": {"epochs": 1, "optimizer": {"lr": 0.05, "batch_size": 32}},
        "resources": {"cpu": 1, "gpu": 0.25, "bf16": True, "channels_last": True},
    }  # fmt: skip
    resources = parse_spec(raw, "s.yaml").resources
    assert (resources.gpu, resources.bf16, resources.channels_last) == (0.25, True, True)
    with pytest.raises(SpecError, match="resources.bf16"):
        parse_spec({**raw, "resources": {"bf16": "yes"}}, "s.yaml")
    fp32 = run_job(sweep_root, job(blocks=1))
    ctx = WorkerContext(**{**context(sweep_root).__dict__, "bf16": True, "channels_last": True})
    model, autocast = finetune_worker.speed_settings(
        prepare_target_model(source, job(), "digits"), ctx
    )
    assert model.stem[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert isinstance(autocast, torch.autocast) and not autocast._enabled  # GPU only
    rows: list[dict[str, Any]] = []
    finetune_job(job(blocks=1), ctx, rows.append)
    # channels_last changes the layout; the kernels round differently, the results stay.
    assert [r["test/acc"] for r in rows] == [r["test/acc"] for r in fp32]
    for a, b in zip(rows, fp32, strict=True):
        assert a["train/loss"] == pytest.approx(b["train/loss"], rel=1e-5)
