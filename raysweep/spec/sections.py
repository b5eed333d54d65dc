"""Readers for each section of a sweep spec (see :mod:`raysweep.spec.load`).

Each reads one section with the key tables of :mod:`~raysweep.spec.keys` and the registries'
names, and records every problem it finds on the :class:`~raysweep.spec.reader.Reader`: the
independent parts (each source, each probe, each rule, each field of a section) are each read
even when another has a problem.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

from raysweep.data import AUGMENTATIONS, dataset_info, dataset_names
from raysweep.data.info import RENAMED_AUGMENTATIONS
from raysweep.models import HEAD_INITS, architecture_names
from raysweep.models.sources import is_reference, published_names
from raysweep.probes import PROBES, ProbeSpec, probe_names, validate_probe
from raysweep.schema import ALL_IMAGES
from raysweep.spec import keys
from raysweep.spec.compose import merged
from raysweep.spec.model import (
    GPU_AUTO,
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
from raysweep.spec.reader import Reader, SpecError, did_you_mean, shown
from raysweep.store import sha256_file
from raysweep.train.names import NORMS, TRAINING_KINDS

T = TypeVar("T")

#: Utrera A.2: step size c·ε/steps with 1.5 < c < 4; the robustness library evaluates with 2.5.
DEFAULT_STEP_SCALE = 2.5
#: Why the bounds of raysweep.spec.model exist, as their errors say it.
SEEDS_WHY = "each seed is one more fine-tune of every grid cell; Utrera et al. use 20"
EPOCHS_WHY = "a bound against typos; the papers train at most 200 epochs"


def read_epochs(r: Reader, raw: Any, where: str) -> int:
    return r.integer(raw, where, minimum=1, maximum=MAX_EPOCHS, why=EPOCHS_WHY)


def read_seed_count(r: Reader, raw: Any, where: str) -> int:
    return r.integer(raw, where, minimum=1, maximum=MAX_SEEDS, why=SEEDS_WHY)


#: What an evaluation attack maximises: cross-entropy, or the Carlini–Wagner margin.
ATTACK_LOSSES = ("ce", "cw")


def read_attack(r: Reader, a: Mapping[str, Any], where: str) -> AttackSpec:
    """A PGD attack (training or evaluation) from a mapping whose keys were checked."""
    if "step_size" in a and "step_scale" in a:
        raise r.fail(where, "give step_size or step_scale (c in c·eps/steps), not both")
    parts = r.fields(
        norm=lambda: r.choice(a["norm"], f"{where}.norm", NORMS),
        eps=lambda: r.number(a["eps"], f"{where}.eps", minimum=0.0, strict_minimum=True),
        steps=lambda: r.integer(a["steps"], f"{where}.steps", minimum=1),
        random_start=lambda: r.boolean(a.get("random_start", True), f"{where}.random_start"),
        step=lambda: r.number(
            a.get("step_size", a.get("step_scale", DEFAULT_STEP_SCALE)),
            f"{where}.{'step_size' if 'step_size' in a else 'step_scale'}",
            minimum=0.0,
            strict_minimum=True,
        ),
    )
    step = parts.pop("step")
    if "step_size" not in a:
        step = step * parts["eps"] / parts["steps"]
    return AttackSpec(**parts, step_size=step)


def read_eval_attack(r: Reader, item: Any, at: str) -> EvalAttackSpec:
    if not isinstance(item, dict):
        raise r.fail(at, "must be a mapping with norm, eps and steps (and loss: ce | cw)")
    a = r.keys(item, at, keys.EVAL_ATTACK)
    loss = r.choice(a.get("loss", "ce"), f"{at}.loss", ATTACK_LOSSES)
    return EvalAttackSpec(**asdict(read_attack(r, a, at)), loss=loss)


def read_eval_attacks(r: Reader, raw: Any, where: str) -> tuple[EvalAttackSpec, ...]:
    """``eval_attack:`` — one attack, or a list of attacks with distinct ``loss`` (``ce``,
    logged as ``adv/acc``; ``cw``, logged as ``adv/acc_cw``)."""
    if not isinstance(raw, list):
        return (read_eval_attack(r, raw, where),)
    attacks = each(
        r, [lambda i=i, v=v: read_eval_attack(r, v, f"{where}[{i}]") for i, v in enumerate(raw)]
    )
    r.unique([a.loss for a in attacks], f"{where}[].loss")
    return tuple(attacks)


def each(r: Reader, reads: list[Callable[[], T]]) -> list[T]:
    """Every item read, all of their problems recorded; incomplete if any failed."""
    return list(r.fields(**{str(i): read for i, read in enumerate(reads)}).values())


def read_training(r: Reader, raw: Any, where: str) -> TrainingSpec:
    if not isinstance(raw, dict) or "kind" not in raw:
        raise r.fail(where, f"must be a mapping with 'kind' (one of {', '.join(TRAINING_KINDS)})")
    kind = r.choice(raw["kind"], f"{where}.kind", TRAINING_KINDS)
    if "beta" in raw and kind != "trades":
        raise r.fail(f"{where}.beta", "only TRADES training takes beta")
    t = r.keys(raw, where, keys.TRAINING[kind])
    if kind == "natural":
        return TrainingSpec(kind="natural")
    if kind == "gaussian":
        g = r.fields(
            sigma=lambda: r.number(t["sigma"], f"{where}.sigma", minimum=0.0, strict_minimum=True),
            radius=lambda: (
                r.number(t["radius"], f"{where}.radius", minimum=0.0, strict_minimum=True)
                if "radius" in t
                else None
            ),
        )
        return TrainingSpec(kind="gaussian", **g)
    attack = read_attack(r, t, where)
    if kind == "trades":
        beta = r.number(t.get("beta", 6.0), f"{where}.beta", minimum=0.0, strict_minimum=True)
        return TrainingSpec(kind="trades", attack=attack, beta=beta)
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
    source's own ``pretrain:`` / ``finetune:`` change. Each source is read on its own."""
    items = r.sequence(raw, "sources")
    sources = each(
        r,
        [
            lambda i=i, item=item: read_source(
                r, item, f"sources[{i}]", shared_pretrain, shared_finetune
            )
            for i, item in enumerate(items)
        ],
    )
    r.unique([s.name for s in sources], "sources[].name")
    return tuple(sources)


