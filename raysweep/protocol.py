"""What the driver and its Ray workers agree on: the worker context and the result keys.

The driver builds a :class:`WorkerContext` from the spec and the sweep folder and hands it to
every task and trial; workers answer with plain dicts whose bookkeeping keys are named here.
Both sides import this module, so it imports neither of them, nor torch (Ray only inside
:func:`node_identity`, which runs on workers).
"""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raysweep.store import Store

#: A job failure a worker reports instead of raising (the driver marks the run FAILED).
ERROR_KEY = "raysweep_error"
#: Beside ERROR_KEY when the failure was running out of GPU memory: under resources.gpu auto
#: the driver runs the job again at fewer trials per GPU instead (raysweep.driver.gpu_packing).
OOM_KEY = "raysweep_out_of_memory"
#: Where a job ran, in its result: the driver tags the job's run with them (schema.NODE_TAG).
NODE_KEY = "raysweep_node"
HOST_KEY = "raysweep_host"
#: Keys a packed trial adds to its results: the job whose metrics a result carries, whether
#: that job ended with it (the driver closes its run), and the key of a job starting now (the
#: driver opens its run). A job's end and the next one's start share a result: one result per
#: evaluation, no extra round trips (each ``tune.report`` waits for the driver).
JOB_KEY = "raysweep_key"
DONE_KEY = "raysweep_done"
START_KEY = "raysweep_start"
#: Events a Ray task sends while it runs (raysweep.driver.live): its work began (with where);
#: one epoch's metrics (``row`` = {"epoch": e, metric: value, …}).
STARTED_EVENT = "started"
EPOCH_EVENT = "epoch"


@dataclass(frozen=True)
class WorkerContext:
    """What every worker needs besides its job: where data and the store are, how many threads."""

    store_root: str
    data_root: str | None
    download: bool
    threads: int
    #: Where trials keep their resumable state and attempt logs (the sweep folder's trials/).
    trials_root: str
    #: A trial saves its state when this many seconds passed since its last save.
    checkpoint_every_s: float = 60.0
    #: resources.gpu > 0 or auto: fine-tune on the GPU Ray assigned (CPU if it sees none).
    gpu: bool = False
    #: resources.bf16 / resources.channels_last (see
    #: :func:`raysweep.worker.finetune.speed_settings`).
    bf16: bool = False
    channels_last: bool = False

    @property
    def store(self) -> Store:
        return Store(Path(self.store_root))

    def trial_dir(self, key: str) -> Path:
        return Path(self.trials_root) / key


def thread_grant_file(trials_root: str | Path, key: str) -> Path:
    """Where the driver writes how many threads a running task of ``key`` may use now, once
    others on its (single) node finished and left cores idle (raysweep.driver.cores)."""
    return Path(trials_root) / f"{key}.threads"


class EventSender:
    """What a task calls to report while it runs, into the stage's inbox (a Ray queue the
    driver drains); without an inbox (a plain call, a test) nothing is sent.

    Sends do not wait: a task blocked in ``ray.get`` lends its CPU to Ray, which starts another
    task on it (Ray's nested-task rule), so a blocking send per epoch ran three sources at once
    on two cores. :meth:`flush` waits once, at the task's end, so the driver has every event
    before the task's result. With ``grant_file`` the task can read how many threads it may
    use now (:meth:`granted_threads`), a file read, not a Ray call, for the same reason.
    """

    def __init__(self, inbox: Any, key: str, grant_file: Path | None = None) -> None:
        self.inbox = inbox
        self.key = key
        self.grant_file = grant_file

    def granted_threads(self, current: int) -> int:
        """The threads the driver grants this task now (``current`` without a grant)."""
        if self.grant_file is None:
            return current
        try:
            return max(current, int(self.grant_file.read_text()))
        except (OSError, ValueError):  # none yet, or being replaced
            return current

    def flush(self) -> None:
        """Wait until the inbox holds every event sent (the queue's actor runs calls in order)."""
        if self.inbox is not None:
            import ray

            ray.get(self.inbox.actor.qsize.remote())

    def started(self) -> None:
        self.send(STARTED_EVENT, node_identity())

    def epoch(self, row: dict[str, Any]) -> None:
        self.send(EPOCH_EVENT, {"row": row})

    def send(self, kind: str, payload: dict[str, Any]) -> None:
        if self.inbox is not None:
            self.inbox.actor.put_nowait.remote({"key": self.key, "event": kind, **payload})


def node_identity() -> dict[str, str]:
    """The Ray node id and hostname of this process ("none" outside Ray)."""
    import ray

    node = ray.get_runtime_context().get_node_id() if ray.is_initialized() else "none"
    return {NODE_KEY: node, HOST_KEY: socket.gethostname()}


#: ``<trials_root>/<key>/done``: a packed job whose run the driver has closed (see mark_done).
DONE_FILE = "done"


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


#: ``<trials_root>/<key>/attempts.log`` while a trial may run; ``<trials_root>/attempts.log``
#: for the trials the driver recorded (:func:`fold_finished_trials`).
ATTEMPTS_LOG = "attempts.log"


def fold_finished_trials(trials_root: Path, keys: Iterable[str]) -> int:
    """Fold the folders of trials whose runs the driver closed into one log; returns how many.

    Once its run is recorded, a finished trial's folder holds only its attempts log (and a
    packed job's done marker): its state was cleared when it ended. Thousands of such folders
    cost a round trip each on NFS/EFS (14,400 jobs left 14,400), so their attempt lines are
    appended to ``<trials_root>/attempts.log`` (fsync'd) and the folders removed. A driver
    killed in between leaves a folder whose lines are appended again by the next fold:
    :func:`attempts_by_key` reads each line once.
    """
    folders = [Path(trials_root) / key for key in keys]
    folders = [folder for folder in folders if folder.is_dir()]
    if not folders:
        return 0
    lines = []
    for folder in folders:
        log = folder / ATTEMPTS_LOG
        if log.is_file():
            lines += [line for line in log.read_text().splitlines() if line.strip()]
    if lines:
        with open(Path(trials_root) / ATTEMPTS_LOG, "a") as handle:
            handle.write("\n".join(lines) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)
    return len(folders)


def attempts_by_key(trials_root: Path) -> dict[str, list[str]]:
    """Every start of every trial, per job key, in order: the lines ``time key pid=…`` of the
    folded log and of the folders still there (a line read twice counts once)."""
    root = Path(trials_root)
    logs = [root / ATTEMPTS_LOG, *sorted(root.glob(f"*/{ATTEMPTS_LOG}"))]
    seen: set[str] = set()
    found: dict[str, list[str]] = {}
    for log in logs:
        if not log.is_file():
            continue
        for line in log.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3 and line not in seen:
                seen.add(line)
                found.setdefault(parts[1], []).append(line)
    for lines in found.values():
        lines.sort(key=lambda line: float(line.split()[0]))
    return found
