"""Readers for each section of a sweep spec (see :mod:`raysweep.spec.load`)."""

from __future__ import annotations

from typing import Any

from raysweep.data import AUGMENTATIONS, dataset_info, dataset_names
from raysweep.models import HEAD_INITS, architecture_names
from raysweep.models.sources import is_reference, published_names
from raysweep.probes import ProbeSpec, validate_probe
from raysweep.schema import ALL_IMAGES
from raysweep.spec.model import (
    NORMALIZATIONS,
    AttackSpec,
    FinetuneSpec,
    OptimizerSpec,
    PretrainSpec,
    ResourcesSpec,
    RuleSpec,
    SourceSpec,
    TrainingSpec,
)
from raysweep.spec.reader import Reader
from raysweep.train.names import NORMS, TRAINING_KINDS

#: Utrera A.2: step size c·ε/steps with 1.5 < c < 4; the robustness library evaluates with 2.5.
DEFAULT_STEP_SCALE = 2.5


def read_attack(r: Reader, raw: Any, where: str) -> AttackSpec:
    a = r.mapping(
        raw,
        where,
        required=("norm", "eps", "steps"),
        optional=("step_size", "step_scale", "random_start", "kind"),
    )
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


def read_training(r: Reader, raw: Any, where: str) -> TrainingSpec:
    if not isinstance(raw, dict) or "kind" not in raw:
        raise r.fail(where, f"must be a mapping with 'kind' (one of {', '.join(TRAINING_KINDS)})")
    kind = r.choice(raw["kind"], f"{where}.kind", TRAINING_KINDS)
    if kind == "natural":
        r.mapping(raw, where, required=("kind",))
        return TrainingSpec(kind="natural")
    if kind == "gaussian":
        g = r.mapping(raw, where, required=("kind", "sigma"))
        sigma = r.number(g["sigma"], f"{where}.sigma", minimum=0.0, strict_minimum=True)
        return TrainingSpec(kind="gaussian", sigma=sigma)
    attack = read_attack(r, {k: v for k, v in raw.items() if k != "beta"}, where)
    if kind == "trades":
        beta = r.number(raw.get("beta", 6.0), f"{where}.beta", minimum=0.0, strict_minimum=True)
        return TrainingSpec(kind="trades", attack=attack, beta=beta)
    if "beta" in raw:
        raise r.fail(f"{where}.beta", "only TRADES training takes beta")
    return TrainingSpec(kind="pgd", attack=attack)


def read_checkpoint(r: Reader, raw: Any, where: str) -> str:
    """A published name (``robustness:…``, ``torchvision:…``) that exists, or a file path."""
    ref = r.text(raw, where)
    if is_reference(ref) and ref not in published_names():
        raise r.fail(
            where, f"unknown published model {ref!r}; known: {', '.join(published_names())}"
        )
    return ref


