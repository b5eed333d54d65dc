"""Pretraining (natural or robust) of a source model; the public face of the training loops.

``finetune`` (in :mod:`raysweep.train.finetuning`), the configs and ``evaluate`` (in
:mod:`raysweep.train.common`) are re-exported here so that one import serves a worker.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from raysweep.train.attacks import PGDConfig, eval_mode
from raysweep.train.common import (
    EVAL_BATCH,
    Augment,
    EpochCallback,
    OptimConfig,
    Prepare,
    RunningMetrics,
    ScheduleConfig,
    attacked_accuracies,
    device_generator,
    evaluate,
    make_sgd,
    model_batch,
    model_device,
    set_lr,
    sgd_step,
    shuffled_batches,
    stage_split,
    to_device,
)
from raysweep.train.finetuning import FinetuneState, finetune
from raysweep.train.kinds import TrainingKind, training_loss

__all__ = [
    "Augment",
    "EpochCallback",
    "FinetuneState",
    "OptimConfig",
    "Prepare",
    "ScheduleConfig",
    "evaluate",
    "finetune",
    "mean_loss",
    "pretrain",
    "weight_norm",
]


def weight_norm(model: nn.Module) -> float:
    """``sqrt(sum ||W||_F^2)`` over conv and linear weight tensors (biases and BN excluded).

    The l2 norm of the weights that Terzi et al. (Fig. 5) track against epsilon.
    """
    with torch.no_grad():
        total = sum(float(p.pow(2).sum()) for p in model.parameters() if p.dim() > 1)
    return math.sqrt(total)


def mean_loss(
    model: nn.Module, x: Tensor, y: Tensor, *, prepare: Prepare, batch_size: int = EVAL_BATCH
) -> float:
    """Mean cross-entropy ``(1/N) sum_i -log p(y_i | x_i)`` of ``model`` on clean ``(x, y)``.

    The test loss the CCKL paper (App. B, Fig. 6) correlates with CCKL over training epochs.
    Eval mode inside, each submodule's mode restored after.
    """
    if len(y) == 0:
        raise ValueError("cannot evaluate on an empty set")
    device = model_device(model)
    y = to_device(y, device)
    total = torch.zeros((), dtype=torch.float64, device=device)  # one sync, at the end
    with eval_mode(model), torch.inference_mode():
        for start in range(0, len(y), batch_size):
            rows = slice(start, start + batch_size)
            xb = model_batch(x, rows, device, prepare)
            total += F.cross_entropy(model(xb), y[rows], reduction="sum").double()
    return float(total) / len(y)


def _pretrain_epoch(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    kind: TrainingKind,
    opt: torch.optim.Optimizer,
    batch_size: int,
    prepare: Prepare,
    augment: Augment | None,
    gen: torch.Generator,
    epoch: int,
    lr: float,
) -> dict[str, float]:
    device = model_device(model)
    running = RunningMetrics()
    model.train()
    for idx in shuffled_batches(len(y), batch_size, gen):
        xb = model_batch(x, idx, device, prepare)
        yb = to_device(y[idx], device)
        draws = device_generator(gen, device)
        if augment is not None:
            xb = augment(xb, draws)
        loss, logits = training_loss(kind, model, xb, yb, generator=draws)
        running.add(sgd_step(opt, loss, epoch, lr), logits, yb)
    return running.result()


def pretrain(
    model: nn.Module,
    train_x: Tensor,
    train_y: Tensor,
    test_x: Tensor,
    test_y: Tensor,
    *,
    kind: TrainingKind,
    optim: OptimConfig,
    schedule: ScheduleConfig,
    prepare: Prepare,
    augment: Augment | None,
    seed: int,
    eval_attacks: Sequence[PGDConfig] = (),
    on_epoch: EpochCallback | None = None,
) -> dict[str, float]:
    """Train every parameter of ``model`` with ``kind`` by SGD; returns the last epoch's metrics.

    Per epoch (1-based, passed to ``on_epoch``): ``train/loss`` and ``train/acc`` (running
    means over the epoch, on the inputs trained on), ``train/lr``, ``train/weight_norm``,
    ``test/acc`` and, per attack of ``eval_attacks``, its accuracy on the test set (``adv/acc``
    for PGD on cross-entropy, ``adv/acc_cw`` for the CW margin).
    """
    gen = torch.Generator().manual_seed(seed)
    opt = make_sgd(model.parameters(), optim)
    metrics: dict[str, float] = {}
    train_x, test_x = (stage_split(x, model_device(model)) for x in (train_x, test_x))
    for epoch in range(1, schedule.epochs + 1):
        lr = schedule.lr_at(optim.lr, epoch)
        set_lr(opt, lr)
        metrics = _pretrain_epoch(
            model,
            train_x,
            train_y,
            kind=kind,
            opt=opt,
            batch_size=optim.batch_size,
            prepare=prepare,
            augment=augment,
            gen=gen,
            epoch=epoch,
            lr=lr,
        )
        metrics["train/lr"] = lr
        metrics["train/weight_norm"] = weight_norm(model)
        metrics["test/acc"] = evaluate(model, test_x, test_y, prepare=prepare)
        metrics.update(
            attacked_accuracies(model, test_x, test_y, eval_attacks, prepare=prepare, seed=seed)
        )
        if on_epoch is not None:
            on_epoch(epoch, dict(metrics))
    return metrics
