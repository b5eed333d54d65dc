"""Fine-tuning a source model on a target subset (Utrera et al. 2021; Terzi et al. 2021).

SGD over the parameters chosen by ``configure_trainable(model, blocks)`` only, minimising
``CE(f(x), y)`` on clean target images (Utrera et al. do not fine-tune adversarially).

Speed: a sweep runs thousands of these, so the leading stages with no trainable parameter
(the "frozen prefix", e.g. stem + the first 15 blocks of a ResNet-50 for ``blocks=1``) run
without autograd; when their output is deterministic (no augmentation for the training set,
frozen BatchNorms in eval mode) it is computed once and cached, within ``CACHE_BYTES``.

Resume: ``on_epoch_end`` receives a :class:`FinetuneState` after every epoch; passing it back
as ``state=`` continues the run and gives exactly the metrics of an uninterrupted run.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from raysweep.models.freeze import configure_trainable, frozen_prefix_length, set_finetune_mode
from raysweep.models.net import TransferNet
from raysweep.train import common
from raysweep.train.attacks import PGDConfig, eval_mode
from raysweep.train.common import Augment, EpochCallback, OptimConfig, Prepare, ScheduleConfig
from raysweep.train.convergence import EpochRecord, convergence_metrics

CACHE_BYTES = 1 << 30  # per data set; above it the frozen prefix is recomputed every batch
EVAL_BATCH = common.EVAL_BATCH
_STOCHASTIC = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.Dropout)


@dataclass
class FinetuneState:
    """Everything needed to continue a fine-tuning run after ``epoch`` completed epochs.

    The learning rate is a function of the epoch (:meth:`ScheduleConfig.lr_at`), so no
    scheduler state is needed. ``metrics`` are the last evaluated ones; ``history`` holds one
    (mean training loss, training accuracy, lr, steps) per completed epoch, from which the
    final epoch's convergence record is computed (:mod:`raysweep.train.convergence`).
    """

    epoch: int
    model: dict[str, Tensor]
    optimizer: dict[str, Any]
    generator: Tensor
    metrics: dict[str, float] = field(default_factory=dict)
    history: list[EpochRecord] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Builtins and tensors only, so ``torch.load(weights_only=True)`` can read it back."""
        return {
            "epoch": self.epoch,
            "model": self.model,
            "optimizer": self.optimizer,
            "generator": self.generator,
            "metrics": dict(self.metrics),
            "history": [list(record) for record in self.history],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FinetuneState:
        history = [(float(a), float(b), float(c), int(n)) for a, b, c, n in d.get("history", [])]
        return cls(
            d["epoch"], d["model"], d["optimizer"], d["generator"], dict(d["metrics"]), history
        )


def _snapshot(
    epoch: int,
    model: nn.Module,
    opt: torch.optim.Optimizer,
    gen: torch.Generator,
    metrics: dict[str, float],
    history: list[EpochRecord],
) -> FinetuneState:
    # Clones, because training goes on mutating the live tensors after the hook returns.
    model_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    optimizer = copy.deepcopy(opt.state_dict())
    return FinetuneState(
        epoch, model_state, optimizer, gen.get_state(), dict(metrics), list(history)
    )


def _restore(
    state: FinetuneState, model: nn.Module, opt: torch.optim.Optimizer, gen: torch.Generator
) -> tuple[int, dict[str, float]]:
    """Load ``state`` into the live objects; returns the next epoch and the last metrics."""
    model.load_state_dict(state.model)
    opt.load_state_dict(state.optimizer)
    gen.set_state(state.generator)
    return state.epoch + 1, dict(state.metrics)


class _StageInputs:
    """Inputs of stage ``k`` (the first trainable one) for one data set, cached if allowed.

    The uint8 images go to the model's device once (:func:`common.stage_split`); batches are
    prepared and augmented there, augmentation drawing from :func:`common.device_generator`.
    """

    def __init__(
        self,
        model: TransferNet,
        x: Tensor,
        k: int,
        prepare: Prepare,
        cache: bool,
        given: Tensor | None = None,
    ) -> None:
        self.model, self.k, self.prepare = model, k, prepare
        self.device = common.model_device(model)
        self.cached: Tensor | None = None
        if given is not None:  # computed elsewhere (the store's feature cache)
            if len(given) != len(x):
                raise ValueError(f"{len(given)} cached inputs for {len(x)} images")
            self.x, self.cached = x, common.to_device(given, self.device)
            return
        self.x = common.stage_split(x, self.device)
        if cache and len(x) > 0:
            probe = self._compute(slice(0, 1))
            if probe.element_size() * probe.numel() * len(x) <= CACHE_BYTES:
                starts = range(0, len(x), EVAL_BATCH)
                with eval_mode(model):
                    self.cached = torch.cat(
                        [self._compute(slice(i, i + EVAL_BATCH)) for i in starts]
                    )

    def _compute(
        self,
        rows: Tensor | slice,
        augment: Augment | None = None,
        gen: torch.Generator | None = None,
    ) -> Tensor:
        h = common.model_batch(self.x, rows, self.device, self.prepare)
        if augment is not None and gen is not None:
            h = augment(h, common.device_generator(gen, self.device))
        with torch.no_grad():
            return self.model.run_stages(h, 0, self.k)

    def get(
        self, idx: Tensor, augment: Augment | None = None, gen: torch.Generator | None = None
    ) -> Tensor:
        if self.cached is not None:
            return self.cached[idx.to(self.cached.device)]
        return self._compute(idx, augment, gen)


def _prefix_is_deterministic(model: TransferNet, k: int) -> bool:
    """True when no module before stage ``k`` behaves randomly or updates state in this mode."""
    return not any(
        m.training
        for stage in model.stages()[:k]
        for m in stage.modules()
        if isinstance(m, _STOCHASTIC)
    )


def _test_accuracy(model: TransferNet, inputs: _StageInputs, y: Tensor) -> float:
    """Clean accuracy (%) in no-grad batches of ``EVAL_BATCH``, under the caller's autocast;
    correct counts stay on the device: one synchronisation per evaluation."""
    y = common.to_device(y, inputs.device)
    correct = torch.zeros((), dtype=torch.long, device=inputs.device)
    with eval_mode(model), torch.inference_mode():
        for start in range(0, len(y), EVAL_BATCH):
            idx = torch.arange(start, min(start + EVAL_BATCH, len(y)), device=inputs.device)
            logits = model.run_stages(inputs.get(idx), inputs.k)
            correct += (logits.argmax(1) == y[idx]).sum()
    return 100.0 * int(correct) / len(y)


def _test_metrics(
    model: TransferNet,
    inputs: _StageInputs,
    y: Tensor,
    attacks: Sequence[PGDConfig],
    seed: int,
) -> dict[str, float]:
    """``test/acc`` from the (cached) prefix outputs; attacked accuracies through the whole
    network."""
    metrics = {"test/acc": _test_accuracy(model, inputs, y)}
    # inputs.x: the images staged on the device once, not a fresh copy per evaluation.
    metrics.update(
        common.attacked_accuracies(model, inputs.x, y, attacks, prepare=inputs.prepare, seed=seed)
    )
    return metrics


def _train_epoch(
    model: TransferNet,
    inputs: _StageInputs,
    y: Tensor,
    opt: torch.optim.Optimizer,
    batch_size: int,
    augment: Augment | None,
    gen: torch.Generator,
    epoch: int,
    lr: float,
    label_smoothing: float = 0.0,
) -> dict[str, float]:
    """One pass of SGD on ``CE(f(x), y)`` from stage ``inputs.k`` on; running loss/accuracy.

    With label smoothing ε the target is (1 − ε)·onehot(y) + ε/K (Szegedy et al. 2016).
    """
    common.set_lr(opt, lr)
    running = common.RunningMetrics()
    for idx in common.shuffled_batches(len(y), batch_size, gen):
        yb = y[idx].to(inputs.device)
        logits = model.run_stages(inputs.get(idx, augment, gen), inputs.k)
        loss = F.cross_entropy(logits, yb, label_smoothing=label_smoothing)
        running.add(common.sgd_step(opt, loss, epoch, lr), logits, yb)
    return running.result()


def _check_eval_epochs(eval_epochs: Sequence[int], epochs: int) -> set[int]:
    bad = [e for e in eval_epochs if not 1 <= e <= epochs]
    if bad:
        raise ValueError(f"eval_epochs {bad} are outside 1..{epochs}")
    return {*eval_epochs, epochs}


def finetune(
    model: TransferNet,
    train_x: Tensor,
    train_y: Tensor,
    test_x: Tensor,
    test_y: Tensor,
    *,
    blocks: int | str,
    update_frozen_bn_stats: bool,
    optim: OptimConfig,
    schedule: ScheduleConfig,
    eval_epochs: Sequence[int],
    prepare: Prepare,
    augment: Augment | None,
    seed: int,
    on_eval: EpochCallback | None = None,
    state: FinetuneState | None = None,
    on_epoch_end: Callable[[FinetuneState], None] | None = None,
    eval_attacks: Sequence[PGDConfig] = (),
    label_smoothing: float = 0.0,
    cached_inputs: tuple[Tensor | None, Tensor | None] = (None, None),
) -> dict[str, float]:
    """Fine-tune ``model`` in place; returns the final epoch's metrics.

    At each epoch in ``eval_epochs`` (the final epoch is always added) ``on_eval(epoch, m)``
    gets ``m = {"train/loss", "train/acc", "train/lr", "test/acc"}``: the running mean loss
    and accuracy (%) of that epoch's training batches and the test accuracy (%) in eval mode.
    The final epoch's ``m`` also holds the run's convergence record (``train/steps``,
    ``train/loss_rel_change``, ``train/loss_tail_share``, ``train/converged``; the rule
    is :mod:`raysweep.train.convergence`'s), from the per-epoch history kept in the state.
    Per attack of ``eval_attacks``, ``m[attack.metric]`` (``adv/acc``, ``adv/acc_cw``) is the
    test accuracy (%) under it, run through the whole network (the attack needs input
    gradients, so the cached frozen prefix cannot be used). Deterministic given ``seed``:
    shuffling and augmentation draw from one generator; the attack's random starts from its
    own, seeded by ``seed`` at every evaluation, so adding an attack changes no training
    metric. ``label_smoothing`` ε trains on (1 − ε)·onehot(y) + ε/K (a tunable of the search,
    raysweep.spec.search); evaluation is plain.

    ``cached_inputs`` = (train, test) outputs of the frozen prefix ``stages()[:k]`` computed
    elsewhere (:mod:`raysweep.worker.features`), each None to compute it here. They are only
    valid when that prefix is deterministic and, for train, there is no augmentation: else
    ValueError.
    """
    evals = _check_eval_epochs(eval_epochs, schedule.epochs)
    if len(train_y) == 0 or len(test_y) == 0:
        raise ValueError("fine-tuning needs non-empty training and test sets")
    opt = common.make_sgd(configure_trainable(model, blocks), optim)
    gen = torch.Generator().manual_seed(seed)
    first_epoch, metrics = 1, {}
    history: list[EpochRecord] = []  # one record per completed epoch, kept in the state
    if state is not None:
        first_epoch, metrics = _restore(state, model, opt, gen)
        history = list(state.history)
    k = frozen_prefix_length(model)
    set_finetune_mode(model, blocks, update_frozen_bn_stats)
    fixed = _prefix_is_deterministic(model, k)
    given_train, given_test = cached_inputs
    if (given_train is not None or given_test is not None) and not fixed:
        raise ValueError("cached prefix outputs need a deterministic frozen prefix")
    if given_train is not None and augment is not None:
        raise ValueError("cached training inputs cannot be augmented")
    train_in = _StageInputs(model, train_x, k, prepare, fixed and augment is None, given_train)
    test_in = _StageInputs(model, test_x, k, prepare, cache=fixed, given=given_test)
    smoothing = label_smoothing
    for epoch in range(first_epoch, schedule.epochs + 1):
        lr = schedule.lr_at(optim.lr, epoch)
        set_finetune_mode(model, blocks, update_frozen_bn_stats)
        running = _train_epoch(
            model, train_in, train_y, opt, optim.batch_size, augment, gen, epoch, lr, smoothing
        )
        steps = -(-len(train_y) // optim.batch_size)  # the batches of shuffled_batches
        history.append((running["train/loss"], running["train/acc"], lr, steps))
        if epoch in evals:
            metrics = {**running, "train/lr": lr}
            if epoch == schedule.epochs:
                metrics.update(convergence_metrics(history, optim.lr))
            metrics.update(_test_metrics(model, test_in, test_y, eval_attacks, seed))
            if on_eval is not None:
                on_eval(epoch, dict(metrics))
        if on_epoch_end is not None:
            on_epoch_end(_snapshot(epoch, model, opt, gen, metrics, history))
    return metrics
