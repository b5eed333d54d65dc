"""What ``raysweep plan`` prints: jobs per stage, with the grid's shape, and the total."""

from __future__ import annotations

from raysweep.plan.jobs import Plan
from raysweep.schema import subset_label


def block_settings(plan: Plan) -> str:
    """How many block settings each pair fine-tunes, per target when they differ."""
    spec = plan.spec
    if not spec.target_blocks:
        return f"{len(spec.blocks)} block settings"
    exceptions = ", ".join(f"{t}: {len(b)}" for t, b in spec.target_blocks)
    return f"{len(spec.blocks)} block settings ({exceptions})"


def describe_plan(plan: Plan) -> str:
    """The text `raysweep plan` prints: jobs per stage, with the grid's shape, and the total."""
    spec = plan.spec
    lines = [f"sweep '{spec.name}' ({spec.path})"]
    trained = sum(1 for s in spec.sources if s.checkpoint is None)
    loaded = len(spec.sources) - trained
    lines.append(
        f"  pretrain   {len(plan.jobs['pretrain']):>7,} Ray tasks "
        f"({trained} to train, {loaded} from checkpoints)"
    )
    probes = ", ".join(p.name for p in spec.probes) or "none"
    lines.append(f"  probe      {len(plan.jobs['probe']):>7,} Ray tasks (probes: {probes})")
    if spec.finetune is None:
        lines.append("  finetune         0 (no finetune section)")
        lines.append(f"  total      {plan.total:>7,} jobs")
        return "\n".join(lines)
    if spec.search is not None:
        trials = len(plan.jobs["search"])
        groups = trials // spec.search.trials
        lines.append(
            f"  search     {trials:>7,} Ray Tune trials = {groups} groups "
            f"(by {', '.join(spec.search.group_by)}) × {spec.search.trials} trials"
        )
    seed_counts = {subset_label(s): len(spec.seeds_for(s)) for s in spec.subset_sizes}
    pairs = sum(len(spec.targets_for(s)) for s in spec.sources)
    seeds_text = ", ".join(f"{k}:{v}" for k, v in seed_counts.items())
    lines.append(
        f"  finetune   {len(plan.jobs['finetune']):>7,} Ray Tune trials "
        f"= {pairs} source→target pairs × {block_settings(plan)} × "
        f"seeds per subset size ({seeds_text})"
    )
    lines.append(f"  total      {plan.total:>7,} jobs")
    return "\n".join(lines)
