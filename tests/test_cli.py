"""The command line: what it prints, and one-line errors with exit code 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from raysweep.cli import main

SPACES = Path(__file__).resolve().parents[1] / "search_spaces"


def test_plan_prints_stage_counts(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", str(SPACES / "utrera2020.yaml")]) == 0
    out = capsys.readouterr().out
    assert "14,400 Ray Tune trials" in out
    assert "4 Ray tasks (0 to train, 4 from checkpoints)" in out
    assert "14,404 jobs" in out


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("raysweep: error: ")
    assert "\n" not in err
    return err


def test_bad_spec_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = tmp_path / "bad.yaml"
    spec.write_text((SPACES / "quickstart.yaml").read_text().replace("eps: 0.5", "eps: -0.5"))
    assert main(["plan", str(spec)]) == 2
    assert "sources[2].training.eps: must be > 0" in one_line_error(capsys)


def test_unreachable_tracking_server_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "runs"
    code = main(
        ["--root", str(root), "launch", str(SPACES / "quickstart.yaml"),
         "--tracking-uri", "http://127.0.0.1:9"]
    )
    assert code == 2
    assert "MLflow tracking server http://127.0.0.1:9 is unreachable" in one_line_error(capsys)
    assert not (root / "quickstart").exists()


def test_ui_for_unknown_sweep(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--root", str(tmp_path), "ui", "nope"]) == 2
    assert "no sweep named 'nope'" in one_line_error(capsys)


def test_unwritable_root(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert main(["--root", str(blocker), "launch", str(SPACES / "quickstart.yaml")]) == 2
    assert "cannot write the sweep folder" in one_line_error(capsys)
