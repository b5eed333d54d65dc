"""A fine-tune trial's footprint in the sweep folder: resumable state and its attempts log.

<sweep>/trials/<key>/state.pt       the last saved FinetuneState and the metrics reported
<sweep>/trials/<key>/attempts.log   one line per start of the trial
<sweep>/trials/<key>/done           a packed job the driver has recorded (see mark_done)

Torch is imported only inside TrialState's methods: the driver imports this module for the
packing markers and must stay torch-free.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from raysweep.train.finetuning import FinetuneState

#: Keys a packed trial adds to its results: the job whose metrics a result carries, whether
#: that job ended with it (the driver closes its run), and the key of a job starting now (the
#: driver opens its run). A job's end and the next one's start share a result: one result per
#: evaluation, no extra round trips (each ``tune.report`` waits for the driver).
JOB_KEY = "raysweep_key"
DONE_KEY = "raysweep_done"
START_KEY = "raysweep_start"
DONE_FILE = "done"


class TrialState:
    """A trial's resumable state on disk: the last FinetuneState and the metrics reported so far.

    Saved at most every ``checkpoint_every_s`` seconds (atomically), so short trials never pay
    for it; removed when the trial ends. A resumed trial first re-reports the saved metrics,
    so its MLflow run holds the whole history, then continues from the saved epoch.
    """

    def __init__(self, folder: Path, every_s: float) -> None:
        self.path = folder / "state.pt"
        self.every_s = every_s
        self.last_save = time.monotonic()
        self.reported: list[dict[str, Any]] = []

    def load(self) -> tuple[FinetuneState | None, list[dict[str, Any]]]:
        import torch

        from raysweep.train.finetuning import FinetuneState

        if not self.path.is_file():
            return None, []
        try:
            saved = torch.load(self.path, weights_only=True)
            return FinetuneState.from_dict(saved["state"]), list(saved["reported"])
        except Exception:  # an unreadable state only costs the epochs it held
            self.path.unlink(missing_ok=True)
            return None, []

    def maybe_save(self, state: FinetuneState) -> None:
        if time.monotonic() - self.last_save < self.every_s:
            return
        import torch

        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        torch.save({"state": state.to_dict(), "reported": self.reported}, tmp)
        os.replace(tmp, self.path)
        self.last_save = time.monotonic()

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


def log_attempt(folder: Path, key: str) -> None:
    """One line per start of a trial: how often a job's training began (resume tests read it)."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "attempts.log", "a") as handle:
        handle.write(f"{time.time():.3f} {key} pid={os.getpid()}\n")


def mark_done(folder: Path) -> None:
    """Mark a packed job done, so a retried bundle skips it.

    Called only after the job's "done" report returned: a function trainable's
    ``tune.report`` returns once the driver has processed the result (callbacks included) and
    asked for the next one, so the marker never exists for a job whose run is not yet closed
    in MLflow within this experiment. A relaunch clears the markers of its pending jobs
    (:func:`clear_done`), since a killed driver may have died between the two.
    """
    folder.mkdir(parents=True, exist_ok=True)
    (folder / DONE_FILE).touch()


def is_done(folder: Path) -> bool:
    return (folder / DONE_FILE).is_file()


def clear_done(folder: Path) -> None:
    (folder / DONE_FILE).unlink(missing_ok=True)
