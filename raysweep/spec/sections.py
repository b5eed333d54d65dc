"""Readers for each section of a sweep spec (see :mod:`raysweep.spec.load`)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from raysweep.data import AUGMENTATIONS, dataset_info, dataset_names
from raysweep.data.info import RENAMED_AUGMENTATIONS
from raysweep.models import HEAD_INITS, architecture_names
from raysweep.models.sources import is_reference, published_names
from raysweep.probes import ProbeSpec, validate_probe
from raysweep.schema import ALL_IMAGES
from raysweep.spec.model import (
    MAX_EPOCHS,
    MAX_SEEDS,
    NORMALIZATIONS,
    AttackSpec,
    EvalAttackSpec,
    FinetuneSpec,
    OptimizerSpec,
    PretrainSpec,
    ResourcesSpec,
    RuleSpec,
    SourceSpec,
    TrainingSpec,
)
from raysweep.spec.reader import Reader, shown
from raysweep.store import sha256_file
from raysweep.train.names import NORMS, TRAINING_KINDS

#: Utrera A.2: step size c·ε/steps with 1.5 < c < 4; the robustness library evaluates with 2.5.
DEFAULT_STEP_SCALE = 2.5
#: Why the bounds of raysweep.spec.model exist, as their errors say it.
SEEDS_WHY = "each seed is one more fine-tune of every grid cell; Utrera et al. use 20"
EPOCHS_WHY = "a bound against typos; the papers train at most 200 epochs"


def read_epochs(r: Reader, raw: Any, where: str) -> int:
    return r.integer(raw, where, minimum=1, maximum=MAX_EPOCHS, why=EPOCHS_WHY)


def read_seed_count(r: Reader, raw: Any, where: str) -> int:
    return r.integer(raw, where, minimum=1, maximum=MAX_SEEDS, why=SEEDS_WHY)


ATTACK_KEYS = ("norm", "eps", "steps", "step_size", "step_scale", "random_start")
#: What an evaluation attack maximises: cross-entropy, or the Carlini–Wagner margin.
ATTACK_LOSSES = ("ce", "cw")


def read_attack(r: Reader, raw: Any, where: str) -> AttackSpec:
    """A PGD attack (training or evaluation); any other key is refused with the allowed ones."""
    a = r.mapping(raw, where, required=ATTACK_KEYS[:3], optional=ATTACK_KEYS[3:])
    if "step_size" in a and "step_scale" in a:
        raise r.fail(where, "give step_size or step_scale (c in c·eps/steps), not both")
    norm = r.choice(a["norm"], f"{where}.norm", NORMS)
    eps = r.number(a["eps"], f"{where}.eps", minimum=0.0, strict_minimum=True)
    steps = r.integer(a["steps"], f"{where}.steps", minimum=1)
    if "step_size" in a:
        step = r.number(a["step_size"], f"{where}.step_size", minimum=0.0, strict_minimum=True)
    else:
        scale = r.number(
            a.get("step_scale", DEFAULT_STEP_SCALE),
            f"{where}.step_scale",
            minimum=0.0,
            strict_minimum=True,
        )
        step = scale * eps / steps
    start = r.boolean(a.get("random_start", True), f"{where}.random_start")
    return AttackSpec(norm=norm, eps=eps, steps=steps, step_size=step, random_start=start)


def read_eval_attacks(r: Reader, raw: Any, where: str) -> tuple[EvalAttackSpec, ...]:
    """``eval_attack:`` — one attack, or a list of attacks with distinct ``loss`` (``ce``,
    logged as ``adv/acc``; ``cw``, logged as ``adv/acc_cw``)."""
    items = raw if isinstance(raw, list) else [raw]
    attacks = []
    for i, item in enumerate(items):
        at = f"{where}[{i}]" if isinstance(raw, list) else where
        if not isinstance(item, dict):
            raise r.fail(at, "must be a mapping with norm, eps and steps (and loss: ce | cw)")
        loss = r.choice(item.get("loss", "ce"), f"{at}.loss", ATTACK_LOSSES)
        attack = read_attack(r, {k: v for k, v in item.items() if k != "loss"}, at)
        attacks.append(EvalAttackSpec(**asdict(attack), loss=loss))
    r.unique([a.loss for a in attacks], f"{where}[].loss")
    return tuple(attacks)


def read_training(r: Reader, raw: Any, where: str) -> TrainingSpec:
    if not isinstance(raw, dict) or "kind" not in raw:
        raise r.fail(where, f"must be a mapping with 'kind' (one of {', '.join(TRAINING_KINDS)})")
    kind = r.choice(raw["kind"], f"{where}.kind", TRAINING_KINDS)
    if kind == "natural":
        r.mapping(raw, where, required=("kind",))
        return TrainingSpec(kind="natural")
    if kind == "gaussian":
        g = r.mapping(raw, where, required=("kind", "sigma"), optional=("radius",))
        sigma = r.number(g["sigma"], f"{where}.sigma", minimum=0.0, strict_minimum=True)
        radius = (
            r.number(g["radius"], f"{where}.radius", minimum=0.0, strict_minimum=True)
            if "radius" in g
            else None
        )
        return TrainingSpec(kind="gaussian", sigma=sigma, radius=radius)
    attack = read_attack(r, {k: v for k, v in raw.items() if k not in ("kind", "beta")}, where)
    if kind == "trades":
        beta = r.number(raw.get("beta", 6.0), f"{where}.beta", minimum=0.0, strict_minimum=True)
        return TrainingSpec(kind="trades", attack=attack, beta=beta)
    if "beta" in raw:
        raise r.fail(f"{where}.beta", "only TRADES training takes beta")
    return TrainingSpec(kind="pgd", attack=attack)


def read_checkpoint(r: Reader, raw: Any, where: str) -> tuple[str, str | None]:
    """A published name (``robustness:…``, ``torchvision:…``) that exists, or an existing file
    with its sha256 (the source's key follows the file's content, not its path)."""
    ref = r.text(raw, where)
    if is_reference(ref):
        if ref not in published_names():
            known = ", ".join(published_names())
            raise r.fail(where, f"unknown published model {shown(ref)}; known: {known}")
        return ref, None
    path = Path(ref).expanduser()
    try:
        return ref, sha256_file(path)
    except OSError as error:
        raise r.fail(
            where,
            f"cannot read checkpoint file {shown(ref)} ({error.strerror}); give an existing "
            "file or a published name (`raysweep checkpoints` lists them)",
        ) from None


def read_sources(
    r: Reader, raw: Any, shared_pretrain: Any = None, shared_finetune: Any = None
) -> tuple[SourceSpec, ...]:
    """``sources:``; ``shared_pretrain`` / ``shared_finetune`` are the raw top-level sections a
    source's own ``pretrain:`` / ``finetune:`` change."""
    sources = []
    for i, item in enumerate(r.sequence(raw, "sources")):
        where = f"sources[{i}]"
        s = r.mapping(
            item,
            where,
            required=("name", "architecture", "dataset", "training"),
            optional=("checkpoint", "targets", "pretrain", "finetune"),
        )
        checkpoint, sha256 = (
            read_checkpoint(r, s["checkpoint"], f"{where}.checkpoint")
            if "checkpoint" in s
            else (None, None)
        )
        sources.append(
            SourceSpec(
                name=r.name(s["name"], f"{where}.name"),
                architecture=r.choice(
                    s["architecture"], f"{where}.architecture", architecture_names()
                ),
                dataset=r.choice(s["dataset"], f"{where}.dataset", dataset_names()),
                training=read_training(r, s["training"], f"{where}.training"),
                checkpoint=checkpoint,
                checkpoint_sha256=sha256,
                pretrain=read_source_pretrain(
                    r, s["pretrain"], shared_pretrain, f"{where}.pretrain"
                )
                if "pretrain" in s
                else None,
                finetune=read_source_finetune(
                    r, s["finetune"], shared_finetune, f"{where}.finetune"
                )
                if "finetune" in s
                else None,
                targets=read_targets(r, s["targets"], f"{where}.targets")
                if "targets" in s
                else None,
            )
        )
    r.unique([s.name for s in sources], "sources[].name")
    return tuple(sources)


