"""The command line: what it prints, and one-line errors with exit code 2."""

from __future__ import annotations

import os
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
    spec.write_text((SPACES / "quickstart.yaml").read_text().replace("eps: 0.25", "eps: -0.25"))
    assert main(["plan", str(spec)]) == 2
    assert "sources[2].training.eps: must be > 0" in one_line_error(capsys)


def test_unreachable_tracking_server_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "runs"
    code = main(
        [
            "--root",
            str(root),
            "launch",
            str(SPACES / "quickstart.yaml"),
            "--tracking-uri",
            "http://127.0.0.1:9",
        ]
    )
    assert code == 2
    assert "MLflow tracking server http://127.0.0.1:9 is unreachable" in one_line_error(capsys)
    assert not (root / "quickstart").exists()


def test_unreachable_cluster_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "runs"
    code = main(
        ["--root", str(root), "launch", str(SPACES / "quickstart.yaml"), "--address", "127.0.0.1:9"]
    )
    assert code == 2
    assert "Ray cluster 127.0.0.1:9 is unreachable" in one_line_error(capsys)
    assert not root.exists()


def test_ui_for_unknown_sweep(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--root", str(tmp_path), "ui", "nope"]) == 2
    assert "no sweep named 'nope'" in one_line_error(capsys)


def test_unwritable_root(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert main(["--root", str(blocker), "launch", str(SPACES / "quickstart.yaml")]) == 2
    assert "cannot write the sweep folder" in one_line_error(capsys)


def existing_sweep(root: Path, spec_text: str) -> Path:
    from raysweep.sweepdir import SweepDir

    sweep = SweepDir(root, "quickstart")
    sweep.create()
    sweep.spec_copy.write_text(spec_text)
    sweep.write_state({"name": "quickstart", "tracking_uri": sweep.default_tracking_uri()})
    return sweep.path


def test_changed_spec_is_refused_with_the_difference(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    original = (SPACES / "quickstart.yaml").read_text()
    existing_sweep(tmp_path, original)
    changed = tmp_path / "changed.yaml"
    changed.write_text(original.replace("seeds: 3", "seeds: 4"))
    assert main(["--root", str(tmp_path), "launch", str(changed)]) == 2
    err = one_line_error(capsys)
    assert "exists with a different spec (54 jobs added, 0 removed" in err
    assert "--extend" in err
    fewer = tmp_path / "fewer.yaml"
    fewer.write_text(original.replace("seeds: 3", "seeds: 2"))
    assert main(["--root", str(tmp_path), "launch", str(fewer), "--extend"]) == 2
    assert "0 jobs added, 54 removed" in one_line_error(capsys)


def test_extend_accepts_a_spec_that_only_adds_jobs(tmp_path: Path) -> None:
    from raysweep.driver.launcher import check_same_plan
    from raysweep.plan import make_plan
    from raysweep.spec import load_spec
    from raysweep.sweepdir import SweepDir

    original = (SPACES / "quickstart.yaml").read_text()
    existing_sweep(tmp_path, original)
    more = tmp_path / "more.yaml"
    more.write_text(original.replace("seeds: 3", "seeds: 4"))
    check_same_plan(SweepDir(tmp_path, "quickstart"), make_plan(load_spec(more)), extend=True)


def test_checkpoints_lists_utrera_sources_with_urls(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["checkpoints", "--data-root", "/data"]) == 0
    out = capsys.readouterr().out
    assert "/data/checkpoints/" in out
    for name in ("imagenet_l2_3_0", "imagenet_linf_4", "imagenet_linf_8"):
        assert f"robustness:{name}" in out
    assert "linf ε=8/255" in out and "https://" in out


def test_analyze_a_sweep_without_finished_runs_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    existing_sweep(tmp_path, (SPACES / "quickstart.yaml").read_text())
    assert main(["--root", str(tmp_path), "analyze", "quickstart"]) == 2
    err = one_line_error(capsys)
    assert err == (
        "raysweep: error: sweep 'quickstart' has no finished runs yet: run "
        "`raysweep status quickstart`"
    )
    assert not (tmp_path / "quickstart" / "report").exists()


def test_version_help_and_global_options_after_the_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from raysweep import __version__

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"raysweep {__version__}"
    with pytest.raises(SystemExit):
        main(["launch", "--help"])
    help_text = capsys.readouterr().out
    assert "examples:" in help_text and "finetune.optimizer.lr=0.1" in help_text
    assert "KEY=VALUE" in help_text
    # --root after the subcommand works as before it
    assert main(["status", "nope", "--root", str(tmp_path)]) == 2
    assert f"no sweep named 'nope' under {tmp_path}" in one_line_error(capsys)


def test_list_shows_every_sweep_with_its_states(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["list", "--root", str(tmp_path)]) == 0
    assert "no sweeps under" in capsys.readouterr().out
    existing_sweep(tmp_path, (SPACES / "quickstart.yaml").read_text())
    assert main(["list", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.strip().startswith("quickstart"))
    assert row.split()[1:5] == ["0", "0", "0", "174"]  # done, running, failed, pending


def test_status_watch_stops_when_nothing_is_left_to_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from raysweep.driver import status as status_module

    existing_sweep(tmp_path, (SPACES / "quickstart.yaml").read_text())
    views = iter([False, False, True])  # pending twice, then all done
    real = status_module.SweepStatus.finished

    def finished(self: object) -> bool:
        return next(views)

    monkeypatch.setattr(status_module.SweepStatus, "finished", property(finished))
    monkeypatch.setattr("time.sleep", lambda seconds: None)
    assert main(["status", "quickstart", "--root", str(tmp_path), "--watch", "0.01"]) == 0
    assert capsys.readouterr().out.count("(as of ") == 3
    assert real is not None


def test_mlflow_set_up_lines_are_hidden_unless_debug(tmp_path: Path) -> None:
    """MLflow configures its loggers when first imported, after the CLI quieted them: its
    database set-up lines opened every launch (issue #17)."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from raysweep.cli import quiet_libraries\n"
        "quiet_libraries(debug=sys.argv[1] == 'debug')\n"
        "from raysweep.driver.tracker import create_sqlite_store\n"
        "create_sqlite_store(f'sqlite:///{sys.argv[2]}/mlflow.db', None)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_LOGGING_LEVEL"}

    def create_store(mode: str, folder: Path) -> str:
        args = [sys.executable, "-c", code, mode, str(folder)]
        done = subprocess.run(args, capture_output=True, text=True, check=True, env=env)
        return done.stderr + done.stdout

    assert "database tables" not in create_store("quiet", tmp_path / "a")
    assert (tmp_path / "a" / "mlflow.db").is_file()
    loud = create_store("debug", tmp_path / "b")
    assert "Creating initial MLflow database tables" in loud
