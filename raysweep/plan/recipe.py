"""What each job computes, as the JSON config its key hashes: sources, fine-tunes, their axes.

Options added after the first release enter a config only when set, so that the keys of
existing jobs stay what they were (``tests/golden/job_keys.csv`` holds every shipped spec's).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from raysweep.spec import EvalAttackSpec, FinetuneSpec, SourceSpec, SweepSpec


def source_config(spec: SweepSpec, source: SourceSpec) -> dict[str, Any]:
    """What determines a source model: architecture, data, training, and how it was made."""
    config: dict[str, Any] = {
        "architecture": source.architecture,
        "dataset": source.dataset,
        "training": asdict(source.training),
    }
    if source.training.radius is None:  # added later: absent unless used (stable keys)
        del config["training"]["radius"]
    if source.checkpoint is not None:
        config["checkpoint"] = source.checkpoint
        if source.checkpoint_sha256 is not None:
            config["checkpoint_sha256"] = source.checkpoint_sha256
    else:
        recipe = source.pretrain or spec.pretrain
        assert recipe is not None
        config["pretrain"] = asdict(recipe)
        if not recipe.track_information:  # added later: absent unless used (stable keys)
            del config["pretrain"]["track_information"]
        del config["pretrain"]["eval_attacks"]
        config["pretrain"]["eval_attack"] = attacks_config(recipe.eval_attacks)
    return config


def attacks_config(attacks: tuple[EvalAttackSpec, ...]) -> Any:
    """The ``eval_attack`` entry of a job config as it has always been keyed: None, one
    attack's dict, or (several attacks) a list; ``loss`` only when it is not cross-entropy."""
    found = [
        {k: v for k, v in asdict(a).items() if not (k == "loss" and v == "ce")} for a in attacks
    ]
    if not found:
        return None
    return found[0] if len(found) == 1 else found


def source_axes(source: SourceSpec) -> dict[str, str]:
    return {
        "source": source.name,
        "source_training": source.training.kind,
        "source_norm": source.training.norm,
        "source_eps": f"{source.training.eps:g}",
        "source_architecture": source.architecture,
        "source_dataset": source.dataset,
    }


def eval_epochs(epochs: int, every: int) -> list[int]:
    """Utrera A.4: with frequency 20 over 100 epochs, test after epochs 1, 21, 41, 61, 81, 100."""
    return sorted({*range(1, epochs + 1, every), epochs})


def finetune_config(
    ft: FinetuneSpec,
    source_key: str,
    target: str,
    size: int | None,
    seed: int,
    blocks: int | str,
    eval_every: int,
) -> dict[str, Any]:
    """What a fine-tune job computes: source, target subset, seed, blocks and the recipe."""
    rule = ft.rule_for(size, blocks)
    optimizer = asdict(ft.optimizer)
    if rule.lr is not None:  # a rule's own rate (head-only cells); absent otherwise: stable keys
        optimizer["lr"] = rule.lr
    return {
        "source_key": source_key,
        "target": target,
        "subset_size": size,
        "seed": seed,
        "blocks": blocks,
        "epochs": rule.epochs,
        "eval_epochs": eval_epochs(rule.epochs, eval_every),
        "lr_milestones": list(rule.lr_milestones),
        "lr_decay": ft.lr_decay,
        "optimizer": optimizer,
        "augment": ft.augment_for(target),
        "update_frozen_bn_stats": ft.update_frozen_bn_stats,
        "head_init": ft.head_init,
        "normalization": ft.normalization,
    }


def source_key_config(config: dict[str, Any]) -> dict[str, Any]:
    """What a source's key hashes: its config, with a checkpoint file named by its content
    (``sha256:<hex>``) rather than its path, so moving the file keeps the key and retraining
    it in place changes it."""
    if "checkpoint_sha256" not in config:
        return config
    keyed = {k: v for k, v in config.items() if k != "checkpoint_sha256"}
    return {**keyed, "checkpoint": f"sha256:{config['checkpoint_sha256']}"}
