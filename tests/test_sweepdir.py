"""The sweep folder's one rule for the tracking URI, and its layout (issue #13)."""

from __future__ import annotations

from pathlib import Path

import pytest

from raysweep.schema import subset_label
from raysweep.store import Store
from raysweep.sweepdir import SweepDir, SweepDirError


def test_tracking_uri_override_then_saved_then_default(tmp_path: Path) -> None:
    sweep = SweepDir(tmp_path, "s")
    # not launched yet: only a launch (new=True) may fall back to the folder's SQLite file
    with pytest.raises(SweepDirError, match="no sweep named 's'.*known: none"):
        sweep.tracking_uri()
    assert sweep.tracking_uri(new=True) == f"sqlite:///{tmp_path / 's' / 'mlflow.db'}"
    assert sweep.tracking_uri("http://host:5000", new=True) == "http://host:5000"
    sweep.create()
    sweep.write_state({"name": "s", "tracking_uri": "http://saved:5000", "parent_run_id": "p"})
    assert sweep.tracking_uri() == "http://saved:5000"
    assert sweep.tracking_uri(new=True) == "http://saved:5000"  # a relaunch keeps its store
    assert sweep.tracking_uri("sqlite:///other.db") == "sqlite:///other.db"


def test_folders_and_subset_files(tmp_path: Path) -> None:
    sweep = SweepDir(tmp_path, "s")
    assert sweep.trials_dir == tmp_path / "s" / "trials"
    assert sweep.probe_dir("k1") == tmp_path / "s" / "probes" / "k1"
    assert sweep.search_dir == tmp_path / "s" / "search"
    assert sweep.store == Store(tmp_path / "store")
    store = Store(tmp_path / "store")
    assert store.subset("digits", None, 7).name == "nall-seed7.json"
    assert store.subset("digits", 100, 7).name == "n100-seed7.json"
    assert subset_label(None) == "all" and subset_label(25600) == "25600"