def read_sources(r: Reader, raw: Any) -> tuple[SourceSpec, ...]:
    sources = []
    for i, item in enumerate(r.sequence(raw, "sources")):
        where = f"sources[{i}]"
        s = r.mapping(
            item,
            where,
            required=("name", "architecture", "dataset", "training"),
            optional=("checkpoint", "targets"),
        )
        sources.append(
            SourceSpec(
                name=r.text(s["name"], f"{where}.name"),
                architecture=r.choice(
                    s["architecture"], f"{where}.architecture", architecture_names()
                ),
                dataset=r.choice(s["dataset"], f"{where}.dataset", dataset_names()),
                training=read_training(r, s["training"], f"{where}.training"),
                checkpoint=read_checkpoint(r, s["checkpoint"], f"{where}.checkpoint")
                if "checkpoint" in s
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
        raise r.fail(where, f"must be strictly increasing epochs, got {values}")
    if values and values[-1] >= epochs:
        raise r.fail(where, f"milestone {values[-1]} is not before the last epoch ({epochs})")
    return tuple(values)


def read_pretrain(r: Reader, raw: Any) -> PretrainSpec:
    p = r.mapping(
        raw,
        "pretrain",
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
    epochs = r.integer(p["epochs"], "pretrain.epochs", minimum=1)
    return PretrainSpec(
        epochs=epochs,
        optimizer=read_optimizer(r, p["optimizer"], "pretrain.optimizer"),
        lr_milestones=read_milestones(
            r, p.get("lr_milestones", []), "pretrain.lr_milestones", epochs
        ),
        lr_decay=r.number(p.get("lr_decay", 0.1), "pretrain.lr_decay", minimum=0.0, maximum=1.0),
        augment=r.choice(p.get("augment", "flip_crop"), "pretrain.augment", AUGMENTATIONS),
        eval_attack=read_attack(r, p["eval_attack"], "pretrain.eval_attack")
        if "eval_attack" in p
        else None,
        seed=r.integer(p.get("seed", 0), "pretrain.seed", minimum=0),
        track_information=r.integer(
            p.get("track_information", 0), "pretrain.track_information", minimum=0
        ),
    )


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
                    f"{size} exceeds the {info.train_size} "
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
        return r.integer(raw, "seeds", minimum=1)
    seeds = [r.integer(s, f"seeds[{i}]", minimum=0) for i, s in enumerate(r.sequence(raw, "seeds"))]
    return tuple(r.unique(seeds, "seeds"))


def read_blocks(r: Reader, raw: Any) -> tuple[int | str, ...]:
    blocks = [r.blocks(value, f"blocks[{i}]") for i, value in enumerate(r.sequence(raw, "blocks"))]
    return tuple(r.unique(blocks, "blocks"))


def read_rules(r: Reader, raw: Any) -> tuple[RuleSpec, ...]:
    rules: list[RuleSpec] = []
    for i, item in enumerate(r.sequence(raw, "finetune.rules")):
        where = f"finetune.rules[{i}]"
        d = r.mapping(
            item,
            where,
            required=("epochs",),
            optional=("up_to", "eval_every", "lr_milestones", "seeds"),
        )
        epochs = r.integer(d["epochs"], f"{where}.epochs", minimum=1)
        rules.append(
            RuleSpec(
                up_to=r.size_or_all(d.get("up_to", ALL_IMAGES), f"{where}.up_to"),
                epochs=epochs,
                eval_every=r.integer(d.get("eval_every", epochs), f"{where}.eval_every", minimum=1),
                lr_milestones=read_milestones(
                    r, d.get("lr_milestones", []), f"{where}.lr_milestones", epochs
                ),
                seeds=r.integer(d["seeds"], f"{where}.seeds", minimum=1) if "seeds" in d else None,
            )
        )
    bounds = [rule.up_to for rule in rules]
    if bounds[-1] is not None:
        raise r.fail("finetune.rules", "the last rule must cover every size: give it up_to: all")
    finite = [b for b in bounds[:-1] if b is not None]
    if len(finite) != len(bounds) - 1 or finite != sorted(set(finite)):
        raise r.fail("finetune.rules", "up_to must increase from rule to rule, 'all' only last")
    return tuple(rules)


def read_finetune(r: Reader, raw: Any) -> FinetuneSpec:
    f = r.mapping(
        raw,
        "finetune",
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
        optimizer=read_optimizer(r, f["optimizer"], "finetune.optimizer"),
        lr_decay=r.number(f.get("lr_decay", 0.1), "finetune.lr_decay", minimum=0.0, maximum=1.0),
        augment=r.choice(f.get("augment", "none"), "finetune.augment", AUGMENTATIONS),
        update_frozen_bn_stats=r.boolean(
            f.get("update_frozen_bn_stats", False), "finetune.update_frozen_bn_stats"
        ),
        head_init=r.choice(f.get("head_init", "normal"), "finetune.head_init", HEAD_INITS),
        normalization=r.choice(
            f.get("normalization", "source"), "finetune.normalization", NORMALIZATIONS
        ),
        rules=read_rules(r, f["rules"]),
        eval_attack=read_attack(r, f["eval_attack"], "finetune.eval_attack")
        if "eval_attack" in f
        else None,
    )


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
        except ValueError as error:
            raise r.fail(f"probes[{i}]", str(error)) from None
    r.unique([p.name for p in probes], "probes[].name")
    return tuple(probes)
