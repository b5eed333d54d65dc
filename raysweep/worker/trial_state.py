"""A fine-tune trial's footprint in the sweep folder: resumable state and its attempts log.

<sweep>/trials/<key>/state.pt       the last saved FinetuneState and the metrics reported
<sweep>/trials/<key>/attempts.log   one line per start of the trial
<sweep>/trials/<key>/done           a packed job the driver has recorded (raysweep.protocol)
<sweep>/trials/attempts.log         the attempts of recorded trials, their folders removed
                                   (raysweep.protocol.fold_finished_trials)
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import torch

from raysweep.protocol import ATTEMPTS_LOG
from raysweep.train.finetuning import FinetuneState


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
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        torch.save({"state": state.to_dict(), "reported": self.reported}, tmp)
        os.replace(tmp, self.path)
        self.last_save = time.monotonic()

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


def log_attempt(folder: Path, key: str) -> int:
    """One line per start of a trial: how often a job's training began (resume tests read it).
    Returns the number of starts, this one included."""
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / ATTEMPTS_LOG
    with open(log, "a") as handle:
        handle.write(f"{time.time():.3f} {key} pid={os.getpid()}\n")
    return len(log.read_text().splitlines())
