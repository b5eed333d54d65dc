"""Specs that cost nothing to write and everything to read (issue #14): each fails fast, in one
short line naming the file, what is wrong and the fix; plans are counted before they are built.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from raysweep.plan import (
    MAX_JOBS,
    count_evaluations,
    count_jobs,
    describe_plan,
    eval_epochs,
    make_plan,
)
from raysweep.plan.search import search_groups
from raysweep.plan.size import evaluation_count
from raysweep.spec import (
    MAX_NODES,
    MAX_TEXT,
    SpecError,
    compose,
    load_spec,
    parse_spec,
    read_yaml,
)
from raysweep.spec import load as load_module
from raysweep.spec.reader import shown

ROOT = Path(__file__).resolve().parents[1]
SPACES = ROOT / "search_spaces"
SHIPPED = sorted(SPACES.glob("*.yaml"))
#: No error line may be longer than this after its file name, whatever the spec holds.
LONGEST_LINE = 540


def raw_of(stem: str) -> dict[str, Any]:
    """A shipped spec as parse_spec validates it: composed (quickstart_probes extends)."""
    return compose(SPACES / f"{stem}.yaml").data


def one_line(error: pytest.ExceptionInfo[SpecError], prefix: str) -> str:
    text = str(error.value)
    assert text.startswith(prefix), text[:200]
    assert "\n" not in text
    assert len(text) - len(prefix) <= LONGEST_LINE, f"{len(text)} characters: {text[:200]}..."
    return text


def write(tmp_path: Path, text: str, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# --- the strict YAML loader ---------------------------------------------------------------

LAUGHS = "".join(
    f"{b}: &{b} [{', '.join([f'*{a}'] * 9)}]\n" for a, b in zip("abcdefgh", "bcdefghi", strict=True)
)
BOMB = 'name: bomb\na: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + LAUGHS
BOMB += "sources: *i\n"
QUICKSTART = (SPACES / "quickstart.yaml").read_text()
#: 900 kB: 500,000 characters, then 99,000 aliases of them in a probe parameter (whose error
#: message would repr all of it: 50 GB).
LONG_STRING = 'name: x\ns: &s "' + "x" * 500_000 + '"\nprobes:\n  - {name: distance, images: ['
LONG_STRING += ", ".join(["*s"] * 99_000) + "]}\n"

YAML_CASES = [
    (
        "duplicate top-level key",
        "name: x\nseeds: 3\nsources: []\nseeds: 4\n",
        "line 4: key 'seeds' appears twice (first at line 2); keep one",
    ),
    (
        "duplicate key in a flow mapping",
        "name: x\nsources:\n  - {name: a,\n     name: b}\n",
        "line 4: key 'name' appears twice (first at line 3); keep one",
    ),
    (
        "1 and 0x1 are one key",
        "a:\n  1: x\n  0x1: y\n",
        "line 3: key 1 appears twice (first at line 2); keep one",
    ),
    (
        "billion laughs",
        BOMB,
        f"line 7: the document holds more than {MAX_NODES:,} values once its aliases are expanded",
    ),
    (
        "a long string repeated by aliases",
        LONG_STRING,
        f"line 4: the document holds more than {MAX_TEXT:,} characters once its aliases are "
        "expanded",
    ),
    (
        "20,000 brackets",
        "name: x\nsources: " + "[" * 20_000 + "]" * 20_000 + "\n",
        "line 2: nested more than 100 levels deep; a spec needs a handful: flatten it",
    ),
    (
        "20,000 block sequences",
        "name: x\nsources:\n" + "- " * 20_000 + "x\n",
        "line 3: nested more than 100 levels deep",
    ),
    (
        "deep only once an alias is expanded",
        "a: &a " + "[" * 60 + "]" * 60 + "\nb: " + "[" * 50 + "*a" + "]" * 50 + "\n",
        "line 2: nested more than 100 levels deep once alias *a is expanded",
    ),
    (
        "recursive alias",
        "name: x\nsources: &s [*s]\n",
        "line 2: alias *s is inside the node it names (a recursive structure)",
    ),
    (
        "a 5,000-digit integer",
        f"name: x\nseeds: {'9' * 5000}\n",
        "line 2: an integer written with 5,000 characters; a spec's numbers have at most 100",
    ),
    (
        "a 1,000,000-bit hex integer",
        f"name: x\nseeds: 0x{'f' * 250_000}\n",
        "line 2: an integer written with 250,002 characters",
    ),
    ("malformed", "name: x\nsources: [\n  - a: b\n", "malformed YAML at line 3, column 3"),
    ("two documents", "name: x\n---\nname: y\n", "malformed YAML at line 2"),
    ("a control character", "name: x\nsources: \x00\n", "malformed YAML at line 2"),
]


@pytest.mark.parametrize(
    ("text", "message"), [c[1:] for c in YAML_CASES], ids=[c[0] for c in YAML_CASES]
)
def test_strict_yaml_refuses_with_line(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    assert message in one_line(caught, f"{path}: ")


def test_anchors_aliases_and_merges_still_work(tmp_path: Path) -> None:
    anchored = QUICKSTART.replace(
        "pretrain:\n  epochs: 15\n  optimizer: {name: sgd, lr: 0.005, momentum: 0.9, "
        "weight_decay: 5.0e-3, batch_size: 16}",
        "pretrain:\n  epochs: 15\n  optimizer: &sgd {name: sgd, lr: 0.005, momentum: 0.9, "
        "weight_decay: 5.0e-3, batch_size: 16}",
    ).replace(
        "finetune:\n  optimizer: {name: sgd, lr: 0.05, momentum: 0.9, weight_decay: 5.0e-4, "
        "batch_size: 64}",
        "finetune:\n  optimizer: {<<: *sgd, lr: 0.05, weight_decay: 5.0e-4, batch_size: 64}",
    )
    assert anchored.count("*sgd") == 1
    plain = load_spec(write(tmp_path, QUICKSTART, "plain.yaml"))
    spec = load_spec(write(tmp_path, anchored, "anchored.yaml"))
    assert spec == dataclasses.replace(plain, path=spec.path)
    assert make_plan(spec).keys() == make_plan(plain).keys()


def test_aliases_below_the_limit_load() -> None:
    # 9^5 = 59,049 strings once expanded (~74,000 values), a few dozen as written: fine.
    small = "a: &a [x, x, x, x, x, x, x, x, x]\n" + LAUGHS[: LAUGHS.index("f:")]
    data = read_yaml(small, "small.yaml")
    assert len(data["e"]) == 9 and data["e"][0][0][0][0] is data["a"]


BOMB_PROBE = """
import sys, time, tracemalloc
from raysweep.spec import SpecError, load_spec
def load():
    try:
        load_spec(sys.argv[1])
    except SpecError as error:
        return str(error)
