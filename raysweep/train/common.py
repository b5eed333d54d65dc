"""Pieces shared by the pretraining and fine-tuning loops: configs, SGD steps, evaluation.

Plain functions on tensors: they know nothing of Ray, MLflow or the data registry. Images
arrive as uint8 ``[N, C, H, W]``; the caller's ``prepare`` turns a batch into float [0, 1]
model input and its optional ``augment`` perturbs it. Every random draw (shuffling,
augmentation, attack starts, noise) comes from one ``torch.Generator`` seeded by ``seed``.
Metric names: ``train/*``, ``test/*``, ``adv/*``; accuracies are in percent; steps are epochs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from raysweep.train.attacks import PGDConfig, eval_mode, pgd_attack

Prepare = Callable[[Tensor], Tensor]
Augment = Callable[[Tensor, torch.Generator], Tensor]
EpochCallback = Callable[[int, dict[str, float]], None]


@dataclass(frozen=True)
class OptimConfig:
    """SGD hyper-parameters (Utrera et al., Table 3: lr 0.1, momentum 0.9, wd 5e-4, batch 128)."""

    lr: float
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 128
    nesterov: bool = False

    def __post_init__(self) -> None:
        if self.lr <= 0 or self.batch_size < 1 or self.momentum < 0 or self.weight_decay < 0:
            raise ValueError(f"invalid optimiser settings: {self}")


@dataclass(frozen=True)
class ScheduleConfig:
    """Step decay: ``lr_e = lr * decay ** #{m in milestones : m < e}`` for 1-based epoch ``e``.

    This is ``torch.optim.lr_scheduler.MultiStepLR`` stepped once per epoch, written as a
    function of the epoch so that a resumed run needs no scheduler state.
    """

    epochs: int
    milestones: tuple[int, ...] = ()
    decay: float = 0.1

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")

    def lr_at(self, base_lr: float, epoch: int) -> float:
        """Learning rate used during 1-based ``epoch``."""
        return base_lr * self.decay ** sum(1 for m in self.milestones if m < epoch)


def make_sgd(params: Iterable[nn.Parameter], optim: OptimConfig) -> torch.optim.SGD:
    return torch.optim.SGD(
        list(params),
        lr=optim.lr,
        momentum=optim.momentum,
        weight_decay=optim.weight_decay,
        nesterov=optim.nesterov,
    )


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for group in opt.param_groups:
        group["lr"] = lr


def sgd_step(opt: torch.optim.Optimizer, loss: Tensor, epoch: int, lr: float) -> float:
    """One SGD step on ``loss``; returns its value. A NaN/inf loss stops training."""
    value = float(loss.detach())
    if not math.isfinite(value):
        raise FloatingPointError(
            f"non-finite training loss at epoch {epoch} (lr {lr:g}): lower the learning rate"
        )
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return value


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def shuffled_batches(n: int, batch_size: int, gen: torch.Generator) -> list[Tensor]:
    """A random partition of ``range(n)`` into batches (the last one may be smaller)."""
    return list(torch.randperm(n, generator=gen).split(batch_size))


class RunningMetrics:
    """Sample-weighted mean loss and accuracy (%) over an epoch's batches."""

    def __init__(self) -> None:
        self.loss_sum = 0.0
        self.correct = 0
        self.count = 0

    def add(self, loss: float, logits: Tensor, y: Tensor) -> None:
        self.loss_sum += loss * len(y)
        self.correct += int((logits.detach().argmax(1) == y).sum())
        self.count += len(y)

    def result(self) -> dict[str, float]:
        return {
            "train/loss": self.loss_sum / self.count,
            "train/acc": 100.0 * self.correct / self.count,
        }


def attacked_accuracies(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    attacks: Sequence[PGDConfig],
    *,
    prepare: Prepare,
    seed: int = 0,
) -> dict[str, float]:
    """Accuracy (%) under each attack, by its metric name (``adv/acc``, ``adv/acc_cw``)."""
    return {a.metric: evaluate(model, x, y, prepare=prepare, attack=a, seed=seed) for a in attacks}


def evaluate(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    prepare: Prepare,
    batch_size: int = 512,
    attack: PGDConfig | None = None,
    seed: int = 0,
) -> float:
    """Top-1 accuracy (%) of ``model`` on ``(x, y)``, clean or under ``attack``.

    Eval mode inside, each submodule's mode restored after. The attack's random start is
    drawn from a generator seeded with ``seed`` so repeated evaluations agree.
    """
    if len(y) == 0:
        raise ValueError("cannot evaluate on an empty set")
    device = model_device(model)
    gen = torch.Generator(device=device).manual_seed(seed)
    correct = 0
    with eval_mode(model):
        for start in range(0, len(y), batch_size):
            xb = prepare(x[start : start + batch_size]).to(device)
            yb = y[start : start + batch_size].to(device)
            if attack is not None:
                xb = pgd_attack(model, xb, yb, attack, generator=gen)
            with torch.inference_mode():
                correct += int((model(xb).argmax(1) == yb).sum())
    return 100.0 * correct / len(y)