def read_optimizer(r: Reader, raw: Any, where: str) -> OptimizerSpec:
    o = r.mapping(
        raw,
        where,
        required=("lr",),
        optional=("name", "momentum", "weight_decay", "batch_size", "nesterov"),
    )
    r.choice(o.get("name", "sgd"), f"{where}.name", ("sgd",))
    return OptimizerSpec(
        lr=r.number(o["lr"], f"{where}.lr", minimum=0.0, strict_minimum=True),
        momentum=r.number(o.get("momentum", 0.9), f"{where}.momentum", minimum=0.0, maximum=1.0),
        weight_decay=r.number(o.get("weight_decay", 5e-4), f"{where}.weight_decay", minimum=0.0),
        batch_size=r.integer(o.get("batch_size", 128), f"{where}.batch_size", minimum=1),
        nesterov=r.boolean(o.get("nesterov", False), f"{where}.nesterov"),
    )


def read_milestones(r: Reader, raw: Any, where: str, epochs: int) -> tuple[int, ...]:
    values = [
        r.integer(v, f"{where}[{i}]", minimum=1)
        for i, v in enumerate(r.sequence(raw, where, nonempty=False))
    ]
    if values != sorted(set(values)):
        raise r.fail(where, f"must be strictly increasing epochs, got {shown(values)}")
    if values and values[-1] >= epochs:
        raise r.fail(
            where, f"milestone {shown(values[-1])} is not before the last epoch ({epochs})"
        )
    return tuple(values)


