"""Source models on Ray workers: train one (natural or adversarial) or import a published
checkpoint into the store, as one Ray task of the pretrain stage.

Ray stays at the edges: :func:`pretrain_task` turns a job's JSON config into typed values and
calls the plain training functions of :mod:`raysweep.train`, which know nothing of Ray. Workers
never write to MLflow; they return a record the driver logs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch

from raysweep.data import ArrayDataset, cached_dataset, dataset_info, draw_images
from raysweep.models import TransferNet, build_model
from raysweep.models.checkpoints import save_checkpoint
from raysweep.models.published import load_source
from raysweep.protocol import WorkerContext, node_identity
from raysweep.store import write_json_atomic
from raysweep.train.common import ScheduleConfig
from raysweep.train.loop import mean_loss, pretrain
from raysweep.worker.inputs import (
    attack_config,
    make_augment,
    make_prepare,
    optim_config,
    training_kind,
)


def pretrain_task(key: str, config: dict[str, Any], ctx: WorkerContext) -> dict[str, Any]:
    """Ray task body: train or import one source (:func:`pretrain_source`), plus the node it ran
    on."""
    return {**pretrain_source(key, config, ctx), **node_identity()}


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

    indices = draw_images(test.labels, images, seed, test.info.num_classes, test.info.name)
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
