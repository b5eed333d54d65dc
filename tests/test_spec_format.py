"""The spec format researchers expect (issue #17): dotted overrides, ``extends`` with ``${…}``
and ``null``, the resolved copy, the JSON Schema, and every problem at once with its line."""

from __future__ import annotations

import dataclasses
import json
import pickle
import time
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from raysweep.plan import make_plan
from raysweep.spec import (
    SpecError,
    compose,
    keys,
    load_spec,
    parse_spec,
    resolved_yaml,
    spec_json_schema,
)

ROOT = Path(__file__).resolve().parents[1]
SPACES = ROOT / "search_spaces"
SHIPPED = sorted(SPACES.glob("*.yaml"))
QUICKSTART = SPACES / "quickstart.yaml"
QUICK_TEXT = QUICKSTART.read_text()


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def problems_of(path: Path, overrides: tuple[str, ...] = ()) -> SpecError:
    with pytest.raises(SpecError) as caught:
        load_spec(path, overrides)
    return caught.value


def line_of(path: Path, text: str) -> int:
    """The 1-based line of ``path`` holding ``text``."""
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if text in line)


# --- overrides --------------------------------------------------------------------------------


def test_overrides_change_any_key() -> None:
    spec = load_spec(
        QUICKSTART,
        [
            "sources.1.training.eps=8/255",
            "sources[2].training.steps=3",
            "subset_sizes=[100,400]",
            "finetune.optimizer.lr=0.01",
            "finetune.rules.0.epochs=30",
            "seeds=2",
        ],
    )
    assert spec.sources[1].training.eps == pytest.approx(8 / 255)
    assert spec.sources[2].training.attack.steps == 3
    assert spec.subset_sizes == (100, 400)
    assert spec.finetune.optimizer.lr == 0.01 and spec.finetune.rules[0].epochs == 30
    assert spec.seeds_for(100) == (20_000_000, 20_100_000)
    unchanged = load_spec(QUICKSTART)
    assert spec.pretrain == unchanged.pretrain and spec.sources[0] == unchanged.sources[0]


def test_a_mapping_override_merges_and_null_removes() -> None:
    spec = load_spec(QUICKSTART, ["finetune.optimizer={lr: 0.2, nesterov: true}"])
    assert (spec.finetune.optimizer.lr, spec.finetune.optimizer.nesterov) == (0.2, True)
    assert spec.finetune.optimizer.batch_size == 64  # kept from the file
    grid = ["finetune=null", "subset_sizes=null", "seeds=null", "blocks=null"]
    assert load_spec(QUICKSTART, grid).finetune is None


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("seeds", "not KEY=VALUE; write key.path=value, e.g. finetune.optimizer.lr=0.01"),
        ("=5", "not KEY=VALUE"),
        ("finetune..lr=1", "not KEY=VALUE"),
        ("subset_size=[100]", "unknown key 'subset_size'; did you mean 'subset_sizes'? allowed"),
        ("extends=other.yaml", "unknown key 'extends'; it is read before overrides: edit the file"),
        ("sources.3.name=x", "sources is a list of 3 items: give an index from 0 to 2, got '3'"),
        ("sources.first.name=x", "sources is a list of 3 items: give an index from 0 to 2"),
        ("subset_sizes=[1,", "the value is not valid YAML ("),
    ],
)
def test_malformed_overrides_are_one_line(override: str, message: str) -> None:
    text = str(problems_of(QUICKSTART, (override,)))
    assert text.startswith(f"{QUICKSTART}: override {override!r}: ")
    assert message in text and "\n" not in text


def test_override_values_are_validated_like_the_file() -> None:
    error = problems_of(QUICKSTART, ("finetune.optimizer.lr=0", "finetune.optimiser.lr=1"))
    lines = str(error).splitlines()
    assert lines[0] == f"2 problems in {QUICKSTART}:"
    assert sorted(lines[1:]) == [
        "override 'finetune.optimiser.lr=1': finetune: unknown key 'optimiser'; did you mean "
        "'optimizer'? allowed keys: augment, eval_attack, head_init, lr_decay, normalization, "
        "optimizer, rules, update_frozen_bn_stats",
        "override 'finetune.optimizer.lr=0': finetune.optimizer.lr: must be > 0, got 0",
    ]


