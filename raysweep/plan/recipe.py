"""What each job computes, as the JSON config its key hashes: sources, fine-tunes, their axes.

Options added after the first release enter a config only when set, so that the keys of
existing jobs stay what they were (``tests/golden/job_keys.csv`` holds every shipped spec's).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from raysweep.spec import FinetuneSpec, SourceSpec, SweepSpec


def source_config(spec: SweepSpec, source: SourceSpec) -> dict[str, Any]:
    """What determines a source model: architecture, data, training, and how it was made."""
    config: dict[str, Any] = {
        "architecture": source.architecture,
        "dataset": source.dataset,
        "training": asdict(source.training),
    }
    if source.checkpoint is not None:
        config["checkpoint"] = source.checkpoint
    else:
        assert spec.pretrain is not None
        config["pretrain"] = asdict(spec.pretrain)
        if not spec.pretrain.track_information:  # added later: absent unless used (stable keys)
            del config["pretrain"]["track_information"]
    return config


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
    rule = ft.rule_for(size)
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
        "optimizer": asdict(ft.optimizer),
        "augment": ft.augment,
        "update_frozen_bn_stats": ft.update_frozen_bn_stats,
        "head_init": ft.head_init,
        "normalization": ft.normalization,
    }
