"""What runs in a fine-tune trial on a Ray worker: one job, or a packed bundle of jobs.

The job's JSON config becomes typed values for :func:`raysweep.train.finetune`; metrics go
back through ``report`` (``tune.report`` in a trial), never to MLflow: the driver records them.
The helpers shared with source pretraining (cached sources, optimiser and attack configs) live
in :mod:`raysweep.worker.inputs`.
"""

from __future__ import annotations

import contextlib
import copy
import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from raysweep.data import (
    ArrayDataset,
    cached_dataset,
    dataset_info,
    sample_subset,
    validation_split,
)
from raysweep.models import TransferNet
from raysweep.models.checkpoints import CheckpointError
from raysweep.models.freeze import replace_head
from raysweep.models.net import Normalize
from raysweep.protocol import (
    DONE_KEY,
    ERROR_KEY,
    JOB_KEY,
    OOM_KEY,
    START_KEY,
    WorkerContext,
    is_done,
    mark_done,
    node_identity,
)
from raysweep.store import StoreError
from raysweep.train.common import ScheduleConfig
from raysweep.train.finetuning import finetune
from raysweep.worker import features
from raysweep.worker.inputs import (
    OOM_KEYS_ENV,
    cached_source,
    eval_attacks,
    injected_faults,
    make_augment,
    make_prepare,
    optim_config,
)
from raysweep.worker.trial_state import TrialState, log_attempt


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
    fractional trials share one device); the training loop sends the uint8 splits there once
    and prepares and augments every batch there (:mod:`raysweep.train.common`).
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
JOB_ERRORS = (FloatingPointError, FileNotFoundError, CheckpointError, StoreError)


def finetune_job(
    job: dict[str, Any], ctx: WorkerContext, report: Callable[[dict[str, Any]], None]
) -> None:
    """Fine-tune one source on one target subset, reporting metrics at every evaluation epoch.

    Out of GPU memory (other trials share the card) is reported too, marked ``OOM_KEY``: the
    driver decides whether to run the job again at lower packing. Its saved TrialState stays,
    so that run resumes from the last save.
    """
    try:
        run_finetune(job, ctx, report)
    except JOB_ERRORS as error:
        report({ERROR_KEY: " ".join(str(error).split()), "epoch": 0})
    except torch.cuda.OutOfMemoryError:
        torch.cuda.empty_cache()
        report({ERROR_KEY: "out of GPU memory", OOM_KEY: True, "epoch": 0})


def run_finetune(
    job: dict[str, Any], ctx: WorkerContext, report: Callable[[dict[str, Any]], None]
) -> None:
    torch.set_num_threads(ctx.threads)
    saved = TrialState(start_attempt(job["key"], ctx), ctx.checkpoint_every_s)
    state, reported = saved.load()
    store = ctx.store
    source = cached_source(store, job["source_key"])
    train = cached_dataset(job["target"], "train", ctx.data_root, ctx.download)
    indices = sample_subset(train.labels, job["subset_size"], job["seed"], train.info.num_classes)
    store.write_subset(job["target"], job["subset_size"], job["seed"], [int(i) for i in indices])
    model, autocast = speed_settings(prepare_target_model(source, job, job["target"]), ctx)
    prepare = make_prepare(model, ctx.channels_last)
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
            eval_attacks=eval_attacks(job.get("eval_attack")),
            state=state,
            on_epoch_end=saved.maybe_save,
        )
    saved.clear()


def start_attempt(key: str, ctx: WorkerContext) -> Path:
    """The job's trial folder, this start logged in it. A job listed in $RAYSWEEP_OOM_KEYS
    runs out of GPU memory at its first start (fault injection, :func:`injected_faults`)."""
    folder = ctx.trial_dir(key)
    if log_attempt(folder, key) == 1 and key in injected_faults(OOM_KEYS_ENV):
        raise torch.cuda.OutOfMemoryError(f"injected by ${OOM_KEYS_ENV}")
    return folder


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