def read_source(
    r: Reader, item: Any, where: str, shared_pretrain: Any, shared_finetune: Any
) -> SourceSpec:
    s = r.keys(item, where, keys.SOURCE)
    checkpoint = s.get("checkpoint")
    fields = r.fields(
        name=lambda: r.name(s["name"], f"{where}.name"),
        architecture=lambda: r.choice(
            s["architecture"], f"{where}.architecture", architecture_names()
        ),
        dataset=lambda: r.choice(s["dataset"], f"{where}.dataset", dataset_names()),
        training=lambda: read_training(r, s["training"], f"{where}.training"),
        checkpoint=lambda: (
            (None, None)
            if checkpoint is None
            else read_checkpoint(r, checkpoint, f"{where}.checkpoint")
        ),
        pretrain=lambda: inherited(
            r, read_pretrain, s.get("pretrain"), shared_pretrain, f"{where}.pretrain"
        ),
        finetune=lambda: inherited(
            r, read_source_finetune, s.get("finetune"), shared_finetune, f"{where}.finetune"
        ),
        targets=lambda: (
            read_targets(r, s["targets"], f"{where}.targets") if "targets" in s else None
        ),
    )
    fields["checkpoint"], fields["checkpoint_sha256"] = fields["checkpoint"]
    return SourceSpec(**fields)


def inherited(
    r: Reader, read: Callable[[Reader, Any, str], T], raw: Any, shared: Any, where: str
) -> T | None:
    """A source's own ``pretrain:`` / ``finetune:``, given as changes to the sweep's section
    (e.g. the CCKL paper's lr 0.01 for VGG13 beside 0.1 for the ResNets): deep-merged over it,
    then read. Problems of the sweep's section itself are reported there, not again here."""
    if raw is None:
        return None
    section = where.rsplit(".", 1)[1]
    if not isinstance(raw, dict):
        raise r.fail(where, f"must be a mapping of changes to the sweep's {section} section")
    before = len(r.problems)
    try:
        return read(r, merged(shared or {}, raw), where)
    except SpecError as error:
        r.record(error)
        raise r.incomplete() from None
    finally:
        r.drop_repeats(before, where, section)


