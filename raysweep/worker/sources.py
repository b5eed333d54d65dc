"""Source models on Ray workers: train one (natural or adversarial) or import a published
checkpoint into the store, as one Ray task of the pretrain stage.

Ray stays at the edges: :func:`pretrain_task` turns a job's JSON config into typed values and
calls the plain training functions of :mod:`raysweep.train`, which know nothing of Ray. Workers
never write to MLflow; they return a record the driver logs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from raysweep.data import ArrayDataset, cached_dataset, dataset_info, draw_images
from raysweep.models import TransferNet, build_model
from raysweep.models.checkpoints import save_checkpoint
from raysweep.models.published import load_source
from raysweep.protocol import EventSender, WorkerContext, node_identity, thread_grant_file
from raysweep.store import Store, StoreError, exclusive, sha256_file, write_json_atomic
from raysweep.train.common import ScheduleConfig
from raysweep.train.loop import mean_loss, pretrain
from raysweep.worker.inputs import (
    eval_attacks,
    make_augment,
    make_prepare,
    optim_config,
    training_kind,
)


def pretrain_task(
    key: str, config: dict[str, Any], ctx: WorkerContext, inbox: Any = None, share: bool = False
) -> dict[str, Any]:
    """Ray task body: train or import one source (:func:`pretrain_source`), plus the node it ran
    on. Its start and every training epoch's metrics go to ``inbox`` as they happen, so the
    driver's run of the source is live; with ``share``, after each epoch it takes the threads
    the driver granted (raysweep.driver.cores), so the last sources use the cores others freed."""
    grant = thread_grant_file(ctx.trials_root, key) if share else None
    events = EventSender(inbox, key, grant)
    events.started()

    def on_epoch(row: dict[str, Any]) -> None:
        events.epoch(row)
        torch.set_num_threads(events.granted_threads(torch.get_num_threads()))

    record = pretrain_source(key, config, ctx, on_epoch)
    events.flush()
    return {**record, **node_identity()}


def pretrain_source(
    key: str,
    config: dict[str, Any],
    ctx: WorkerContext,
    report: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Train (or import) one source model into the store; reuse it if it is already there.

    Builders of one key take the store's lock for it, so two sweeps that need the same source
    at once train it once: the second waits, then reuses it. A stored checkpoint whose sha256
    no longer matches its record is rebuilt. Returns the record: per-epoch metrics history,
    final metrics, seconds, the checkpoint's sha256, and ``reused``; ``report`` gets each
    training epoch's row as it ends.
    """
    torch.set_num_threads(ctx.threads)
    store = ctx.store
    with exclusive(store.lock(key)):
        record = store.read_record(key)
        if record is not None and checkpoint_intact(store, key, record):
            return {**record, "reused": True}
        if "checkpoint" in config:
            model, record = import_source(key, config, ctx)
        else:
            model, record = train_source(key, config, ctx, report)
        save_checkpoint(store.checkpoint(key), model, checkpoint_meta(key, config))
        record["sha256"] = sha256_file(store.checkpoint(key))
        write_json_atomic(store.record(key), record)
    return {**record, "reused": False}


def checkpoint_intact(store: Store, key: str, record: dict[str, Any]) -> bool:
    """Whether a stored checkpoint matches its record's sha256; a record from before checksums
    gets one now (trust on first use)."""
    actual = sha256_file(store.checkpoint(key))
    if "sha256" not in record:
        record["sha256"] = actual
        write_json_atomic(store.record(key), record)
    return record["sha256"] == actual


def checkpoint_meta(key: str, config: dict[str, Any]) -> dict[str, Any]:
    meta = {"key": key, "source": config["source"]}
    if "checkpoint" in config:
        meta["imported_from"] = config["checkpoint"]
    return meta


def train_source(
    key: str,
    config: dict[str, Any],
    ctx: WorkerContext,
    report: Callable[[dict[str, Any]], None] | None = None,
) -> tuple[TransferNet, dict[str, Any]]:
    """Pretrain a source as its spec says: natural or adversarial, with per-epoch history."""
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
        if report is not None:
            report(history[-1])

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
        eval_attacks=eval_attacks(p["eval_attack"]),
        on_epoch=on_epoch,
    )
    seconds = time.monotonic() - started
    return model, source_record(key, config, seconds, history=history, final=final)


def source_record(
    key: str,
    config: dict[str, Any],
    seconds: float,
    history: list[dict[str, Any]] | None = None,
    final: dict[str, float] | None = None,
) -> dict[str, Any]:
    """The JSON record kept beside a checkpoint (the driver logs it on the source's run)."""
    return {
        "key": key,
        "history": history or [],
        "final": final or {},
        "seconds": seconds,
        "config": config,
    }


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


def import_source(
    key: str, config: dict[str, Any], ctx: WorkerContext
) -> tuple[TransferNet, dict[str, Any]]:
    """Load a published or local checkpoint, to be kept in the store in raysweep's format.

    A local file must still be the one the sweep was planned with (its key is its sha256)."""
    started = time.monotonic()
    planned = config.get("checkpoint_sha256")
    if planned is not None and sha256_file(Path(config["checkpoint"]).expanduser()) != planned:
        raise StoreError(
            f"checkpoint file {config['checkpoint']} changed since the sweep was planned; "
            "relaunch the spec: a new file is a new source (new keys)"
        )
    info = dataset_info(config["dataset"])
    model = load_source(
        config["checkpoint"], config["architecture"], info.mean, info.std, ctx.data_root
    )
    return model, source_record(key, config, time.monotonic() - started)