start = time.process_time()  # CPU seconds: other processes on the machine do not count
message = load()
seconds = time.process_time() - start
tracemalloc.start()  # a second time, traced (tracing slows Python several times over)
load()
# VmHWM, not ru_maxrss: Linux carries the parent's RSS peak across fork + exec in ru_maxrss.
hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(seconds, tracemalloc.get_traced_memory()[1], len(message), hwm.split()[1])
"""


@pytest.mark.parametrize(
    "case", ["billion laughs", "a long string repeated by aliases", "20,000 brackets"]
)
def test_bombs_fail_fast_and_small(tmp_path: Path, case: str) -> None:
    """In a fresh process: time and the peak of Python allocations while loading, and the
    process's peak RSS (imports included). yaml.safe_load + repr took 3.8 GB on the bomb; the
    probe runs under a 4 GB address-space cap so that a regression fails instead of swapping."""
    text = next(c[1] for c in YAML_CASES if c[0] == case)
    path = write(tmp_path, text)

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))

    result = subprocess.run(
        [sys.executable, "-c", BOMB_PROBE, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        cwd=ROOT,
        preexec_fn=cap,
    )
    seconds, peak_bytes, length, max_rss_kb = (float(v) for v in result.stdout.split())
    assert seconds < 2.0
    assert peak_bytes < 5_000_000  # at most a 1 MB file, and nothing built from it is larger
    assert length < LONGEST_LINE
    assert max_rss_kb < 300_000


# --- the file itself ----------------------------------------------------------------------


def test_missing_folder_and_not_regular(tmp_path: Path) -> None:
    for path, message in [
        (tmp_path / "nope.yaml", "no such spec file; give the path of a YAML file"),
        (tmp_path / "nope" / "x.yaml", "no such spec file"),
        (tmp_path, "is a folder, not a spec file; give the path of a YAML file"),
    ]:
        with pytest.raises(SpecError) as caught:
            load_spec(path)
        assert message in one_line(caught, f"{path}: ")
    fifo = tmp_path / "pipe.yaml"
    os.mkfifo(fifo)
    with pytest.raises(SpecError) as caught:
        load_spec(fifo)
    assert "not a regular file" in one_line(caught, f"{fifo}: ")


def test_unreadable_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, QUICKSTART)

    def denied(self: Path, *args: Any, **kwargs: Any) -> Any:  # chmod 000 is no bar to root
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "open", denied)
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    text = one_line(caught, f"{path}: ")
    assert "cannot read the spec (Permission denied); check the path" in text


def test_non_utf8_and_oversized(tmp_path: Path) -> None:
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("name: café\n".encode("latin-1"))
    with pytest.raises(SpecError) as caught:
        load_spec(latin)
    assert "not UTF-8 text (byte 0xe9 at offset 9); save the spec as UTF-8" in one_line(
        caught, f"{latin}: "
    )
    big = write(tmp_path, "name: x\ndescription: " + "x" * 1_000_000 + "\n", "big.yaml")
    with pytest.raises(SpecError) as caught:
        load_spec(big)
    assert "larger than 1,000,000 bytes" in one_line(caught, f"{big}: ")


def test_recursion_error_becomes_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, QUICKSTART)

    def overflow(*args: Any) -> Any:
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(load_module, "parse_spec", overflow)
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    assert "nested too deeply to read; flatten the spec" in one_line(caught, f"{path}: ")


# --- values quoted in errors are shortened ------------------------------------------------


def mutate(stem: str, path: list[Any], value: Any) -> dict[str, Any]:
    raw = copy.deepcopy(raw_of(stem))
    node = raw
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    return raw


HUGE = [
    (["name"], "x" * 1_000_000, "name: 'xxxxxxxxxxxxxxxxxxxxxxx"),
    (
        ["sources", 0, "architecture"],
        ["resnet"] * 100_000,
        "sources[0].architecture: unknown value ['resnet', 'resnet', 'resnet', 'resnet', ...]",
    ),
    (["finetune", "optimizer", "lr"], "9" * 100_000, "finetune.optimizer.lr: must be a number"),
    (["finetune", "optimizer", "lr"], "1e999999999", "must be a number such as 0.5 or 8/255"),
    (
        ["finetune", "optimizer", "lr"],
        "1e400",
        "finetune.optimizer.lr: must be finite, got '1e400'",
    ),
    (["resources", "cpu"], 10**400, "resources.cpu: must be finite, got <an integer of about 401"),
    (
        ["finetune", "optimizer", "batch_size"],
        {"k" * 10_000: list(range(10_000))},
        "batch_size: must be a whole number, got {'"
        + "k" * 22
        + "..."
        + "k" * 23
        + "': [0, 1, 2, 3, ...]}",
    ),
    (["finetune", "k" * 1_000_000], 1, "finetune: unknown key 'kkkkkkk"),
    (["probes"], [{"name": "distance", "x" * 100_000: 1}], "probes[0]: probe 'distance': unknown"),
    (["probes"], [{"name": ["x" * 1000] * 1000}], "probes[0]: unknown probe"),
    (["subset_sizes"], [10**60], "subset_sizes[0]: <an integer of about 61 digits> exceeds the"),
    (["seeds"], [1, 1], "seeds: value 1 appears twice"),
]


@pytest.mark.parametrize(("path", "value", "message"), HUGE, ids=[h[2][:30] for h in HUGE])
def test_quoted_values_are_short(path: list[Any], value: Any, message: str) -> None:
    start = time.perf_counter()
    with pytest.raises(SpecError) as caught:
        parse_spec(mutate("quickstart", path, value), "bad.yaml")
    assert message in one_line(caught, "bad.yaml: ")
    assert time.perf_counter() - start < 1.0


def test_search_keys_are_shortened_too() -> None:
    raw = mutate("quickstart_search", ["search", "params"], {"p" * 100_000: {"distribution": "x"}})
    with pytest.raises(SpecError) as caught:
        parse_spec(raw, "bad.yaml")
    assert "search.params.pppp" in one_line(caught, "bad.yaml: ")


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("x" * 10**6, "'" + "x" * 22 + "..." + "x" * 23 + "'"),
        (list(range(10**6)), "[0, 1, 2, 3, ...]"),
        (2**100_000, "<an integer of about 30104 digits>"),
        (b"a" * 1000, "b'" + "a" * 50 + "...'"),
        ({"a": [[1, 2]]}, "{'a': [[...]]}"),
        (True, "True"),
        (0.5, "0.5"),
    ],
    ids=["str", "list", "int", "bytes", "nested", "bool", "float"],
)
def test_shown(value: Any, text: str) -> None:
    assert shown(value) == text


# --- names ----------------------------------------------------------------------------------

BAD_NAMES = ["..", ".", "a/b", ".hidden", "-x", "_x", "x" * 101, "a b", "ü"]


@pytest.mark.parametrize("name", BAD_NAMES)
@pytest.mark.parametrize("where", [["name"], ["sources", 0, "name"]], ids=["sweep", "source"])
def test_bad_names_refused(name: str, where: list[Any]) -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec(mutate("quickstart", where, name), "bad.yaml")
    key = "name" if len(where) == 1 else "sources[0].name"
    text = one_line(caught, f"bad.yaml: {key}: ")
    assert "is not a valid name: use letters, digits, '.', '_' and '-'" in text


@pytest.mark.parametrize("name", ["l2_1.5", "A-1.b", "x" * 100, "9lives"])
def test_good_names_kept(name: str) -> None:
    spec = parse_spec(mutate("quickstart", ["sources", 0, "name"], name), "ok.yaml")
    assert spec.sources[0].name == name
    assert parse_spec(mutate("quickstart", ["name"], name), "ok.yaml").name == name


# --- bounds on values that explode --------------------------------------------------------

SEEDS_WHY = "each seed is one more fine-tune of every grid cell; Utrera et al. use 20"
EPOCHS_WHY = "a bound against typos; the papers train at most 200 epochs"
RULE = ["finetune", "rules", 0]
BOUNDS = [
    (["seeds"], 10_000_000, f"seeds: must be <= 10,000 ({SEEDS_WHY}), got 10000000"),
    (["seeds"], list(range(10_001)), f"seeds: lists 10,001 seeds; at most 10,000 ({SEEDS_WHY})"),
    (
        [*RULE, "epochs"],
        1_000_000_000,
        f"finetune.rules[0].epochs: must be <= 10,000 ({EPOCHS_WHY}), got 1000000000",
    ),
    (["pretrain", "epochs"], 10_001, "pretrain.epochs: must be <= 10,000"),
]


@pytest.mark.parametrize(("path", "value", "message"), BOUNDS, ids=[b[2][:30] for b in BOUNDS])
def test_upper_bounds(path: list[Any], value: Any, message: str) -> None:
    raw = mutate("quickstart", path, value)
    raw["finetune"]["rules"][0]["eval_every"] = 1
    with pytest.raises(SpecError) as caught:
        parse_spec(raw, "bad.yaml")
    assert message in one_line(caught, "bad.yaml: ")


def test_per_rule_seeds_and_search_epochs_bounded() -> None:
    raw = mutate("quickstart", [*RULE, "seeds"], 10_001)
    del raw["seeds"]
    with pytest.raises(SpecError, match=r"finetune.rules\[0\].seeds: must be <= 10,000"):
        parse_spec(raw, "bad.yaml")
    raw = mutate(
        "quickstart_search",
        ["search", "params", "epochs"],
        {"distribution": "int", "low": 1, "high": 1_000_000},
    )
    with pytest.raises(SpecError, match=r"search.params.epochs.high: must be <= 10,000"):
        parse_spec(raw, "bad.yaml")


def test_bounds_themselves_are_allowed() -> None:
    raw = mutate("quickstart", ["seeds"], 10_000)
    raw["finetune"]["rules"][0].update(epochs=10_000, lr_milestones=[])
    raw["pretrain"].update(epochs=10_000)
    spec = parse_spec(raw, "ok.yaml")
    assert len(spec.seeds_for(100)) == 10_000 and spec.seed_count(100) == 10_000


# --- counting jobs before building them ---------------------------------------------------


def built_evaluations(spec: Any, plan: Any) -> int:
    sources = {job.config["source"]: job for job in plan.jobs["pretrain"]}
    groups = search_groups(spec, sources).values()
    return sum(len(j.config["eval_epochs"]) for j in plan.jobs["finetune"]) + sum(
        len(g.config["eval_epochs"]) for g in groups
    )


def variants() -> list[tuple[str, dict[str, Any]]]:
    """Shapes the shipped specs do not cover: grouped searches, per-rule and listed seeds."""
    by_all = mutate(
        "quickstart_search", ["search", "group_by"], ["source", "target", "subset_size", "blocks"]
    )
    by_all["blocks"] = [0, 1]
    by_size = mutate(
        "quickstart_search", ["search", "group_by"], ["source", "target", "subset_size"]
    )
    rules = mutate("utrera2020", ["blocks"], [0, "head_bn"])
    listed = mutate("quickstart", ["seeds"], [5, 3, 9])
    per_target = mutate("quickstart", ["probes"], [{"name": "distance"}, {"name": "tsne"}])
    no_grid = raw_of("quickstart")
    for key in ("finetune", "subset_sizes", "seeds", "blocks"):
        del no_grid[key]
    return [
        ("search by all", by_all),
        ("search by size", by_size),
        ("rules", rules),
        ("listed seeds", listed),
        ("per-target probes", per_target),
        ("no grid", no_grid),
    ]


CASES = [(p.stem, raw_of(p.stem)) for p in SHIPPED] + variants()


@pytest.mark.parametrize("raw", [c[1] for c in CASES], ids=[c[0] for c in CASES])
def test_count_jobs_equals_the_built_plan(raw: dict[str, Any]) -> None:
    spec = parse_spec(raw, "count.yaml")
    plan = make_plan(spec)
    assert count_jobs(spec) == {stage: len(jobs) for stage, jobs in plan.jobs.items()}
    assert list(count_jobs(spec)) == list(plan.jobs)  # same stages, same order
    assert count_evaluations(spec) == built_evaluations(spec, plan)


def test_every_shipped_spec_is_counted() -> None:
    assert {c[0] for c in CASES} >= {p.stem for p in SHIPPED} and len(SHIPPED) >= 7


@pytest.mark.parametrize("epochs", [1, 2, 5, 19, 20, 21, 100, 150])
@pytest.mark.parametrize("every", [1, 2, 3, 10, 20, 200])
def test_evaluation_count(epochs: int, every: int) -> None:
    assert evaluation_count(epochs, every) == len(eval_epochs(epochs, every))


def test_job_limit_message_and_override() -> None:
    spec = load_spec(SPACES / "quickstart.yaml")
    with pytest.raises(SpecError) as caught:
        make_plan(spec, max_jobs=173)
    assert one_line(caught, f"{spec.path}: ") == (
        f"{spec.path}: the plan has 174 jobs (pretrain 3, probe 9, finetune 162), above the "
        "limit of 173; shrink the grid (sources, targets, subset_sizes, blocks, seeds, "
        "search.trials) or pass --max-jobs N to allow more"
    )
    assert make_plan(spec, max_jobs=174).total == 174
    assert make_plan(spec, max_jobs=None).total == 174


def test_search_stage_named_in_the_limit() -> None:
    spec = load_spec(SPACES / "quickstart_search.yaml")
    with pytest.raises(SpecError, match=r"50 jobs \(pretrain 2, probe 0, search 32, finetune 16\)"):
        make_plan(spec, max_jobs=49)


def test_a_huge_grid_is_refused_before_it_is_built() -> None:
    raw = raw_of("utrera2020")
    for rule in raw["finetune"]["rules"]:
        rule["seeds"] = 10_000
    spec = parse_spec(raw, "huge.yaml")
    start = time.perf_counter()
    with pytest.raises(SpecError) as caught:
        make_plan(spec)
    assert time.perf_counter() - start < 0.5
    text = one_line(caught, "huge.yaml: ")
    assert "9,600,004 jobs (pretrain 4, probe 0, finetune 9,600,000)" in text
    assert f"above the limit of {MAX_JOBS:,}" in text and "--max-jobs N" in text


def test_evaluation_epochs_bounded_with_the_same_override() -> None:
    raw = raw_of("quickstart")
    raw["finetune"]["rules"] = raw["finetune"]["rules"][:1]  # the one rule for every cell
    raw["finetune"]["rules"][0].update(epochs=10_000, eval_every=1, lr_milestones=[])
    spec = parse_spec(raw, "evals.yaml")
    assert count_evaluations(spec) == 162 * 10_000
    with pytest.raises(SpecError) as caught:
        make_plan(spec, max_jobs=1_000)
    assert one_line(caught, "evals.yaml: ") == (
        "evals.yaml: the configs of the plan's 162 fine-tune jobs list 1,620,000 evaluation "
        "epochs, above the limit of 50,000 (50 per job of --max-jobs 1,000); evaluate less "
        "often (raise eval_every) or pass --max-jobs N to allow more"
    )
    assert len(make_plan(spec, max_jobs=40_000).jobs["finetune"]) == 162


def test_describe_plan_unchanged() -> None:
    text = describe_plan(make_plan(load_spec(SPACES / "quickstart_search.yaml")))
    assert text.splitlines()[1:] == [
        "  pretrain         2 Ray tasks (2 to train, 0 from checkpoints)",
        "  probe            0 Ray tasks (probes: none)",
        "  search          32 Ray Tune trials = 4 groups (by source, target) × 8 trials",
        "  finetune        16 Ray Tune trials = 4 source→target pairs × 1 block settings × "
        "seeds per subset size (100:2, 400:2)",
        "  total           50 jobs",
    ]


def test_count_jobs_of_utrera() -> None:
    counts = count_jobs(load_spec(SPACES / "utrera2020.yaml"))
    assert counts == {"pretrain": 4, "probe": 0, "finetune": 14_400}