def read_optimizer(r: Reader, raw: Any, where: str) -> OptimizerSpec:
    o = r.keys(raw, where, keys.OPTIMIZER)
    parts = r.fields(
        name=lambda: r.choice(o.get("name", "sgd"), f"{where}.name", keys.OPTIMIZER_NAMES),
        lr=lambda: r.number(o["lr"], f"{where}.lr", minimum=0.0, strict_minimum=True),
        momentum=lambda: r.number(
            o.get("momentum", 0.9), f"{where}.momentum", minimum=0.0, maximum=1.0
        ),
        weight_decay=lambda: r.number(
            o.get("weight_decay", 5e-4), f"{where}.weight_decay", minimum=0.0
        ),
        batch_size=lambda: r.integer(o.get("batch_size", 128), f"{where}.batch_size", minimum=1),
        nesterov=lambda: r.boolean(o.get("nesterov", False), f"{where}.nesterov"),
    )
    parts.pop("name")  # SGD only, checked
    return OptimizerSpec(**parts)


def read_milestones(r: Reader, raw: Any, where: str, epochs: int | None) -> tuple[int, ...]:
    """Increasing epochs before the last (``epochs``; None: not known, not checked)."""
    values = [
        r.integer(v, f"{where}[{i}]", minimum=1)
        for i, v in enumerate(r.sequence(raw, where, nonempty=False))
    ]
    if values != sorted(set(values)):
        raise r.fail(where, f"must be strictly increasing epochs, got {shown(values)}")
    if values and epochs is not None and values[-1] >= epochs:
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
    return value.get(keys.DEFAULT, "none") if isinstance(value, dict) else value


def read_target_augments(r: Reader, value: Any, where: str) -> tuple[tuple[str, str], ...]:
    """``augment: {default: <recipe>, <target>: <recipe>, …}``: recipes per target dataset
    (Utrera et al.'s code augments RGB targets only); a plain name sets no exceptions."""
    if not isinstance(value, dict):
        return ()
    names = dataset_names()
    pairs = []
    for target, recipe in value.items():
        if target == keys.DEFAULT:
            continue
        r.choice(target, f"{where}.{target}", [keys.DEFAULT, *names])
        pairs.append((str(target), read_augment(r, recipe, f"{where}.{target}")))
    return tuple(pairs)


def read_pretrain(r: Reader, raw: Any, where: str = "pretrain") -> PretrainSpec:
    p = r.keys(raw, where, keys.PRETRAIN)
    epochs = r.attempt(read_epochs, r, p["epochs"], f"{where}.epochs")
    parts = r.fields(
        optimizer=lambda: read_optimizer(r, p["optimizer"], f"{where}.optimizer"),
        lr_milestones=lambda: read_milestones(
            r, p.get("lr_milestones", []), f"{where}.lr_milestones", epochs
        ),
        lr_decay=lambda: r.number(
            p.get("lr_decay", 0.1), f"{where}.lr_decay", minimum=0.0, maximum=1.0
        ),
        augment=lambda: read_augment(r, p.get("augment", "flip_crop"), f"{where}.augment"),
        eval_attacks=lambda: (
            read_eval_attacks(r, p["eval_attack"], f"{where}.eval_attack")
            if "eval_attack" in p
            else ()
        ),
        seed=lambda: r.integer(p.get("seed", 0), f"{where}.seed", minimum=0),
        track_information=lambda: r.integer(
            p.get("track_information", 0), f"{where}.track_information", minimum=0
        ),
    )
    if epochs is None:
        raise r.incomplete()
    return PretrainSpec(epochs=epochs, **parts)


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


