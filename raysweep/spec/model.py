"""What a validated sweep spec is: frozen dataclasses, one per section.

Built by :func:`raysweep.spec.load_spec` only; everything downstream (plan, driver, workers)
reads these, never raw YAML.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from raysweep.probes import ProbeSpec
    from raysweep.spec.search import SearchSpec


#: Utrera et al. eq. (6): S_k = {20000000 + 100000·i : i < k}.
SEED_BASE = 20_000_000
SEED_STRIDE = 100_000
#: Upper bounds on values whose cost grows with them, so that a typo (``seeds: 10000000``,
#: ``epochs: 1000000000``) fails validation instead of exhausting memory while the plan is built.
#: Seeds: every seed is one fine-tune per grid cell, and a count expands into a tuple of seeds
#: (count or explicit list, global or per rule); Utrera et al. use 20.
MAX_SEEDS = 10_000
#: Epochs of pretraining and of a fine-tune rule (and the search's ``epochs`` range): each
#: fine-tune job's config lists its evaluation epochs, up to one per epoch; the papers use <= 200.
MAX_EPOCHS = 10_000
#: Whose channel statistics normalise a fine-tuned model's input.
NORMALIZATIONS = ("source", "target")


@dataclass(frozen=True)
class AttackSpec:
    """A PGD attack: ``steps`` steps of ``step_size`` inside the ``norm`` ball of radius eps."""

    norm: str
    eps: float
    steps: int
    step_size: float
    random_start: bool = True


@dataclass(frozen=True)
class EvalAttackSpec(AttackSpec):
    """An attack the test set is evaluated under: PGD on the cross-entropy (``loss: ce``,
    logged as ``adv/acc``) or on the Carlini–Wagner margin (``loss: cw``, ``adv/acc_cw``; the
    CCKL paper's second attack, Table 1)."""

    loss: str = "ce"


@dataclass(frozen=True)
class TrainingSpec:
    """How a source was (or is to be) trained: ``natural``, ``pgd``, ``gaussian`` or ``trades``."""

    kind: str
    attack: AttackSpec | None = None
    sigma: float | None = None
    beta: float | None = None
    #: ``gaussian`` only: the noise's ℓ₂ norm (its direction Gaussian); None = σ·N(0, I).
    radius: float | None = None

    @property
    def norm(self) -> str:
        return self.attack.norm if self.attack else ""

    @property
    def eps(self) -> float:
        return self.attack.eps if self.attack else 0.0


@dataclass(frozen=True)
class OptimizerSpec:
    """SGD with momentum, as in Utrera Table 3 and Terzi App. C."""

    lr: float
    momentum: float
    weight_decay: float
    batch_size: int
    nesterov: bool = False


@dataclass(frozen=True)
class PretrainSpec:
    """How sources without a checkpoint are trained."""

    epochs: int
    optimizer: OptimizerSpec
    lr_milestones: tuple[int, ...]
    lr_decay: float
    augment: str
    #: Attacks the test set is evaluated under after every epoch (``adv/acc``, ``adv/acc_cw``).
    eval_attacks: tuple[EvalAttackSpec, ...]
    seed: int
    #: Test images on which to log input-Fisher F-norm and CCKL every epoch (0 = off);
    #: the CCKL paper's Fig. 3–4, 7–8.
    track_information: int = 0


@dataclass(frozen=True)
class SourceSpec:
    name: str
    architecture: str
    dataset: str
    training: TrainingSpec
    checkpoint: str | None = None
    #: sha256 of a checkpoint given as a file path, read when the spec is loaded: the source is
    #: keyed by the file's content, so a retrained file at the same path is a new source.
    checkpoint_sha256: str | None = None
    #: This source's own pretraining recipe (the sweep's, changed); None = the sweep's.
    pretrain: PretrainSpec | None = None
    #: This source's own fine-tuning recipe (the sweep's, changed); None = the sweep's.
    finetune: FinetuneSpec | None = None
    #: Targets for this source only (Terzi Table 1 transfers each CIFAR source to the other
    #: datasets); None = the sweep's ``targets``.
    targets: tuple[str, ...] | None = None


@dataclass(frozen=True)
class RuleSpec:
    """Fine-tuning settings for subset sizes up to ``up_to`` images (None: every size, ``all``),
    for the block settings in ``blocks`` only when given (e.g. more epochs for head-only
    trials, whose steps on cached features are cheap); ``lr``, when given, replaces the
    optimiser's learning rate for the cells of this rule."""

    up_to: int | None
    epochs: int
    eval_every: int
    lr_milestones: tuple[int, ...]
    seeds: int | None
    blocks: tuple[int | str, ...] | None = None
    lr: float | None = None


@dataclass(frozen=True)
class FinetuneSpec:
    optimizer: OptimizerSpec
    lr_decay: float
    #: The augmentation recipe of every target not in ``augment_targets``.
    augment: str
    update_frozen_bn_stats: bool
    head_init: str
    normalization: str
    rules: tuple[RuleSpec, ...]
    #: Also measure accuracy under these attacks at every evaluation epoch (``adv/acc``, …).
    eval_attacks: tuple[EvalAttackSpec, ...] = ()
    #: (target, recipe) pairs that differ from ``augment``.
    augment_targets: tuple[tuple[str, str], ...] = ()

    def augment_for(self, target: str) -> str:
        """The augmentation recipe of ``target``."""
        return dict(self.augment_targets).get(target, self.augment)

    def rule_for(self, size: int | None, blocks: int | str | None = None) -> RuleSpec:
        """The rule of a cell: the first rule naming ``blocks`` whose ``up_to`` covers ``size``
        (None = the whole training set), else the first rule without ``blocks`` that covers it
        (``blocks=None``: only the latter, which alone set seed counts)."""
        named = [r for r in self.rules if r.blocks is not None and blocks in r.blocks]
        for rule in [*named, *(r for r in self.rules if r.blocks is None)]:
            if rule.up_to is None or (size is not None and size <= rule.up_to):
                return rule
        raise AssertionError("validated specs always end with a rule that covers 'all'")


#: ``resources.gpu: auto``: as many fine-tune trials per GPU as their measured memory allows.
GPU_AUTO = "auto"


@dataclass(frozen=True)
class ResourcesSpec:
    cpu: float
    #: GPUs per trial (a fraction shares one), or :data:`GPU_AUTO` (raysweep.driver.gpu_packing).
    gpu: float | str
    #: Speed switches for GPU trials (how a job runs, not what it computes: not in job keys).
    #: bf16: fine-tune under ``torch.autocast(dtype=bfloat16)``; channels_last: NHWC weights.
    bf16: bool = False
    channels_last: bool = False

    @property
    def gpu_auto(self) -> bool:
        return self.gpu == GPU_AUTO

    @property
    def uses_gpu(self) -> bool:
        """Trials may run on a GPU: a share was given, or ``auto``."""
        return self.gpu_auto or float(self.gpu) > 0


@dataclass(frozen=True)
class SweepSpec:
    name: str
    path: str
    sources: tuple[SourceSpec, ...]
    pretrain: PretrainSpec | None
    targets: tuple[str, ...]
    subset_sizes: tuple[int | None, ...]
    seeds: tuple[int, ...] | int | None
    #: Fine-tuned blocks of every target not in ``target_blocks``.
    blocks: tuple[int | str, ...]
    finetune: FinetuneSpec | None
    probes: tuple[ProbeSpec, ...]
    resources: ResourcesSpec
    data_root: str | None
    download: bool
    #: Per-group hyperparameter search before the grid (raysweep.plan.search); None = grid only.
    search: SearchSpec | None = None
    #: Log each source's checkpoint file on its MLflow run (its reference is always logged);
    #: how runs are recorded, not what they compute: not in job keys.
    log_models: bool = False
    #: (target, blocks) pairs that differ from ``blocks`` (Terzi Table 5: CINIC, mode 0 only).
    target_blocks: tuple[tuple[str, tuple[int | str, ...]], ...] = ()

    def finetune_for(self, source: SourceSpec) -> FinetuneSpec:
        """The fine-tuning recipe of ``source``: its own, else the sweep's."""
        recipe = source.finetune or self.finetune
        assert recipe is not None, "validated: a grid has a finetune section"
        return recipe

    def blocks_for(self, target: str) -> tuple[int | str, ...]:
        """The fine-tuned block settings of ``target``."""
        return dict(self.target_blocks).get(target, self.blocks)

    def targets_for(self, source: SourceSpec) -> tuple[str, ...]:
        return source.targets if source.targets is not None else self.targets

    def seed_count(self, size: int | None) -> int:
        """How many seeds a subset size runs, without building them (raysweep.plan.size)."""
        if isinstance(self.seeds, tuple):
            return len(self.seeds)
        assert self.finetune is not None, "seeds belong to the fine-tuning grid"
        count = self.seeds if isinstance(self.seeds, int) else self.finetune.rule_for(size).seeds
        assert count is not None, "validated: seeds are given globally or in every rule"
        return count

    def seeds_for(self, size: int | None) -> tuple[int, ...]:
        """Explicit seeds, or the first k of Utrera's S_k for a count (global or per rule)."""
        if isinstance(self.seeds, tuple):
            return self.seeds
        return tuple(SEED_BASE + SEED_STRIDE * i for i in range(self.seed_count(size)))
