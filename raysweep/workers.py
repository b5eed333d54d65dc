"""What runs on Ray workers: source pretraining and import (Ray tasks), and the helpers that
fine-tune trials (:mod:`raysweep.finetune_worker`) share with them.

Ray stays at the edges: these functions turn a job's JSON config into typed values and call
the plain training functions of :mod:`raysweep.train`, which know nothing of Ray. Workers never
write to MLflow; they report to the driver, which records everything.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from raysweep.data import (
    ArrayDataset,
    augment_batch,
    dataset_info,
    load_dataset,
    sample_subset,
    to_model_input,
)
from raysweep.entrypoints import (
    WorkerContext,
)
from raysweep.models import TransferNet, build_model
from raysweep.models.checkpoints import load_checkpoint, save_checkpoint
from raysweep.models.published import load_source
from raysweep.store import write_json_atomic
from raysweep.train.attacks import PGDConfig
from raysweep.train.kinds import make_training_kind
from raysweep.train.loop import OptimConfig, ScheduleConfig, mean_loss, pretrain

NAN_KEYS_ENV = "RAYSWEEP_NAN_KEYS"


@functools.lru_cache(maxsize=16)
def cached_dataset(name: str, split: str, data_root: str | None, download: bool) -> ArrayDataset:
    """Datasets stay in memory across the trials a reused actor runs."""
    root = Path(data_root).expanduser() if data_root else None
    return load_dataset(name, split, data_root=root, download=download)


@functools.lru_cache(maxsize=4)
def cached_source(path: str) -> TransferNet:
    model, _ = load_checkpoint(Path(path))
    return model


def make_prepare(model: TransferNet) -> Callable[[torch.Tensor], torch.Tensor]:
    return functools.partial(to_model_input, size=model.input_size, channels=model.input_channels)


def make_augment(kind: str) -> Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None:
    if kind == "none":
        return None
    return lambda x, generator: augment_batch(x, kind, generator)


def attack_config(raw: dict[str, Any] | None) -> PGDConfig | None:
    if raw is None:
        return None
    return PGDConfig(
        norm=raw["norm"],
        eps=raw["eps"],
        steps=raw["steps"],
        step_size=raw["step_size"],
        random_start=raw["random_start"],
    )


def injected_faults() -> set[str]:
    """Job keys listed in $RAYSWEEP_NAN_KEYS train with a NaN learning rate.

    Fault injection for resilience tests and drills: it drives the real divergence path (a
    non-finite loss) without changing the job's config, so its key stays the same.
    """
    return {key for key in os.environ.get(NAN_KEYS_ENV, "").split(",") if key}


def optim_config(raw: dict[str, Any], poisoned: bool = False) -> OptimConfig:
    return OptimConfig(
        lr=float("nan") if poisoned else raw["lr"],
        momentum=raw["momentum"],
        weight_decay=raw["weight_decay"],
        batch_size=raw["batch_size"],
        nesterov=raw["nesterov"],
    )


def training_kind(raw: dict[str, Any]) -> Any:
    params: dict[str, Any] = {}
    if raw.get("attack") is not None:
        params["attack"] = attack_config(raw["attack"])
    for name in ("sigma", "beta"):
        if raw.get(name) is not None:
            params[name] = raw[name]
    return make_training_kind(raw["kind"], **params)


def pretrain_source(key: str, config: dict[str, Any], ctx: WorkerContext) -> dict[str, Any]:
    """Train (or load) one source model into the store; reuse it if it is already there.

    Returns the record: per-epoch metrics history, final metrics, seconds, and ``reused``.
    """
    torch.set_num_threads(ctx.threads)
    store = ctx.store
    record = store.read_record(key)
    if record is not None:
        return {**record, "reused": True}
    if "checkpoint" in config:
        return import_source(key, config, ctx)
    started = time.monotonic()
    info = dataset_info(config["dataset"])
    model = build_model(config["architecture"], info.num_classes, info.mean, info.std)
    train = cached_dataset(config["dataset"], "train", ctx.data_root, ctx.download)
    test = cached_dataset(config["dataset"], "test", ctx.data_root, ctx.download)
    p = config["pretrain"]
    history: list[dict[str, Any]] = []
    tracked = information_probe(model, test, p.get("track_information", 0), p["seed"])

    def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
        # Test cross-entropy: what the CCKL paper (App. B) correlates with CCKL per epoch.
        loss = mean_loss(model, test.images, test.labels, prepare=make_prepare(model))
        history.append({"epoch": epoch, **metrics, "test/loss": loss, **tracked()})

    final = pretrain(
        model,
        train.images,
        train.labels,
        test.images,
        test.labels,
        kind=training_kind(config["training"]),
        optim=optim_config(p["optimizer"]),
        schedule=ScheduleConfig(
            epochs=p["epochs"], milestones=tuple(p["lr_milestones"]), decay=p["lr_decay"]
        ),
        prepare=make_prepare(model),
        augment=make_augment(p["augment"]),
        seed=p["seed"],
        eval_attack=attack_config(p["eval_attack"]),
        on_epoch=on_epoch,
    )
    record = {
        "key": key,
        "history": history,
        "final": final,
        "seconds": time.monotonic() - started,
        "config": config,
    }
    save_checkpoint(store.checkpoint(key), model, {"key": key, "source": config["source"]})
    write_json_atomic(store.record(key), record)
    return {**record, "reused": False}


def information_probe(
    model: TransferNet, test: ArrayDataset, images: int, seed: int
) -> Callable[[], dict[str, float]]:
    """Per-epoch information metrics on a fixed test subset: mean input-Fisher F-norm and CCKL.

    The CCKL paper (Fig. 3–4, 7–8) follows ‖F_x‖_F during natural, PGD and TRADES training.
    """
    if not images:
        return dict
    from raysweep.measures.input_fisher import cckl_pairs, input_fisher_stats

    indices = sample_subset(test.labels, min(images, len(test)), seed, test.info.num_classes)
    index = torch.as_tensor(indices)
    x = make_prepare(model)(test.images[index])
    y = test.labels[index]

    def measure() -> dict[str, float]:
        was_training = model.training
        model.eval()
        try:
            fnorm = float(input_fisher_stats(model, x)["fnorm"].mean())
            return {"train/fx_fnorm": fnorm, "train/cckl": cckl_pairs(model, x, y).cckl}
        finally:
            model.train(was_training)

    return measure


def import_source(key: str, config: dict[str, Any], ctx: WorkerContext) -> dict[str, Any]:
    """Load a published or local checkpoint and keep it in the store in raysweep's format."""
    started = time.monotonic()
    info = dataset_info(config["dataset"])
    model = load_source(
        config["checkpoint"], config["architecture"], info.mean, info.std, ctx.data_root
    )
    record = {
        "key": key,
        "history": [],
        "final": {},
        "seconds": time.monotonic() - started,
        "config": config,
    }
    meta = {"key": key, "source": config["source"], "imported_from": config["checkpoint"]}
    save_checkpoint(ctx.store.checkpoint(key), model, meta)
    write_json_atomic(ctx.store.record(key), record)
    return {**record, "reused": False}
