"""What a person watching a launch sees: per stage, jobs done / total, failures, elapsed time and
an ETA — a live bar on a terminal (tqdm), plain lines otherwise (CI, logs, ``nohup``).

The ETA comes from the rate since the first job finished, not since the stage began: the first
jobs of a stage carry its start-up (Ray workers, imports, data), so a naive ETA after one job
overstates the rest many times (issue #17: "1/162 … ETA 27:41" for a stage that took 3:04). No
ETA is shown before three jobs finished.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

#: Where the driver's progress lines go: ``print`` in scripts, a list in tests; None is the
#: console (stdout, with live bars when it is a terminal).
Write = Callable[[str], None]
#: Jobs that must finish before an ETA is shown.
ETA_AFTER = 3


def clock(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def console_line(line: str) -> None:
    """A line on stdout that does not break a live bar (tqdm keeps bars below it)."""
    from tqdm import tqdm

    tqdm.write(line, file=sys.stdout)
    sys.stdout.flush()


def writer(write: Write | None) -> Write:
    """The line writer for ``write`` (None: the console)."""
    return write or console_line


class Progress:
    """Counts a stage's finished jobs; prints at most one line per ``every_s`` seconds and
    always the last — or, on a terminal with ``write`` None, keeps one live bar."""

    def __init__(
        self,
        stage: str,
        total: int,
        *,
        every_s: float = 5.0,
        write: Write | None = None,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stage = stage
        self.total = total
        self.done = 0
        self.failed = 0
        self.every_s = every_s
        self.now = now
        self.started = now()
        self.first_finish: float | None = None
        self.last_print = -float("inf")
        self.write = writer(write)
        self.bar = live_bar(stage, total) if write is None and sys.stdout.isatty() else None

    def eta(self) -> str:
        finished = self.done + self.failed
        if finished >= self.total:
            return "done"
        if finished < min(ETA_AFTER, self.total) or self.first_finish is None:
            return "ETA -"
        rate = (finished - 1) / max(self.now() - self.first_finish, 1e-9)
        return f"ETA {clock((self.total - finished) / rate)}" if rate > 0 else "ETA -"

    def line(self) -> str:
        elapsed = self.now() - self.started
        finished = self.done + self.failed
        share = 100.0 * finished / self.total if self.total else 100.0
        return (
            f"[{self.stage}] {finished}/{self.total} ({share:.0f}%) · {self.failed} failed · "
            f"{clock(elapsed)} elapsed · {self.eta()}"
        )

    def tick(self, failed: bool = False) -> None:
        if failed:
            self.failed += 1
        else:
            self.done += 1
        if self.first_finish is None:
            self.first_finish = self.now()
        last = self.done + self.failed >= self.total
        if self.bar is not None:
            self.bar.set_postfix_str(f"{self.failed} failed · {self.eta()}", refresh=False)
            self.bar.update(1)
            if last:
                self.bar.close()
            return
        if last or self.now() - self.last_print >= self.every_s:
            self.last_print = self.now()
            self.write(self.line())


def live_bar(stage: str, total: int) -> Any:
    """A tqdm bar for a terminal: counts, elapsed, and our ETA in the postfix."""
    from tqdm import tqdm

    return tqdm(
        total=total,
        desc=f"[{stage}]",
        unit="job",
        bar_format="{desc} {bar} {n_fmt}/{total_fmt} · {elapsed} · {postfix}",
        dynamic_ncols=True,
        file=sys.stdout,
    )