# --- extends, interpolation, null -----------------------------------------------------------


def test_quickstart_probes_is_the_quickstart_without_its_grid() -> None:
    probes, quick = compose(SPACES / "quickstart_probes.yaml"), compose(QUICKSTART)
    assert probes.parents == (str(QUICKSTART),)
    for key in ("sources", "pretrain", "targets", "resources"):
        assert probes.data[key] == quick.data[key]
    assert not set(keys.GRID_KEYS[:1] + ("subset_sizes", "seeds", "blocks")) & set(probes.data)
    assert len(probes.data["probes"]) == 10
    body = [line for line in (SPACES / "quickstart_probes.yaml").read_text().splitlines()]
    assert len([line for line in body if line and not line.startswith("#")]) <= 17


def test_extends_deep_merges_in_order_relative_to_the_file(tmp_path: Path) -> None:
    write(tmp_path, "presets/base.yaml", QUICK_TEXT)
    write(tmp_path, "presets/long.yaml", "pretrain: {epochs: 30, lr_milestones: [20]}\n")
    child = write(
        tmp_path,
        "mine/child.yaml",
        "extends: [../presets/base.yaml, ../presets/long.yaml]\n"
        "name: child\n"
        "pretrain: {optimizer: {lr: 0.1}}\n"
        "targets: [digits]\n",
    )
    spec = load_spec(child)
    assert spec.name == "child" and spec.pretrain.epochs == 30
    assert spec.pretrain.lr_milestones == (20,)
    assert spec.pretrain.optimizer.lr == 0.1 and spec.pretrain.optimizer.batch_size == 16
    assert spec.targets == ("digits",)  # a list replaces the parent's
    assert compose(child).parents == (
        str(child.parent / "../presets/base.yaml"),
        str(child.parent / "../presets/long.yaml"),
    )


@pytest.mark.parametrize(
    ("files", "message"),
    [
        (
            {"a.yaml": "extends: b.yaml\nname: a\n", "b.yaml": "extends: [a.yaml]\n"},
            "b.yaml:1:1: extends: {dir}/a.yaml extends itself (a.yaml → b.yaml → a.yaml); "
            "remove one of the extends",
        ),
        ({"a.yaml": "name: a\n\nextends: a.yaml\n"}, "a.yaml:3:1: extends: {dir}/a.yaml extends"),
        (
            {"a.yaml": "name: a\nextends: nope.yaml\n"},
            "a.yaml:2:1: extends: {dir}/nope.yaml: no such spec file",
        ),
        (
            {"a.yaml": "extends: b.yaml\n", "b.yaml": "- a list\n"},
            "a.yaml:1:1: extends: {dir}/b.yaml is not a mapping of spec keys",
        ),
        (
            {"a.yaml": "extends: b.yaml\n", "b.yaml": "x: 1\nx: 2\n"},
            "a.yaml:1:1: extends: {dir}/b.yaml: line 2: key 'x' appears twice",
        ),
        ({"a.yaml": "extends: {x: 1}\n"}, "a.yaml:1:1: extends: must be a spec file name"),
    ],
    ids=["cycle", "itself", "missing", "not a mapping", "strict YAML", "not a name"],
)
def test_extends_problems_are_one_line(tmp_path: Path, files: dict[str, str], message: str) -> None:
    for name, text in files.items():
        write(tmp_path, name, text)
    text = str(problems_of(tmp_path / "a.yaml"))
    assert message.format(dir=tmp_path) in text and "\n" not in text


