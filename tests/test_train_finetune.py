"""Fine-tuning: determinism, exact resume, evaluation epochs, prefix caching, NaN guard."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import torch
from torch import Tensor

from raysweep.models import TransferNet, build_model, replace_head
from raysweep.train import (
    FinetuneState,
    OptimConfig,
    PGDConfig,
    ScheduleConfig,
    default_step_size,
    finetune,
    make_training_kind,
    pretrain,
)
from raysweep.train import finetuning as finetune_module

CONVERGENCE = ("train/steps", "train/loss_rel_change", "train/loss_tail_share",
               "train/converged")  # fmt: skip


def prepare(xb: Tensor) -> Tensor:
    return xb.float() / 255


def flip(x: Tensor, gen: torch.Generator) -> Tensor:
    """Random horizontal flips drawn from the run's generator."""
    mask = torch.rand(len(x), generator=gen) < 0.5
    return torch.where(mask.view(-1, 1, 1, 1), x.flip(-1), x)


def toy(n: int, seed: int, task: int = 7) -> tuple[Tensor, Tensor]:
    """4 classes = 4 fixed colours (flip-invariant; ``task`` seeds them) + noise, 16x16 uint8."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 4, (n,), generator=g)
    templates = torch.rand(4, 3, 1, 1, generator=torch.Generator().manual_seed(task))
    img = 0.5 + 0.5 * (templates[y] - 0.5) + 0.1 * torch.randn(n, 3, 16, 16, generator=g)
    return (img.clamp(0, 1) * 255).round().to(torch.uint8), y


@pytest.fixture(scope="module")
def source() -> TransferNet:
    """A briefly pretrained source (an untrained one has near-constant eval-mode features)."""
    torch.manual_seed(0)
    model = build_model("small_cnn", 4, [0.5], [0.25])
    x, y = toy(256, 3, task=11)
    pretrain(
        model, x, y, x[:32], y[:32], kind=make_training_kind("natural"),
        optim=OptimConfig(lr=0.05, batch_size=32), schedule=ScheduleConfig(epochs=2),
        prepare=prepare, augment=None, seed=0,
    )  # fmt: skip
    replace_head(model, 4, init="default", seed=1)
    return model


def run(model: TransferNet, **kw: object) -> dict[str, float]:
    x, y = toy(96, 1)
    tx, ty = toy(64, 2)
    args: dict = dict(
        blocks=1, update_frozen_bn_stats=False, optim=OptimConfig(lr=0.05, batch_size=32),
        schedule=ScheduleConfig(epochs=4, milestones=(2,)), eval_epochs=[1, 3],
        prepare=prepare, augment=flip, seed=0,
    )  # fmt: skip
    args.update(kw)
    return finetune(model, x, y, tx, ty, **args)


def test_same_seed_same_metrics_and_evaluation_epochs(source: TransferNet) -> None:
    seen: list[tuple[int, dict[str, float]]] = []
    first = run(copy.deepcopy(source), on_eval=lambda e, m: seen.append((e, m)))
    again = run(copy.deepcopy(source))
    other = run(copy.deepcopy(source), seed=1)
    assert first == again
    assert first != other
    assert [e for e, _ in seen] == [1, 3, 4]
    assert seen[-1][1] == first
    assert set(seen[0][1]) == {"train/loss", "train/acc", "train/lr", "test/acc"}
    assert set(first) == set(seen[0][1]) | set(CONVERGENCE)  # the last epoch adds its record
    assert first["train/steps"] == 4 * 3  # 4 epochs of ⌈96 / 32⌉ batches
    assert seen[0][1]["train/lr"] == 0.05 and first["train/lr"] == pytest.approx(0.005)
    assert first["test/acc"] > 60.0  # 4 separable classes, chance is 25 %
    assert 0.0 <= first["train/acc"] <= 100.0


@pytest.mark.parametrize(("blocks", "augment"), [(1, flip), (0, None)])
def test_resume_equals_uninterrupted(
    source: TransferNet, tmp_path: Path, blocks: int, augment: object
) -> None:
    states: list[FinetuneState] = []
    whole_model = copy.deepcopy(source)
    whole = run(whole_model, blocks=blocks, augment=augment, on_epoch_end=states.append)
    assert [s.epoch for s in states] == [1, 2, 3, 4]
    # Round-trip the epoch-2 state through a file as a trial checkpoint would.
    path = tmp_path / "state.pt"
    torch.save(states[1].to_dict(), path)
    state = FinetuneState.from_dict(torch.load(path, weights_only=True))
    resumed_model = copy.deepcopy(source)
    seen: list[int] = []
    resumed = run(resumed_model, blocks=blocks, augment=augment, state=state,
                  on_eval=lambda e, m: seen.append(e))  # fmt: skip
    assert resumed == whole  # the convergence record too: the history is in the state
    assert set(CONVERGENCE) <= set(whole) and len(state.history) == 2
    assert seen == [3, 4]
    for (name, a), b in zip(
        whole_model.state_dict().items(), resumed_model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name
    # A state taken after the last epoch returns its metrics without training.
    assert run(copy.deepcopy(source), blocks=blocks, augment=augment, state=states[-1]) == whole


def test_cached_prefix_matches_recomputed_prefix(
    source: TransferNet, monkeypatch: pytest.MonkeyPatch
) -> None:
    cached_model, plain_model = copy.deepcopy(source), copy.deepcopy(source)
    cached = run(cached_model, blocks=3, augment=None)
    monkeypatch.setattr(finetune_module, "CACHE_BYTES", 0)
    plain = run(plain_model, blocks=3, augment=None)
    assert cached["test/acc"] == pytest.approx(plain["test/acc"], abs=2.0)
    assert cached["train/loss"] == pytest.approx(plain["train/loss"], rel=1e-3, abs=1e-5)
    for a, b in zip(cached_model.parameters(), plain_model.parameters(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_frozen_prefix_gets_no_autograd(source: TransferNet) -> None:
    model = copy.deepcopy(source)
    needs_grad: dict[int, list[bool]] = {2: [], 3: []}
    for i in needs_grad:
        model.blocks[i].register_forward_hook(
            lambda m, inp, out, i=i: needs_grad[i].append(out.requires_grad)
        )
    run(model, blocks=1, schedule=ScheduleConfig(epochs=1), eval_epochs=[1])
    assert needs_grad[2] and not any(needs_grad[2])  # frozen prefix: no graph is built
    assert any(needs_grad[3])  # the trainable block


def test_errors(source: TransferNet) -> None:
    with pytest.raises(ValueError, match=r"outside 1\.\.4"):
        run(copy.deepcopy(source), eval_epochs=[0, 5])
    with pytest.raises(ValueError, match="max 4"):
        run(copy.deepcopy(source), blocks=7)
    calls = {"n": 0}

    def poisoned(xb: Tensor) -> Tensor:
        # 96 images in batches of 32: training batches 7-9 make up epoch 3.
        calls["n"] += len(xb) == 32
        return prepare(xb) * (float("nan") if calls["n"] > 6 else 1.0)

    expected = "non-finite training loss at epoch 3 (lr 0.005): lower the learning rate"
    with pytest.raises(FloatingPointError, match=re.escape(expected)):
        run(copy.deepcopy(source), prepare=poisoned)


def test_adversarial_test_accuracy_is_logged_at_evaluation_epochs(source: TransferNet) -> None:
    def pgd(eps: float) -> PGDConfig:
        return PGDConfig("linf", eps=eps, steps=3, step_size=default_step_size(eps, 3))

    seen: list[tuple[int, dict[str, float]]] = []
    attacked = run(copy.deepcopy(source), eval_attacks=(pgd(0.01),),
                   on_eval=lambda e, m: seen.append((e, m)))  # fmt: skip
    clean = run(copy.deepcopy(source))
    assert [e for e, _ in seen] == [1, 3, 4]
    assert set(seen[-1][1]) == {*clean, "adv/acc"}
    assert all(set(m) == {*clean, "adv/acc"} - set(CONVERGENCE) for _, m in seen[:-1])
    assert all(m["adv/acc"] <= m["test/acc"] for _, m in seen)
    assert attacked["adv/acc"] < attacked["test/acc"]  # measured 84.4 % vs 96.9 %
    # The attack draws from its own generator: training is exactly the clean run's.
    assert {k: v for k, v in attacked.items() if k != "adv/acc"} == clean
    stronger = run(copy.deepcopy(source), eval_attacks=(pgd(0.03),))
    assert stronger["adv/acc"] < attacked["adv/acc"]  # measured 64.1 %
    zero = run(copy.deepcopy(source), eval_attacks=(pgd(0.0),))
    assert zero["adv/acc"] == zero["test/acc"]  # no perturbation: the clean accuracy


def test_a_cw_evaluation_attack_is_its_own_metric(source: TransferNet) -> None:
    """The CCKL paper evaluates PGD and CW (PGD on the margin max_{j≠y} z_j − z_y)."""
    steps = 3
    ce = PGDConfig("linf", eps=0.03, steps=steps, step_size=default_step_size(0.03, steps))
    cw = PGDConfig("linf", 0.03, steps, ce.step_size, objective="cw")
    both = run(copy.deepcopy(source), eval_attacks=(ce, cw))
    only_ce = run(copy.deepcopy(source), eval_attacks=(ce,))
    assert cw.metric == "adv/acc_cw" and ce.metric == "adv/acc"
    assert both["adv/acc"] == only_ce["adv/acc"]  # each attack seeded alike, independent
    assert both["adv/acc_cw"] < both["test/acc"]
    with pytest.raises(ValueError, match="unknown attack objective 'banana'"):
        PGDConfig("linf", 0.03, 3, 0.01, objective="banana")


def test_convergence_rule_flags_an_under_trained_head_and_passes_a_trained_one(
    source: TransferNet,
) -> None:
    """Head-only on 4 separable colours: 3 epochs at a tiny rate leave the loss falling (not
    converged); 60 epochs at a sound rate, decayed 100x as the presets do, plateau."""
    short = run(copy.deepcopy(source), blocks=0, augment=None, eval_epochs=[],
                optim=OptimConfig(lr=0.002, batch_size=32),
                schedule=ScheduleConfig(epochs=3, milestones=(1, 2)))  # fmt: skip
    long = run(copy.deepcopy(source), blocks=0, augment=None, eval_epochs=[],
               optim=OptimConfig(lr=0.1, batch_size=32, weight_decay=5e-3),
               schedule=ScheduleConfig(epochs=60, milestones=(30, 45)))  # fmt: skip
    assert short["train/converged"] == 0.0 and long["train/converged"] == 1.0
    assert short["train/loss_tail_share"] > 0.01  # still falling at the base rate
    assert abs(long["train/loss_tail_share"]) <= 0.01
    assert long["train/steps"] == 60 * 3 and short["train/steps"] == 3 * 3