def read_augment(r: Reader, value: Any, where: str) -> str:
    """An augmentation recipe's name; a renamed one is refused with its new name."""
    if value in RENAMED_AUGMENTATIONS:
        raise r.fail(
            where,
            f"'{value}' is now '{RENAMED_AUGMENTATIONS[value]}' (a ±15° rotation); Utrera et "
            "al.'s own recipe is 'crop_flip_jitter_rotate2'",
        )
    return r.choice(value, where, AUGMENTATIONS)


def default_augment(value: Any) -> Any:
    """The recipe of every target a per-target ``augment:`` mapping does not name."""
    return value.get("default", "none") if isinstance(value, dict) else value


def read_target_augments(r: Reader, value: Any, where: str) -> tuple[tuple[str, str], ...]:
    """``augment: {default: <recipe>, <target>: <recipe>, …}``: recipes per target dataset
    (Utrera et al.'s code augments RGB targets only); a plain name sets no exceptions."""
    if not isinstance(value, dict):
        return ()
    names = dataset_names()
    pairs = []
    for target, recipe in value.items():
        if target == "default":
            continue
        r.choice(target, f"{where}.{target}", ["default", *names])
        pairs.append((str(target), read_augment(r, recipe, f"{where}.{target}")))
    return tuple(pairs)


def read_pretrain(r: Reader, raw: Any, where: str = "pretrain") -> PretrainSpec:
    p = r.mapping(
        raw,
        where,
        required=("epochs", "optimizer"),
        optional=(
            "lr_milestones",
            "lr_decay",
            "augment",
            "eval_attack",
            "seed",
            "track_information",
        ),
    )
    epochs = read_epochs(r, p["epochs"], f"{where}.epochs")
    return PretrainSpec(
        epochs=epochs,
        optimizer=read_optimizer(r, p["optimizer"], f"{where}.optimizer"),
        lr_milestones=read_milestones(
            r, p.get("lr_milestones", []), f"{where}.lr_milestones", epochs
        ),
        lr_decay=r.number(p.get("lr_decay", 0.1), f"{where}.lr_decay", minimum=0.0, maximum=1.0),
        augment=read_augment(r, p.get("augment", "flip_crop"), f"{where}.augment"),
        eval_attacks=read_eval_attacks(r, p["eval_attack"], f"{where}.eval_attack")
        if "eval_attack" in p
        else (),
        seed=r.integer(p.get("seed", 0), f"{where}.seed", minimum=0),
        track_information=r.integer(
            p.get("track_information", 0), f"{where}.track_information", minimum=0
        ),
    )


def merged(base: Any, override: Any) -> Any:
    """``override`` deep-merged over ``base``: mappings key by key, anything else replaced."""
    if not (isinstance(base, dict) and isinstance(override, dict)):
        return override
    return {**base, **{k: merged(base.get(k), v) for k, v in override.items()}}


def read_source_pretrain(r: Reader, raw: Any, shared: Any, where: str) -> PretrainSpec:
    """A source's own ``pretrain:``, given as changes to the sweep's (e.g. the CCKL paper's
    lr 0.01 for VGG13 beside 0.1 for the ResNets): deep-merged over it, then validated."""
    if not isinstance(raw, dict):
        raise r.fail(where, "must be a mapping of changes to the sweep's pretrain section")
    return read_pretrain(r, merged(shared or {}, raw), where)