def read_seeds(r: Reader, raw: Any, finetune: FinetuneSpec | None) -> tuple[int, ...] | int | None:
    """``seeds:``, a count or a list, or None when every rule has its own (``finetune`` None:
    the section had problems; the rules are not compared)."""
    per_rule = [rule.seeds is not None for rule in finetune.rules] if finetune else [False]
    if raw is None:
        if finetune is not None and not all(per_rule):
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
    if keys.DEFAULT not in raw:
        raise r.fail("blocks", "a per-target mapping needs a 'default' list for the other targets")
    names = dataset_names()

    def target_blocks(target: Any, value: Any) -> tuple[str, tuple[int | str, ...]]:
        r.choice(target, f"blocks.{target}", names)
        return str(target), read_blocks(r, value, f"blocks.{target}")

    per_target = each(
        r, [lambda t=t, v=v: target_blocks(t, v) for t, v in raw.items() if t != keys.DEFAULT]
    )
    return read_blocks(r, raw[keys.DEFAULT], "blocks.default"), tuple(per_target)


def read_rule(r: Reader, item: Any, where: str) -> RuleSpec:
    d = r.keys(item, where, keys.RULE)
    epochs = r.attempt(read_epochs, r, d["epochs"], f"{where}.epochs")
    parts = r.fields(
        up_to=lambda: r.size_or_all(d.get("up_to", ALL_IMAGES), f"{where}.up_to"),
        eval_every=lambda: r.integer(
            d.get("eval_every", epochs or 1), f"{where}.eval_every", minimum=1
        ),
        lr_milestones=lambda: read_milestones(
            r, d.get("lr_milestones", []), f"{where}.lr_milestones", epochs
        ),
        seeds=lambda: read_seed_count(r, d["seeds"], f"{where}.seeds") if "seeds" in d else None,
        blocks=lambda: read_blocks(r, d["blocks"], f"{where}.blocks") if "blocks" in d else None,
        lr=lambda: read_rule_lr(r, d, where),
    )
    if epochs is None:
        raise r.incomplete()
    if parts["blocks"] is not None and parts["seeds"] is not None:
        raise r.fail(f"{where}.seeds", "seed counts are per subset size: not in a blocks rule")
    return RuleSpec(epochs=epochs, **parts)


def read_rule_lr(r: Reader, d: Any, where: str) -> float | None:
    """A rule's own learning rate (replacing ``optimizer.lr`` for its cells), if it has one."""
    if "lr" not in d:
        return None
    return r.number(d["lr"], f"{where}.lr", minimum=0.0, strict_minimum=True)


def read_rules(r: Reader, raw: Any, at: str = "finetune.rules") -> tuple[RuleSpec, ...]:
    items = r.sequence(raw, at)
    rules = each(r, [lambda i=i, v=v: read_rule(r, v, f"{at}[{i}]") for i, v in enumerate(items)])
    # Rules for given blocks are checked first, in order; the others must cover every size.
    bounds = [rule.up_to for rule in rules if rule.blocks is None]
    if not bounds:
        raise r.fail(at, "give a rule without blocks, up_to: all, for every other block setting")
    if bounds[-1] is not None:
        raise r.fail(at, "the last rule must cover every size: give it up_to: all")
    finite = [b for b in bounds[:-1] if b is not None]
    if len(finite) != len(bounds) - 1 or finite != sorted(set(finite)):
        raise r.fail(at, "up_to must increase from rule to rule, 'all' only last")
    return tuple(rules)


