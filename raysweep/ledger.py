"""The job ledger: each job's state in one small SQLite file in the sweep folder.

MLflow is the record a person browses; reading it back costs a query per page of runs, and
everything that asks "what is done?" — ``status``, skip-if-done on every launch and resume —
grew linearly with the sweep (20.7 s for ``status`` at 14,402 jobs, issue #18). The driver, the
only writer, therefore also writes each job's state here as it records the job's run:

    jobs(key PRIMARY KEY, stage, name, status, run_id, reason, end_time)   status: RUNNING,
                                                                           FINISHED or FAILED
    meta(name PRIMARY KEY, value)   the tracking store it mirrors, the planned jobs per stage

A row is written after MLflow accepted the run's state, in its own transaction, with
``synchronous=FULL`` (fsync'd; ≈1 ms a commit on this machine's disk). The journal is SQLite's
default rollback journal, not WAL, which needs shared memory that network filesystems do not
offer. So the ledger may lag MLflow (a driver killed between the two writes) but never leads
it: the run a job is RUNNING under is written when the run opens, and
:mod:`raysweep.driver.ledger_sync` catches up by asking MLflow about those runs and the runs
that ended after the ledger's newest entry, and rebuilds a ledger that is missing or mirrors
another store.

This module knows SQLite only: no MLflow, no Ray, no torch (status and analysis import it).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

RUNNING, FINISHED, FAILED = "RUNNING", "FINISHED", "FAILED"
#: Terminal states, in order of precedence: a FINISHED run of a key outranks a FAILED one.
TERMINAL = (FINISHED, FAILED)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    key TEXT PRIMARY KEY, stage TEXT NOT NULL, name TEXT NOT NULL, status TEXT NOT NULL,
    run_id TEXT, reason TEXT, end_time INTEGER
);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class LedgerError(RuntimeError):
    """The ledger file cannot be read or written; the message names the file and the fix."""


@dataclass(frozen=True)
class Entry:
    """One job's state: its latest run and, once it ended, how and when (ms since epoch)."""

    key: str
    stage: str
    name: str
    status: str
    run_id: str | None = None
    reason: str | None = None
    end_time: int | None = None


