"""Spec validation: good specs parse into the values they say; bad ones get one precise line."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from raysweep.spec import SEED_BASE, SpecError, load_spec, parse_spec

SPACES = Path(__file__).resolve().parents[1] / "search_spaces"


def quickstart_raw() -> dict:
    return yaml.safe_load((SPACES / "quickstart.yaml").read_text())


def test_quickstart_values() -> None:
    spec = load_spec(SPACES / "quickstart.yaml")
    assert [s.name for s in spec.sources] == ["natural", "linf_2", "l2_0.25"]
    linf = spec.sources[1].training
    assert linf.kind == "pgd" and linf.norm == "linf"
    assert linf.eps == pytest.approx(2 / 255)
    assert linf.attack is not None and linf.attack.step_size == pytest.approx(2.5 * (2 / 255) / 1)
    assert spec.subset_sizes == (100, 400, 1000)
    assert spec.seeds_for(100) == (SEED_BASE, SEED_BASE + 100_000, SEED_BASE + 200_000)
    assert spec.resources.cpu == 1.0


def test_utrera_rules_pick_epochs_and_seeds_by_size() -> None:
    spec = load_spec(SPACES / "utrera2020.yaml")
    small, large = spec.finetune.rule_for(1600), spec.finetune.rule_for(3200)
    assert (small.epochs, small.eval_every, small.lr_milestones) == (100, 20, (33, 66))
    assert (large.epochs, large.eval_every, large.lr_milestones) == (150, 10, (50, 100))
    assert len(spec.seeds_for(1600)) == 20 and len(spec.seeds_for(None)) == 10
    assert spec.seeds_for(100)[-1] == 21_900_000  # Utrera: 20000000, …, 21900000


def mutate(path: list, value: object) -> dict:
    raw = copy.deepcopy(quickstart_raw())
    node = raw
    for part in path[:-1]:
        node = node[part]
    if value is DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return raw


DELETE = object()

BAD = [
    (["sources", 1, "training", "eps"], -0.1, "sources[1].training.eps: must be > 0"),
    (["sources", 0, "architecture"], "resnet9000", "sources[0].architecture: unknown value"),
    (["targets", 0], "imagenet21k", "targets[0]: unknown value 'imagenet21k'"),
    (["subset_sizes", 0], 999_999, "exceeds the"),
    (["subset_sizes", 0], 5, "smaller than the 10 classes"),
    (["blocks", 0], "some", "blocks[0]: unknown value 'some'"),
    (["blocks", 1], -1, "blocks[1]: must be >= 0"),
    (["seeds"], "many", "seeds: must be a list"),
    (["finetune", "optimizer", "lr"], 0, "finetune.optimizer.lr: must be > 0"),
    (["finetune", "optimizer", "lr"], "fast", "must be a number"),
    (["finetune", "optimizer", "batch_size"], 12.5, "batch_size: must be a whole number"),
    (["finetune", "rules", 0, "lr_milestones"], [15, 10], "must be strictly increasing"),
    (["finetune", "rules", 0, "lr_milestones"], [25], "is not before the last epoch"),
    (["finetune", "rules", 0, "up_to"], 500, "the last rule must cover every size"),
    (["finetune", "colour"], "blue", "finetune: unknown key 'colour'"),
    (["resources", "gpu"], 1.5, "fractions are for sharing one GPU"),
    (["pretrain"], DELETE, "sources without a checkpoint need a pretrain section"),
    (["sources", 1, "training", "kind"], "fgsm", "unknown value 'fgsm'"),
    (["sources", 1, "training", "norm"], "l1", "allowed: l2, linf"),
    (["name"], "my sweep", "'my sweep' is not a valid name"),
    (["sources", 2, "name"], "natural", "value 'natural' appears twice"),
    (["pretrain", "eval_attack", "kind"], "banana", "eval_attack: unknown key 'kind'"),
    (["finetune", "augment"], "crop_rotate", "'crop_rotate' is now 'crop_rotate15'"),
    (["finetune", "augment"], {"mnist_typo": "none"}, "augment.mnist_typo: unknown value"),
    (["pretrain", "eval_attack", "loss"], "hinge", "eval_attack.loss: unknown value 'hinge'"),
    (["sources", 1, "training", "loss"], "cw", "training: unknown key 'loss'"),
    (
        ["pretrain", "eval_attack"],
        [{"norm": "linf", "eps": 0.01, "steps": 2}] * 2,
        "pretrain.eval_attack[].loss: value 'ce' appears twice",
    ),
]


def test_cw_evaluation_attack_beside_pgd_and_its_job_config() -> None:
    """The CCKL paper evaluates PGD and CW; a single PGD attack keeps its old config (keys)."""
    from raysweep.plan import make_plan

    pgd = {"norm": "linf", "eps": "8/255", "steps": 20, "step_size": "2/255"}
    spec = parse_spec(mutate(["pretrain", "eval_attack"], [pgd, {**pgd, "loss": "cw"}]), "a.yaml")
    assert [a.loss for a in spec.pretrain.eval_attacks] == ["ce", "cw"]
    config = make_plan(spec).jobs["pretrain"][0].config["pretrain"]["eval_attack"]
    assert [a.get("loss", "ce") for a in config] == ["ce", "cw"] and "loss" not in config[0]
    single = make_plan(parse_spec(quickstart_raw(), "q.yaml")).jobs["pretrain"][0]
    assert isinstance(single.config["pretrain"]["eval_attack"], dict)


@pytest.mark.parametrize(("path", "value", "message"), BAD, ids=[b[2][:40] for b in BAD])
def test_bad_values_name_file_key_and_fix(path: list, value: object, message: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec(mutate(path, value), "bad.yaml")
    text = str(caught.value)
    assert text.startswith("bad.yaml: ")
    assert message in text
    assert "\n" not in text


def test_seeds_in_two_places_refused() -> None:
    raw = mutate(["finetune", "rules", 0, "seeds"], 4)
    with pytest.raises(SpecError, match="given both here and in finetune rules"):
        parse_spec(raw, "bad.yaml")


def test_explicit_seed_list_kept() -> None:
    spec = parse_spec(mutate(["seeds"], [7, 3]), "ok.yaml")
    assert spec.seeds_for(100) == (7, 3)


def test_malformed_yaml_reports_line(tmp_path: Path) -> None:
    bad = tmp_path / "broken.yaml"
    bad.write_text("name: x\nsources: [\n  - a: b\n")
    with pytest.raises(SpecError, match=r"broken.yaml: malformed YAML at line \d+"):
        load_spec(bad)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="no such spec file"):
        load_spec(tmp_path / "nope.yaml")


def test_augmentation_per_target() -> None:
    """Utrera et al.'s code augments RGB targets only; a mapping says so per target."""
    from raysweep.plan import make_plan

    recipe = {"default": "crop_flip_jitter_rotate2", "digits": "none"}
    spec = parse_spec(mutate(["finetune", "augment"], recipe), "a.yaml")
    by_target = {j.config["target"]: j.config["augment"] for j in make_plan(spec).jobs["finetune"]}
    assert by_target == {
        "shapes_outline": "crop_flip_jitter_rotate2",
        "textures": "crop_flip_jitter_rotate2",
        "digits": "none",
    }