def test_interpolation_and_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAYSWEEP_TEST_ROOT", "/data/sets")
    monkeypatch.delenv("RAYSWEEP_TEST_UNSET", raising=False)
    spec = write(
        tmp_path,
        "spec.yaml",
        QUICK_TEXT
        + "data_root: ${oc.env:RAYSWEEP_TEST_ROOT}\n"
        + "description: ${oc.env:RAYSWEEP_TEST_UNSET,none} \\${literal} ${pretrain.epochs}\n",
    ).read_text()
    spec = spec.replace(
        "lr_milestones: [12]", "lr_milestones: [12]\n  seed: ${finetune.rules.0.epochs}"
    )
    spec = spec.replace("  seed: 0\n", "")
    loaded = load_spec(write(tmp_path, "spec.yaml", spec))
    assert loaded.data_root == "/data/sets" and loaded.pretrain.seed == 20
    assert compose(tmp_path / "spec.yaml").data["description"] == "none ${literal} 15"


def test_interpolation_problems_are_all_listed(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "spec.yaml",
        QUICK_TEXT.replace("name: quickstart", "name: ${nope}")
        + "data_root: ${oc.env:RAYSWEEP_TEST_UNSET}\ndescription: ???\n",
    )
    error = problems_of(path)
    assert [str(p) for p in error.problems] == [
        f"{path}:{line_of(path, 'name: ')}:1: name: cannot resolve the interpolation: "
        "Interpolation key 'nope' not found; refer to a key of the spec or oc.env",
        f"{path}:{line_of(path, 'data_root')}:1: data_root: KeyError raised while resolving "
        "interpolation: \"Environment variable 'RAYSWEEP_TEST_UNSET' not found\"; set it, or "
        "give a default: ${oc.env:VAR,default}",
        f"{path}:{line_of(path, 'description')}:1: description: is ??? (a value left to fill "
        "in); give it in the file or as an override",
    ]


def test_null_removes_a_key_and_counts_as_not_given(tmp_path: Path) -> None:
    text = QUICK_TEXT.replace("  seed: 0\n", "  seed: null\n")
    assert load_spec(write(tmp_path, "spec.yaml", text)).pretrain.seed == 0  # the default


# --- the resolved copy ------------------------------------------------------------------------


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_resolved_copy_plans_the_same_jobs(tmp_path: Path, path: Path) -> None:
    copy = write(tmp_path, "spec.yaml", resolved_yaml(path))
    original, again = load_spec(path), load_spec(copy)
    assert again == dataclasses.replace(original, path=str(copy))
    assert make_plan(again, max_jobs=None).keys() == make_plan(original, max_jobs=None).keys()


def test_resolved_copy_names_what_made_it(tmp_path: Path) -> None:
    overrides = ["seeds=5", "finetune.optimizer.lr=0.2", "description='ε \\${x}'"]
    probes = SPACES / "quickstart_probes.yaml"
    text = resolved_yaml(QUICKSTART, overrides[:2])
    assert text.splitlines()[1:4] == [
        f'# spec: "{QUICKSTART}"',
        "# extends: []",
        '# overrides: ["seeds=5", "finetune.optimizer.lr=0.2"]',
    ]
    assert f'# extends: ["{QUICKSTART}"]' in resolved_yaml(probes)
    copy = write(tmp_path, "copy.yaml", resolved_yaml(QUICKSTART, overrides))
    spec = load_spec(copy)
    assert spec.seed_count(100) == 5 and spec.finetune.optimizer.lr == 0.2
    assert compose(copy).data["description"] == "ε ${x}"  # escaped in the copy: kept literal
    assert load_spec(copy, ["seeds=2"]).seed_count(100) == 2


# --- the JSON Schema --------------------------------------------------------------------------


def validator() -> jsonschema.Draft202012Validator:
    schema = spec_json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_committed_schema_is_the_generated_one() -> None:
    committed = json.loads((ROOT / "spec.schema.json").read_text())
    assert committed == spec_json_schema(), "regenerate: raysweep schema > spec.schema.json"
    for path in SHIPPED:
        assert path.read_text().startswith("# yaml-language-server: $schema=../spec.schema.json\n")


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_every_shipped_spec_validates(path: Path) -> None:
    check = validator()
    assert list(check.iter_errors(yaml.safe_load(path.read_text()))) == []
    assert list(check.iter_errors(compose(path).data)) == []


