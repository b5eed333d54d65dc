"""Pieces shared by the pretraining and fine-tuning loops: configs, SGD steps, evaluation.

Plain functions on tensors: they know nothing of Ray, MLflow or the data registry. Images
arrive as uint8 ``[N, C, H, W]``; the caller's ``prepare`` turns a batch into float [0, 1]
model input and its optional ``augment`` perturbs it. Every random draw (shuffling,
augmentation, attack starts, noise) comes from one ``torch.Generator`` seeded by ``seed``.
Metric names: ``train/*``, ``test/*``, ``adv/*``; accuracies are in percent; steps are epochs.

Data path: only uint8 images (and integer labels) cross to the model's device
(:func:`to_device`, the one crossing); up-scaling, channel matching, augmentation and the
model's normalisation run there. A split goes to the device once (:func:`stage_split`) when
it fits, else each gathered uint8 batch is pinned and sent ``non_blocking``. A 128-image
224 px batch is then 0.4 MB on the bus instead of 77 MB of float32 prepared on one core.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from raysweep.train.attacks import PGDConfig, eval_mode, pgd_attack

#: Images per no-grad evaluation batch (test accuracy, test loss, prefix caches).
EVAL_BATCH = 512
#: A split of at most this many (uint8) bytes moves to an accelerator once, for the whole run
#: (CIFAR-10's training split is 150 MB); a larger one stays in host memory and streams.
DEVICE_SPLIT_BYTES = 2 << 30

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


def to_device(x: Tensor, device: torch.device) -> Tensor:
    """``x`` on ``device``: the one place where batches cross to the model's device.

    Batches are uint8 images and integer labels only (tests/test_train_device.py pins it);
    the one float exception is the store's precomputed head inputs, sent once per trial. A
    host batch bound for a GPU is pinned first so that the copy overlaps compute.
    """
    if x.device == device:
        return x
    if device.type == "cuda" and x.device.type == "cpu":
        return x.pin_memory().to(device, non_blocking=True)
    return x.to(device)


def stage_split(x: Tensor, device: torch.device) -> Tensor:
    """A split's images where its batches are gathered from: on ``device`` when they take at
    most :data:`DEVICE_SPLIT_BYTES`, else where they are (batches then stream)."""
    if x.element_size() * x.numel() <= DEVICE_SPLIT_BYTES:
        return to_device(x, device)
    return x


def model_batch(x: Tensor, rows: Tensor | slice, device: torch.device, prepare: Prepare) -> Tensor:
    """Model input of images ``x[rows]``: gathered where ``x`` lives, sent to ``device`` as
    stored (uint8), prepared there."""
    if isinstance(rows, Tensor):
        rows = rows.to(x.device)
    return prepare(to_device(x[rows], device))


def device_generator(run: torch.Generator, device: torch.device) -> torch.Generator:
    """The generator a batch's augmentation and noise draw from on ``device``.

    The run's own generator when it lives there (the CPU: the same stream as ever); else a
    generator on ``device`` seeded by one draw from the run's generator, per batch. So the
    draws are reproducible per seed on every device, and a resumed run, whose saved state is
    the run's generator, continues the very same stream.
    """
    if run.device.type == device.type:
        return run
    seed = int(torch.randint(0, 2**62, (1,), generator=run, device=run.device))
    return torch.Generator(device=device).manual_seed(seed)


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
    if not attacks:
        return {}
    x = stage_split(x, model_device(model))
    return {a.metric: evaluate(model, x, y, prepare=prepare, attack=a, seed=seed) for a in attacks}


def evaluate(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    prepare: Prepare,
    batch_size: int = EVAL_BATCH,
    attack: PGDConfig | None = None,
    seed: int = 0,
) -> float:
    """Top-1 accuracy (%) of ``model`` on ``(x, y)``, clean or under ``attack``.

    Eval mode inside, each submodule's mode restored after. The attack's random start is
    drawn from a generator seeded with ``seed`` so repeated evaluations agree. Correct counts
    stay on the device until the end: one synchronisation per evaluation, not per batch.
    """
    if len(y) == 0:
        raise ValueError("cannot evaluate on an empty set")
    device = model_device(model)
    gen = torch.Generator(device=device).manual_seed(seed)
    y = to_device(y, device)
    correct = torch.zeros((), dtype=torch.long, device=device)
    with eval_mode(model):
        for start in range(0, len(y), batch_size):
            rows = slice(start, start + batch_size)
            xb, yb = model_batch(x, rows, device, prepare), y[rows]
            if attack is not None:
                xb = pgd_attack(model, xb, yb, attack, generator=gen)
            with torch.inference_mode():
                correct += (model(xb).argmax(1) == yb).sum()
    return 100.0 * int(correct) / len(y)
