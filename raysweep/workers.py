"""What runs on Ray workers: source pretraining (a Ray task) and the fine-tune trainable.

Ray stays at the edges: these functions turn a job's JSON config into typed values and call
the plain training functions of :mod:`raysweep.train`, which know nothing of Ray. Workers never
write to MLflow; they report to the driver, which records everything.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from raysweep import features
from raysweep.data import (
    ArrayDataset,
    augment_batch,
    dataset_info,
    load_dataset,
    sample_subset,
    to_model_input,
)
from raysweep.entrypoints import (
    ERROR_KEY,
    WorkerContext,
    node_identity,
)
from raysweep.models import TransferNet, build_model
from raysweep.models.checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from raysweep.models.freeze import replace_head
from raysweep.models.net import Normalize
from raysweep.models.published import load_source
from raysweep.store import write_json_atomic
from raysweep.train.attacks import PGDConfig
from raysweep.train.kinds import make_training_kind
from raysweep.train.loop import OptimConfig, ScheduleConfig, finetune, mean_loss, pretrain
from raysweep.trials import (
    DONE_KEY,
    JOB_KEY,
    START_KEY,
    TrialState,
    is_done,
    log_attempt,
    mark_done,
)

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


def prepare_target_model(source: TransferNet, job: dict[str, Any], target: str) -> TransferNet:
    """Copy the source, give it a fresh head for the target's classes (Utrera A.3)."""
    info = dataset_info(target)
    model = copy.deepcopy(source)
    replace_head(model, info.num_classes, init=job["head_init"], seed=job["seed"])
    if job["normalization"] == "target":
        model.normalize = Normalize(info.mean, info.std, model.input_channels)
    return model


def speed_settings(
    model: TransferNet, ctx: WorkerContext
) -> tuple[TransferNet, contextlib.AbstractContextManager[Any]]:
    """Place a trial's model and choose its autocast, as ``resources`` asks.

    GPU: the model moves to ``cuda`` (Ray sets CUDA_VISIBLE_DEVICES to the trial's share, so
    fractional trials share one device); batches follow it inside the training loop.
    ``channels_last``: NHWC weights, which tensor-core convolutions prefer. ``bf16``:
    ``torch.autocast(dtype=bfloat16)`` around training and evaluation (losses stay float32),
    on a GPU only: CPU autocast is no faster here and, measured on a toy target, fine-tuning a
    block under it reached 56 % instead of 100 % test accuracy.
    """
    device = "cuda" if ctx.gpu and torch.cuda.is_available() else "cpu"
    fmt = torch.channels_last if ctx.channels_last else torch.preserve_format
    model = model.to(device=device, memory_format=fmt)
    use_bf16 = ctx.bf16 and device == "cuda"
    return model, torch.autocast(device, dtype=torch.bfloat16, enabled=use_bf16)


#: Failures that a retry cannot fix: reported as the job's result (the run becomes FAILED with
#: the reason), never raised, so Tune does not spend its retries — kept for lost nodes — on them.
JOB_ERRORS = (FloatingPointError, FileNotFoundError, CheckpointError)


def finetune_job(
    job: dict[str, Any], ctx: WorkerContext, report: Callable[[dict[str, Any]], None]
) -> None:
    """Fine-tune one source on one target subset, reporting metrics at every evaluation epoch."""
    try:
        run_finetune(job, ctx, report)
    except JOB_ERRORS as error:
        report({ERROR_KEY: " ".join(str(error).split()), "epoch": 0})


def run_finetune(
    job: dict[str, Any], ctx: WorkerContext, report: Callable[[dict[str, Any]], None]
) -> None:
    torch.set_num_threads(ctx.threads)
    folder = ctx.trial_dir(job["key"])
    log_attempt(folder, job["key"])
    saved = TrialState(folder, ctx.checkpoint_every_s)
    state, reported = saved.load()
    store = ctx.store
    source = cached_source(str(store.checkpoint(job["source_key"])))
    train = cached_dataset(job["target"], "train", ctx.data_root, ctx.download)
    indices = sample_subset(train.labels, job["subset_size"], job["seed"], train.info.num_classes)
    subset_file = store.subset(job["target"], job["subset_size"], job["seed"])
    if not subset_file.is_file():
        write_json_atomic(subset_file, {"indices": [int(i) for i in indices]})
    model, autocast = speed_settings(prepare_target_model(source, job, job["target"]), ctx)
    prepare = make_prepare(model)
    index, eval_x, eval_y, cached = evaluation_data(job, ctx, model, train, indices, prepare)
    base = {"n_train": len(index)}

    def on_eval(epoch: int, metrics: dict[str, float]) -> None:
        if "validation_fraction" in job:  # search trials evaluate on held-out training images
            metrics = {k.replace("test/", "val/"): v for k, v in metrics.items()}
        row = {**base, **metrics, "epoch": epoch}
        saved.reported.append(row)
        report(row)

    for row in reported:  # the history of an interrupted attempt, so the run has it all
        on_eval(row["epoch"], {k: v for k, v in row.items() if k not in ("epoch", "n_train")})
    with autocast:
        finetune(
            model,
            train.images[index],
            train.labels[index],
            eval_x,
            eval_y,
            blocks=job["blocks"],
            update_frozen_bn_stats=job["update_frozen_bn_stats"],
            optim=optim_config(job["optimizer"], poisoned=job["key"] in injected_faults()),
            schedule=ScheduleConfig(
                epochs=job["epochs"],
                milestones=tuple(job["lr_milestones"]),
                decay=job["lr_decay"],
            ),
            eval_epochs=job["eval_epochs"],
            prepare=prepare,
            augment=make_augment(job["augment"]),
            seed=job["seed"],
            on_eval=on_eval,
            cached_inputs=cached,
            label_smoothing=job.get("label_smoothing", 0.0),
            eval_attack=attack_config(job.get("eval_attack")),
            state=state,
            on_epoch_end=saved.maybe_save,
        )
    saved.clear()