def read_finetune(r: Reader, raw: Any, where: str = "finetune") -> FinetuneSpec:
    f = r.keys(raw, where, keys.FINETUNE)
    augment = f.get("augment", "none")
    parts = r.fields(
        optimizer=lambda: read_optimizer(r, f["optimizer"], f"{where}.optimizer"),
        lr_decay=lambda: r.number(
            f.get("lr_decay", 0.1), f"{where}.lr_decay", minimum=0.0, maximum=1.0
        ),
        augment=lambda: read_augment(r, default_augment(augment), f"{where}.augment"),
        augment_targets=lambda: read_target_augments(r, augment, f"{where}.augment"),
        update_frozen_bn_stats=lambda: r.boolean(
            f.get("update_frozen_bn_stats", False), f"{where}.update_frozen_bn_stats"
        ),
        head_init=lambda: r.choice(f.get("head_init", "normal"), f"{where}.head_init", HEAD_INITS),
        normalization=lambda: r.choice(
            f.get("normalization", "source"), f"{where}.normalization", NORMALIZATIONS
        ),
        rules=lambda: read_rules(r, f["rules"], f"{where}.rules"),
        eval_attacks=lambda: (
            read_eval_attacks(r, f["eval_attack"], f"{where}.eval_attack")
            if "eval_attack" in f
            else ()
        ),
    )
    return FinetuneSpec(**parts)


def read_source_finetune(r: Reader, raw: Any, where: str) -> FinetuneSpec:
    """A source's own ``finetune:`` (its changes merged over the sweep's, see
    :func:`inherited`; Terzi et al. fine-tune from ImageNet for 300 epochs at batch 256, from
    CIFAR for 120 at 128). Seeds stay the sweep's: its rules may not set them."""
    ft = read_finetune(r, raw, where)
    if any(rule.seeds is not None for rule in ft.rules):
        raise r.fail(f"{where}.rules", "seeds are the sweep's: give them as top-level seeds:")
    return ft


def read_resources(r: Reader, raw: Any) -> ResourcesSpec:
    d = r.keys(raw, "resources", keys.RESOURCES)
    parts = r.fields(
        cpu=lambda: r.number(d.get("cpu", 1), "resources.cpu", minimum=0.0, strict_minimum=True),
        gpu=lambda: read_gpu(r, d.get("gpu", 0)),
        bf16=lambda: r.boolean(d.get("bf16", False), "resources.bf16"),
        channels_last=lambda: r.boolean(d.get("channels_last", False), "resources.channels_last"),
    )
    return ResourcesSpec(**parts)


def read_gpu(r: Reader, raw: Any) -> float | str:
    """GPUs per fine-tune trial: a number (a fraction <= 1 shares one GPU), or ``auto``."""
    if raw == GPU_AUTO:
        return GPU_AUTO
    if isinstance(raw, str) and raw.strip().lower() == GPU_AUTO:
        raise r.fail("resources.gpu", f"write {GPU_AUTO!r} in lower case, got {raw!r}")
    gpu = r.number(raw, "resources.gpu", minimum=0.0)
    if gpu > 1 and gpu != int(gpu):
        raise r.fail("resources.gpu", f"fractions are for sharing one GPU (<= 1), got {gpu:g}")
    return gpu


def read_probe(r: Reader, item: Any, where: str) -> ProbeSpec:
    """One probe of :data:`raysweep.probes.PROBES` with its parameters (unknown names and
    parameters get the closest known one)."""
    if not isinstance(item, dict) or keys.PROBE_NAME not in item:
        raise r.fail(where, "must be a mapping with 'name' and the probe's params")
    name = item[keys.PROBE_NAME]
    params = {k: v for k, v in item.items() if k != keys.PROBE_NAME}
    try:
        return validate_probe(str(name), params)
    except ValueError as error:  # its text may quote a whole value: r.fail clips it
        hint = did_you_mean(name, probe_names())
        if isinstance(name, str) and name in PROBES:
            unknown = next((k for k in params if k not in PROBES[name].params), None)
            hint = did_you_mean(unknown, PROBES[name].params) if unknown is not None else ""
        raise r.fail(where, f"{error}{'; ' + hint.rstrip() if hint else ''}") from None


def read_probes(r: Reader, raw: Any) -> tuple[ProbeSpec, ...]:
    """``probes:`` — a list of ``{name: <probe>, <param>: <value>, …}`` (see raysweep.probes)."""
    items = r.sequence(raw, "probes", nonempty=False)
    probes = each(
        r, [lambda i=i, v=v: read_probe(r, v, f"probes[{i}]") for i, v in enumerate(items)]
    )
    r.unique([p.name for p in probes], "probes[].name")
    return tuple(probes)