def test_schema_keys_are_the_readers_keys() -> None:
    defs = spec_json_schema()["$defs"]
    tables = {
        "spec": keys.TOP,
        "source": keys.SOURCE,
        "pretrain": keys.PRETRAIN,
        "finetune": keys.FINETUNE,
        "optimizer": keys.OPTIMIZER,
        "rule": keys.RULE,
        "attack": keys.EVAL_ATTACK,
        "resources": keys.RESOURCES,
        "search": keys.SEARCH,
        "param": keys.SEARCH_PARAM,
        "scheduler": keys.SCHEDULER,
    }
    for name, table in tables.items():
        assert set(defs[name]["properties"]) == set(table.allowed), name
        assert defs[name].get("required", []) == list(table.required), name
        assert "required" not in defs.get(f"{name}_layer", {}), name
    assert set(defs["spec_layer"]["properties"]) == {*keys.TOP.allowed, "extends"}


def mutated(path: list[Any], value: Any) -> dict[str, Any]:
    raw = yaml.safe_load(QUICK_TEXT)
    node = raw
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    return raw


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (["finetune", "optimiser"], {"lr": 0.1}),
        (["sources", 0, "dataset"], "cifar-10"),
        (["sources", 1, "training", "sigma"], 0.1),
        (["probes", 0], {"name": "distance", "images": 3}),
        (["probes", 0], {"name": "tsne", "perplexity": "high"}),
        (["blocks"], {"digits": [0]}),
        (["subset_sizes", 0], "most"),
        (["finetune", "rules", 0, "epochs"], 0),
        (["finetune", "augment"], {"default": "none", "imagenet21k": "none"}),
        (["pretrain", "eval_attack", "loss"], "hinge"),
        (["resources"], None),
    ],
)
def test_schema_refuses_what_the_readers_refuse(path: list[Any], value: Any) -> None:
    assert not validator().is_valid(mutated(path, value))
    with pytest.raises(SpecError):
        load_spec_raw(mutated(path, value))


def load_spec_raw(raw: dict[str, Any]) -> None:
    parse_spec(raw, "schema.yaml")


def test_schema_of_a_file_that_extends() -> None:
    check = validator()
    child = {"extends": "quickstart.yaml", "finetune": None, "pretrain": {"epochs": 3}}
    assert check.is_valid(child)
    assert not check.is_valid({**child, "pretrain": {"epochs": 3, "epoch": 4}})
    assert not check.is_valid({"name": "x", "finetune": None})  # not extending: whole
    assert check.is_valid(mutated(["sources", 0, "pretrain"], {"optimizer": {"lr": 0.01}}))
    assert check.is_valid(mutated(["finetune", "optimizer", "lr"], "${oc.env:LR,0.1}"))


# --- every problem at once --------------------------------------------------------------------


def broken_quickstart(tmp_path: Path) -> Path:
    text = (
        QUICK_TEXT.replace("eps: 0.25", "eps: -0.25")
        .replace(
            "    dataset: shapes\n    training: {kind: natural}",
            "    dataset: cifar-10\n    training: {kind: natural}",
        )
        .replace("  optimizer: {name: sgd, lr: 0.05", "  optimiser: {name: sgd, lr: 0.05")
        .replace("{name: distance}", "{name: distanse}")
        .replace("resources: {cpu: 1, gpu: 0}", "resources: {cpu: 0, gpu: 1.5}")
    )
    return write(tmp_path, "spec.yaml", text)


def test_every_problem_with_its_line_and_column(tmp_path: Path) -> None:
    path = broken_quickstart(tmp_path)
    error = problems_of(path)
    lines = str(error).splitlines()
    assert lines[0] == f"6 problems in {path}:" and len(lines) == 7
    assert [str(p) for p in error.problems] == lines[1:]
    at = {p.where: (p.line, p.column) for p in error.problems}
    assert at == {
        "sources[0].dataset": (line_of(path, "cifar-10"), 5),
        "sources[2].training.eps": (line_of(path, "eps: -0.25"), 37),
        "finetune": (line_of(path, "optimiser"), 3),
        "probes[0]": (line_of(path, "distanse"), 5),
        "resources.cpu": (line_of(path, "resources:"), 13),
        "resources.gpu": (line_of(path, "resources:"), 21),
    }
    dataset = line_of(path, "cifar-10")
    assert lines[1].startswith(f"{path}:{dataset}:5: sources[0].dataset: unknown value 'cifar-10'")
    assert "did you mean 'cifar10'?" in lines[1]
    assert "unknown key 'optimiser'; did you mean 'optimizer'?" in str(error)
    assert "unknown probe 'distanse'" in str(error) and "did you mean 'distance'?" in str(error)
    assert "sources[2].training.eps: must be > 0" in str(error)