class Ledger:
    """The ledger of one sweep (``<sweep>/ledger.db``), opened for reading or for the driver."""

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        self.path = Path(path)
        self.readonly = readonly
        self.db = self.connect()

    def __getstate__(self) -> dict[str, object]:
        # Ray Tune pickles its callbacks (the recorder holds the tracker, which holds this) for
        # its experiment state: the copy reopens the file, the connection does not travel.
        return {"path": self.path, "readonly": self.readonly}

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__init__(Path(str(state["path"])), readonly=bool(state["readonly"]))  # type: ignore[misc]

    def connect(self) -> sqlite3.Connection:
        try:
            if self.readonly:
                uri = f"{self.path.resolve().as_uri()}?mode=ro"
                return sqlite3.connect(uri, uri=True, isolation_level=None, timeout=30)
            db = sqlite3.connect(self.path, isolation_level=None, timeout=30)
            db.execute("PRAGMA synchronous=FULL")
            db.executescript(_SCHEMA)
            return db
        except sqlite3.Error as error:
            raise LedgerError(
                f"{self.path}: cannot open the job ledger ({error}); delete it and relaunch: "
                "it is rebuilt from MLflow"
            ) from None

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        try:
            self.db.execute("BEGIN IMMEDIATE")
            yield self.db
            self.db.execute("COMMIT")
        except sqlite3.Error as error:
            with contextlib.suppress(sqlite3.Error):
                self.db.execute("ROLLBACK")
            raise LedgerError(f"{self.path}: the job ledger refused a write ({error})") from None

    # --- what it mirrors -------------------------------------------------------------------

    def meta(self, name: str) -> object | None:
        row = self.db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return None if row is None else json.loads(row[0])

    def set_meta(self, values: dict[str, object]) -> None:
        with self.transaction() as db:
            db.executemany(
                "INSERT OR REPLACE INTO meta VALUES (?, ?)",
                [(k, json.dumps(v, sort_keys=True)) for k, v in values.items()],
            )

    def mirrors(self, store: dict[str, str]) -> bool:
        """Whether this ledger mirrors ``store`` (tracking URI and experiment id)."""
        return self.meta("store") == store

    def reset(self, store: dict[str, str]) -> None:
        """Forget every entry: the ledger is about to be rebuilt from ``store``."""
        with self.transaction() as db:
            db.execute("DELETE FROM jobs")
            db.execute("DELETE FROM meta")
        self.set_meta({"store": store})

    def set_planned(self, counts: dict[str, int]) -> None:
        """The planned jobs per stage, as of the latest launch (``status`` needs no plan)."""
        self.set_meta({"planned": counts})

    def planned(self) -> dict[str, int] | None:
        value = self.meta("planned")
        return {str(k): int(v) for k, v in value.items()} if isinstance(value, dict) else None

    # --- writes ----------------------------------------------------------------------------

    def started(self, key: str, stage: str, name: str, run_id: str) -> None:
        """A job's run opened: RUNNING until its end is written."""
        self.write([Entry(key, stage, name, RUNNING, run_id)])

    def write(self, entries: Iterable[Entry]) -> None:
        """Record ``entries`` as they are (the driver's own writes: the newest state wins)."""
        rows = [
            (e.key, e.stage, e.name, e.status, e.run_id, e.reason, e.end_time) for e in entries
        ]
        with self.transaction() as db:
            db.executemany("INSERT OR REPLACE INTO jobs VALUES (?, ?, ?, ?, ?, ?, ?)", rows)

    def forget(self, keys: Iterable[str]) -> None:
        """Drop the entries of ``keys``: their runs were retired, the jobs are pending again."""
        with self.transaction() as db:
            db.executemany("DELETE FROM jobs WHERE key = ?", [(key,) for key in keys])

    def merge(self, entries: Iterable[Entry]) -> int:
        """Fold in terminal runs found in MLflow; returns how many entries changed.

        For each key the ledger keeps a FINISHED run over a FAILED one, and of two runs of one
        status the one that ended last, so reading a run twice, or in any order, changes nothing.
        """
        current = self.entries()
        changed = [e for e in entries if e.status in TERMINAL and outranks(e, current.get(e.key))]
        best: dict[str, Entry] = {}
        for entry in changed:
            if outranks(entry, best.get(entry.key)):
                best[entry.key] = entry
        if best:
            self.write(best.values())
        return len(best)

    # --- reads -----------------------------------------------------------------------------

    def entries(self) -> dict[str, Entry]:
        rows = self.db.execute("SELECT * FROM jobs").fetchall()
        return {row[0]: Entry(*row) for row in rows}

    def lookup(self, keys: Iterable[str]) -> dict[str, Entry]:
        """The entries of ``keys`` that it holds."""
        found: dict[str, Entry] = {}
        keys = list(keys)
        for start in range(0, len(keys), 500):  # SQLite's bound-parameter limit
            chunk = keys[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self.db.execute(f"SELECT * FROM jobs WHERE key IN ({marks})", chunk)
            found.update({row[0]: Entry(*row) for row in rows})
        return found

    def running_run_ids(self) -> list[str]:
        """Runs the ledger saw open and not closed: their launch is running, or it died."""
        rows = self.db.execute("SELECT run_id FROM jobs WHERE status = ?", (RUNNING,))
        return [row[0] for row in rows if row[0]]

    def finished_run_ids(self, stage: str) -> set[str]:
        """The run of each FINISHED job of ``stage`` (what analysis must have)."""
        query = "SELECT run_id FROM jobs WHERE status = ? AND stage = ?"
        return {row[0] for row in self.db.execute(query, (FINISHED, stage)) if row[0]}

    def keys(self, status: str) -> set[str]:
        rows = self.db.execute("SELECT key FROM jobs WHERE status = ?", (status,))
        return {row[0] for row in rows}

    def counts(self) -> dict[str, Counter]:
        """Jobs per stage and state, counted by SQLite (no row reaches Python)."""
        counts: dict[str, Counter] = {}
        query = "SELECT stage, status, COUNT(*) FROM jobs GROUP BY stage, status"
        for stage, status, n in self.db.execute(query):
            counts.setdefault(stage, Counter())[status] = n
        return counts

    def failures(self) -> list[Entry]:
        query = "SELECT * FROM jobs WHERE status = ? ORDER BY stage, name"
        rows = self.db.execute(query, (FAILED,))
        return [Entry(*row) for row in rows]

    def watermark(self) -> int | None:
        """The newest end time it holds (ms): MLflow runs that ended before it are in here."""
        row = self.db.execute("SELECT MAX(end_time) FROM jobs").fetchone()
        return None if row is None or row[0] is None else int(row[0])


def outranks(new: Entry, old: Entry | None) -> bool:
    """Whether ``new`` (a terminal run) should replace ``old`` as a key's entry."""
    if old is None or old.status == RUNNING:
        return True
    if new.status != old.status:
        return new.status == FINISHED
    return (new.end_time or 0) > (old.end_time or 0)