def evaluation_data(
    job: dict[str, Any],
    ctx: WorkerContext,
    model: TransferNet,
    train: ArrayDataset,
    indices: Any,
    prepare: Callable[[torch.Tensor], torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, tuple[Any, Any]]:
    """(training rows, evaluation images, labels, cached head inputs) of a fine-tune job.

    A grid job evaluates on the target's test split. A search trial (``validation_fraction``
    in its job) trains on its subset minus a validation split and evaluates on that split: it
    never loads the test split, and skips the feature cache, whose entries are per split.
    """
    if "validation_fraction" in job:
        from raysweep.search_stage import validation_split

        fit, held = validation_split(
            indices, train.labels, job["validation_fraction"], job["seed"], train.info.num_classes
        )
        rows = torch.as_tensor(held)
        return torch.as_tensor(fit), train.images[rows], train.labels[rows], (None, None)
    test = cached_dataset(job["target"], "test", ctx.data_root, ctx.download)
    index = torch.as_tensor(indices)
    # Head-only jobs train on the source's features, computed once per target in the store.
    cached = features.head_inputs(job, model, ctx.store, train.images, test.images, index, prepare)
    return index, test.images, test.labels, cached


def finetune_trainable(config: dict[str, Any]) -> None:
    """Ray Tune function trainable: config = {"job": job config + key, "context": WorkerContext},
    or a packed trial {"bundle": {"name", "jobs": [job config + key, ...]}, "context"}.

    Every report carries the node it comes from: a trial retried after its node died reports
    from the new one.
    """
    from ray import tune

    where = node_identity()
    ctx = WorkerContext(**config["context"])
    if "bundle" in config:
        run_bundle(config["bundle"]["jobs"], ctx, lambda row: tune.report({**row, **where}))
        return
    finetune_job(config["job"], ctx, lambda row: tune.report({**row, **where}))


def run_bundle(
    jobs: list[dict[str, Any]], ctx: WorkerContext, report: Callable[[dict[str, Any]], None]
) -> None:
    """Run a packed trial's jobs one after another; the driver records each as its own run.

    Reports: ``{START_KEY: first}``, then each job's rows tagged ``JOB_KEY``; a job's last row
    is held back and sent with ``DONE_KEY`` and the next job's ``START_KEY``, so a one-eval job
    costs one report. A job failing with ``JOB_ERRORS`` reports its error and the bundle goes
    on. A retried bundle (its node died) skips the jobs marked done — a marker is written only
    after the job's last report returned, i.e. after the driver closed its run — and resumes
    the interrupted one from its TrialState.
    """
    todo = [job for job in jobs if not is_done(ctx.trial_dir(job["key"]))]
    if todo:
        report({START_KEY: todo[0]["key"], "epoch": 0})
    for i, job in enumerate(todo):
        held: list[dict[str, Any]] = []
        finetune_job(job, ctx, functools.partial(hold_last, held, job["key"], report))
        last = held[0] if held else {"epoch": 0, JOB_KEY: job["key"]}
        following = {START_KEY: todo[i + 1]["key"]} if i + 1 < len(todo) else {}
        report({**last, DONE_KEY: True, **following})
        mark_done(ctx.trial_dir(job["key"]))


def hold_last(
    held: list[dict[str, Any]],
    key: str,
    report: Callable[[dict[str, Any]], None],
    row: dict[str, Any],
) -> None:
    """Send the row held so far and hold this one: the job's last row goes out with its end."""
    if held:
        report(held.pop())
    held.append({**row, JOB_KEY: key})