def read_targets(r: Reader, raw: Any, where: str = "targets") -> tuple[str, ...]:
    names = dataset_names()
    targets = [r.choice(t, f"{where}[{i}]", names) for i, t in enumerate(r.sequence(raw, where))]
    return tuple(r.unique(targets, where))


def read_subset_sizes(r: Reader, raw: Any, targets: tuple[str, ...]) -> tuple[int | None, ...]:
    sizes: list[int | None] = []
    for i, value in enumerate(r.sequence(raw, "subset_sizes")):
        size = r.size_or_all(value, f"subset_sizes[{i}]")
        if size is None:
            sizes.append(None)
            continue
        for target in targets:
            info = dataset_info(target)
            if size > info.train_size:
                raise r.fail(
                    f"subset_sizes[{i}]",
                    f"{shown(size)} exceeds the {info.train_size} "
                    f"training images of '{target}'; use a smaller size or 'all'",
                )
            if size < info.num_classes:
                raise r.fail(
                    f"subset_sizes[{i}]",
                    f"{size} is smaller than the "
                    f"{info.num_classes} classes of '{target}' (every label needs an image)",
                )
        sizes.append(size)
    return tuple(r.unique(sizes, "subset_sizes"))


def read_seeds(r: Reader, raw: Any, finetune: FinetuneSpec) -> tuple[int, ...] | int | None:
    per_rule = [rule.seeds is not None for rule in finetune.rules]
    if raw is None:
        if not all(per_rule):
            raise r.fail(
                "seeds", "missing: give seeds (a count or a list) here or in every finetune rule"
            )
        return None
    if any(per_rule):
        raise r.fail("seeds", "given both here and in finetune rules; give them in one place")
    if isinstance(raw, int) and not isinstance(raw, bool):
        return read_seed_count(r, raw, "seeds")
    listed = r.sequence(raw, "seeds")
    if len(listed) > MAX_SEEDS:
        raise r.fail("seeds", f"lists {len(listed):,} seeds; at most {MAX_SEEDS:,} ({SEEDS_WHY})")
    seeds = [r.integer(s, f"seeds[{i}]", minimum=0) for i, s in enumerate(listed)]
    return tuple(r.unique(seeds, "seeds"))


def read_blocks(r: Reader, raw: Any, where: str = "blocks") -> tuple[int | str, ...]:
    blocks = [r.blocks(value, f"{where}[{i}]") for i, value in enumerate(r.sequence(raw, where))]
    return tuple(r.unique(blocks, where))


def read_grid_blocks(
    r: Reader, raw: Any
) -> tuple[tuple[int | str, ...], tuple[tuple[str, tuple[int | str, ...]], ...]]:
    """``blocks:`` — a list for every target, or ``{default: [...], <target>: [...], …}``
    (Terzi et al. Table 5 fine-tunes CINIC-10 in mode 0 only)."""
    if not isinstance(raw, dict):
        return read_blocks(r, raw), ()
    if "default" not in raw:
        raise r.fail("blocks", "a per-target mapping needs a 'default' list for the other targets")
    names = dataset_names()
    per_target = []
    for target, value in raw.items():
        if target != "default":
            r.choice(target, f"blocks.{target}", names)
            per_target.append((str(target), read_blocks(r, value, f"blocks.{target}")))
    return read_blocks(r, raw["default"], "blocks.default"), tuple(per_target)


def read_rules(r: Reader, raw: Any, at: str = "finetune.rules") -> tuple[RuleSpec, ...]:
    rules: list[RuleSpec] = []
    for i, item in enumerate(r.sequence(raw, at)):
        where = f"{at}[{i}]"
        d = r.mapping(
            item,
            where,
            required=("epochs",),
            optional=("up_to", "eval_every", "lr_milestones", "seeds"),
        )
        epochs = read_epochs(r, d["epochs"], f"{where}.epochs")
        rules.append(
            RuleSpec(
                up_to=r.size_or_all(d.get("up_to", ALL_IMAGES), f"{where}.up_to"),
                epochs=epochs,
                eval_every=r.integer(d.get("eval_every", epochs), f"{where}.eval_every", minimum=1),
                lr_milestones=read_milestones(
                    r, d.get("lr_milestones", []), f"{where}.lr_milestones", epochs
                ),
                seeds=read_seed_count(r, d["seeds"], f"{where}.seeds") if "seeds" in d else None,
            )
        )
    bounds = [rule.up_to for rule in rules]
    if bounds[-1] is not None:
        raise r.fail(at, "the last rule must cover every size: give it up_to: all")
    finite = [b for b in bounds[:-1] if b is not None]
    if len(finite) != len(bounds) - 1 or finite != sorted(set(finite)):
        raise r.fail(at, "up_to must increase from rule to rule, 'all' only last")
    return tuple(rules)


