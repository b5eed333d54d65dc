"""Every figure family has its thin script in analysis/, and every script draws a registered
family (the scripts are importable and do nothing on import)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from raysweep.analysis.families import FAMILIES
from raysweep.analysis.script import family_main

SCRIPTS = sorted((Path(__file__).resolve().parents[1] / "analysis").glob("*.py"))


def family_of(script: Path) -> object:
    spec = importlib.util.spec_from_file_location(script.stem, script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # the __main__ guard: importing draws nothing
    assert module.family_main is family_main
    drawn = [f for _, f in FAMILIES if getattr(module, f.__name__, None) is f]
    assert len(drawn) == 1, f"{script.name} should import exactly one registered family"
    return drawn[0]


def test_one_script_per_family() -> None:
    families = [family_of(script) for script in SCRIPTS]
    assert sorted(f.__name__ for f in families) == sorted(f.__name__ for _, f in FAMILIES)


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_script_is_named_after_its_family(script: Path) -> None:
    names = {f.__name__: name for name, f in FAMILIES}
    assert names[family_of(script).__name__] == script.stem


def test_sharey_reaches_the_family(tmp_path: Path) -> None:
    """``--sharey`` (default off) arrives on ``data.options`` of the family a script draws."""
    from raysweep.analysis.script import parse_args
    from raysweep.analysis.sweepdata import Section, SweepData

    seen: list[bool] = []

    def family(data: SweepData, out_dir: Path) -> Section:
        seen.append(data.options.sharey)
        return Section("t", "", [])

    common = ["--sweep", "s", "--tracking-uri", "sqlite:///unused.db", "--out", str(tmp_path)]
    assert parse_args("d", common).sharey is False
    assert family_main(family, "d", common) == 0
    assert family_main(family, "d", [*common, "--sharey"]) == 0
    assert seen == [False, True]
