"""Grid expansion, seeds and stable job keys."""

from __future__ import annotations

import copy
from collections import Counter
from pathlib import Path

import yaml

from raysweep.plan import describe_plan, eval_epochs, make_plan
from raysweep.spec import load_spec, parse_spec

SPACES = Path(__file__).resolve().parents[1] / "search_spaces"


def test_utrera_plans_exactly_14400_trials() -> None:
    plan = make_plan(load_spec(SPACES / "utrera2020.yaml"))
    finetune = plan.jobs["finetune"]
    assert len(finetune) == 14_400
    assert len(plan.jobs["pretrain"]) == 4
    assert len({job.key for job in finetune}) == 14_400
    per_size = Counter(job.axes["subset_size"] for job in finetune)
    assert per_size["100"] == 4 * 6 * 4 * 20
    assert per_size["all"] == 4 * 6 * 4 * 10
    assert "14,400 Ray Tune trials" in describe_plan(plan)


def test_terzi_is_the_papers_whole_grid() -> None:
    """Terzi et al.: Tables 1, 6–8 (48) + Table 2, 9–10 (66) + Table 3 (24) + Table 5 (2) = 140
    fine-tunes, and the EMD of every source → target pair."""
    plan = make_plan(load_spec(SPACES / "terzi2021.yaml"))
    fine = plan.jobs["finetune"]
    pairs = {(j.axes["source"], j.axes["target"]) for j in fine}
    assert ("cifar10_natural", "cifar10") not in pairs
    assert ("cifar100_l2_1", "cifar10") in pairs
    assert len(fine) == 140
    by_source = {}
    for j in fine:
        by_source.setdefault(j.axes["source"], set()).add((j.axes["target"], j.axes["blocks"]))
    assert len(by_source["imagenet_l2_3"]) == 11 * 3
    assert {b for t, b in by_source["cifar10_l2_1"] if t == "cinic10_imagenet"} == {"head_bn"}
    assert len(by_source["cifar100_resnet18_natural"]) == 4 * 3
    imagenet = next(j for j in fine if j.axes["source"] == "imagenet_natural").config
    cifar = next(j for j in fine if j.axes["source"] == "cifar10_natural").config
    assert (imagenet["epochs"], imagenet["optimizer"]["batch_size"]) == (300, 256)
    assert imagenet["optimizer"]["weight_decay"] == 1e-4 and imagenet["lr_milestones"] == [150, 250]
    assert (cifar["epochs"], cifar["optimizer"]["batch_size"]) == (120, 128)
    distances = {(j.axes["source"], j.axes["target"]) for j in plan.jobs["probe"]}
    assert distances == pairs


def test_quickstart_grid_and_eval_epochs() -> None:
    plan = make_plan(load_spec(SPACES / "quickstart.yaml"))
    assert len(plan.jobs["finetune"]) == 3 * 3 * 3 * 2 * 3
    by_blocks = {job.config["blocks"]: job.config for job in plan.jobs["finetune"]}
    assert by_blocks[1]["eval_epochs"] == [1, 6, 11, 16, 20]
    # Head-only cells follow the rule naming blocks 0: more epochs, its own learning rate.
    assert by_blocks[0]["eval_epochs"] == [1, 51, 101, 151, 201, 251, 300]
    assert (by_blocks[0]["optimizer"]["lr"], by_blocks[1]["optimizer"]["lr"]) == (0.2, 0.05)
    assert eval_epochs(100, 20) == [1, 21, 41, 61, 81, 100]  # Utrera A.4's example


def test_keys_are_stable_and_ignore_display_names() -> None:
    raw = yaml.safe_load((SPACES / "quickstart.yaml").read_text())
    a = make_plan(parse_spec(raw, "a.yaml"))
    renamed = copy.deepcopy(raw)
    renamed["name"] = "other"
    renamed["sources"][0]["name"] = "baseline"
    b = make_plan(parse_spec(renamed, "b.yaml"))
    assert a.keys() == b.keys()
    changed = copy.deepcopy(raw)
    changed["finetune"]["optimizer"]["lr"] = 0.02
    c = make_plan(parse_spec(changed, "c.yaml"))
    assert c.jobs["pretrain"][0].key == a.jobs["pretrain"][0].key
    # The head-only rule sets its own lr: those keys stay, every other fine-tune key changes.
    for blocks, same in ((0, True), (1, False)):
        old, new = ({j.key for j in p.jobs["finetune"] if j.config["blocks"] == blocks}
                    for p in (a, c))  # fmt: skip
        assert (old == new) is same and (bool(old & new) is same)


def test_finetune_jobs_reference_their_source_key() -> None:
    plan = make_plan(load_spec(SPACES / "quickstart.yaml"))
    source_keys = {j.key for j in plan.jobs["pretrain"]}
    assert {j.config["source_key"] for j in plan.jobs["finetune"]} == source_keys


def test_information_presets_plan_probes_without_finetuning() -> None:
    cckl = make_plan(load_spec(SPACES / "cckl2021.yaml"))
    assert (len(cckl.jobs["pretrain"]), len(cckl.jobs["probe"]), len(cckl.jobs["finetune"])) == (
        15,
        30,
        0,
    )
    terzi = make_plan(load_spec(SPACES / "terzi2021_information.yaml"))
    assert (len(terzi.jobs["probe"]), len(terzi.jobs["finetune"])) == (20, 0)
    assert "probes: weight_fisher, tsne, inversion, effective_images" in describe_plan(terzi)


def test_quickstart_probes_reuse_the_quickstart_sources() -> None:
    probes = make_plan(load_spec(SPACES / "quickstart_probes.yaml"))
    quick = make_plan(load_spec(SPACES / "quickstart.yaml"))
    assert {j.key for j in probes.jobs["pretrain"]} == {j.key for j in quick.jobs["pretrain"]}
    per_target = [j for j in probes.jobs["probe"] if "target" in j.config]
    assert len(per_target) == 2 * 3 * 3  # distance and influence × 3 sources × 3 targets
    assert len(probes.jobs["probe"]) == 8 * 3 + 18
