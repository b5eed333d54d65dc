"""Progress lines for long stages: jobs done / total, failures, elapsed time and ETA."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

#: Where the driver's progress lines go (``print`` in the CLI, a list in tests).
Write = Callable[[str], None]


def clock(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class Progress:
    """Prints at most one line per ``every_s`` seconds, and always the last one."""

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
        self.last_print = -float("inf")
        self.write = write or (lambda line: print(line, file=sys.stdout, flush=True))

    def line(self) -> str:
        elapsed = self.now() - self.started
        finished = self.done + self.failed
        share = 100.0 * finished / self.total if self.total else 100.0
        if 0 < finished < self.total:
            eta = f"ETA {clock(elapsed / finished * (self.total - finished))}"
        else:
            eta = "ETA -" if finished < self.total else "done"
        return (
            f"[{self.stage}] {finished}/{self.total} ({share:.0f}%) · {self.failed} failed · "
            f"{clock(elapsed)} elapsed · {eta}"
        )

    def tick(self, failed: bool = False) -> None:
        if failed:
            self.failed += 1
        else:
            self.done += 1
        last = self.done + self.failed >= self.total
        if last or self.now() - self.last_print >= self.every_s:
            self.last_print = self.now()
            self.write(self.line())