def read_finetune(r: Reader, raw: Any, where: str = "finetune") -> FinetuneSpec:
    f = r.mapping(
        raw,
        where,
        required=("optimizer", "rules"),
        optional=(
            "lr_decay",
            "augment",
            "update_frozen_bn_stats",
            "head_init",
            "normalization",
            "eval_attack",
        ),
    )
    return FinetuneSpec(
        optimizer=read_optimizer(r, f["optimizer"], f"{where}.optimizer"),
        lr_decay=r.number(f.get("lr_decay", 0.1), f"{where}.lr_decay", minimum=0.0, maximum=1.0),
        augment=read_augment(r, default_augment(f.get("augment", "none")), f"{where}.augment"),
        augment_targets=read_target_augments(r, f.get("augment"), f"{where}.augment"),
        update_frozen_bn_stats=r.boolean(
            f.get("update_frozen_bn_stats", False), f"{where}.update_frozen_bn_stats"
        ),
        head_init=r.choice(f.get("head_init", "normal"), f"{where}.head_init", HEAD_INITS),
        normalization=r.choice(
            f.get("normalization", "source"), f"{where}.normalization", NORMALIZATIONS
        ),
        rules=read_rules(r, f["rules"], f"{where}.rules"),
        eval_attacks=read_eval_attacks(r, f["eval_attack"], f"{where}.eval_attack")
        if "eval_attack" in f
        else (),
    )


def read_source_finetune(r: Reader, raw: Any, shared: Any, where: str) -> FinetuneSpec:
    """A source's own ``finetune:``, as changes to the sweep's (Terzi et al. fine-tune from
    ImageNet for 300 epochs at batch 256, from CIFAR for 120 at 128): deep-merged over it.
    Seeds stay the sweep's: its rules may not set them."""
    if not isinstance(raw, dict):
        raise r.fail(where, "must be a mapping of changes to the sweep's finetune section")
    ft = read_finetune(r, merged(shared or {}, raw), where)
    if any(rule.seeds is not None for rule in ft.rules):
        raise r.fail(f"{where}.rules", "seeds are the sweep's: give them as top-level seeds:")
    return ft


def read_resources(r: Reader, raw: Any) -> ResourcesSpec:
    d = r.mapping(raw, "resources", optional=("cpu", "gpu", "bf16", "channels_last"))
    cpu = r.number(d.get("cpu", 1), "resources.cpu", minimum=0.0, strict_minimum=True)
    gpu = r.number(d.get("gpu", 0), "resources.gpu", minimum=0.0)
    if gpu > 1 and gpu != int(gpu):
        raise r.fail("resources.gpu", f"fractions are for sharing one GPU (<= 1), got {gpu:g}")
    bf16 = r.boolean(d.get("bf16", False), "resources.bf16")
    channels_last = r.boolean(d.get("channels_last", False), "resources.channels_last")
    return ResourcesSpec(cpu=cpu, gpu=gpu, bf16=bf16, channels_last=channels_last)


def read_probes(r: Reader, raw: Any) -> tuple[ProbeSpec, ...]:
    """``probes:`` — a list of ``{name: <probe>, <param>: <value>, …}`` (see raysweep.probes)."""
    items = r.sequence(raw, "probes", nonempty=False)
    probes = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or "name" not in item:
            raise r.fail(f"probes[{i}]", "must be a mapping with 'name' and the probe's params")
        params = {k: v for k, v in item.items() if k != "name"}
        try:
            probes.append(validate_probe(str(item["name"]), params))
        except ValueError as error:  # its text may quote a whole value: r.fail clips it
            raise r.fail(f"probes[{i}]", str(error)) from None
    r.unique([p.name for p in probes], "probes[].name")
    return tuple(probes)