def test_one_problem_is_one_line_with_its_place(tmp_path: Path) -> None:
    path = write(tmp_path, "spec.yaml", QUICK_TEXT.replace("eps: 0.25", "eps: -0.25"))
    error = problems_of(path)
    line = line_of(path, "eps: -0.25")
    assert str(error) == f"{path}:{line}:37: sources[2].training.eps: must be > 0, got -0.25"
    assert len(error.problems) == 1 and error.problems[0].file == str(path)


def test_problems_name_the_parent_file_or_the_override(tmp_path: Path) -> None:
    base = write(
        tmp_path, "base.yaml", QUICK_TEXT.replace("augment: none\n  eval", "augment: nope\n  eval")
    )
    child = write(tmp_path, "child.yaml", "extends: base.yaml\nname: child\nseeds: many\n")
    error = problems_of(child, ("finetune.head_init=zeros",))
    assert [str(p).split(": ", 1)[0] for p in error.problems] == [
        f"{child}:3:1",
        f"{base}:{line_of(base, 'augment: nope')}:3",
        "override 'finetune.head_init=zeros'",
    ]


def test_independent_parts_are_all_read(tmp_path: Path) -> None:
    """Each source, probe, rule and field of a section is read even when another failed."""
    raw = yaml.safe_load(QUICK_TEXT)
    for source in raw["sources"]:
        source["architecture"] = "resnet9000"
    raw["pretrain"].update(epochs=0, augment="blur")
    raw["finetune"]["rules"] = [{"up_to": 100, "epochs": 0}, {"up_to": "all", "epochs": -1}]
    raw["probes"] = [{"name": "tsne", "perplexity": -1}, {"name": "cckl", "norm": "l3"}]
    error = problems_of(write(tmp_path, "spec.yaml", yaml.safe_dump(raw)))
    wheres = [p.where for p in error.problems]
    assert sorted(wheres) == sorted(
        [f"sources[{i}].architecture" for i in range(3)]
        + ["pretrain.epochs", "pretrain.augment"]
        + ["finetune.rules[0].epochs", "finetune.rules[1].epochs", "probes[0]", "probes[1]"]
    )


def test_a_sources_own_section_does_not_repeat_the_sweeps(tmp_path: Path) -> None:
    raw = yaml.safe_load(QUICK_TEXT)
    raw["pretrain"]["optimizer"]["lr"] = -1
    raw["sources"][0]["pretrain"] = {"epochs": 0}
    error = problems_of(write(tmp_path, "spec.yaml", yaml.safe_dump(raw)))
    assert sorted(p.where for p in error.problems) == [
        "pretrain.optimizer.lr",
        "sources[0].pretrain.epochs",
    ]


def test_many_unknown_keys_are_counted_fast() -> None:
    raw = yaml.safe_load(QUICK_TEXT)
    raw["finetune"].update({f"key{i}": i for i in range(100_000)})
    start = time.perf_counter()
    with pytest.raises(SpecError) as caught:
        parse_spec(raw, "many.yaml")
    assert time.perf_counter() - start < 1.0
    head = "100000 problems in many.yaml (the first 30 listed):"
    assert str(caught.value).splitlines()[0] == head
    assert len(caught.value.problems) == 30


def test_spec_error_pickles_with_its_problems(tmp_path: Path) -> None:
    error = problems_of(broken_quickstart(tmp_path))
    again = pickle.loads(pickle.dumps(error))
    assert str(again) == str(error) and again.problems == error.problems
    assert SpecError("plain").problems[0].message == "plain"
