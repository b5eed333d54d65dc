"""One launch per sweep at a time: an exclusive lock on ``<sweep>/launch.lock``, held for the
whole of ``launch`` / ``resume``.

Two drivers of one sweep would both train its sources, both run every trial (two FINISHED runs
per job), and each would retire the other's RUNNING runs as stale. The lock is ``flock`` on a
file in the sweep folder: on a local disk, and on NFSv4 (AWS EFS, most NAS) where Linux maps
``flock`` to NFS byte-range locks; not on mounts with ``nolock`` or ``local_lock=all``. The
kernel drops it when the holder dies, however it dies, so a crashed launch never blocks the
next. The holder writes who it is into the file, so a refused launch can name it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import socket
import uuid
from collections.abc import Iterator
from typing import IO

from raysweep.sweepdir import SweepDir, SweepDirError


class SweepBusy(SweepDirError):
    """Another launch holds the sweep; the message names it."""


def new_launch_id() -> str:
    return uuid.uuid4().hex[:12]


def holder_text(handle: IO[str]) -> str:
    """Who holds the lock, from what it wrote into the file."""
    handle.seek(0)
    try:
        who = json.loads(handle.read() or "{}")
    except ValueError:
        who = {}
    if not who:
        return "another process"
    return (
        f"launch {who.get('launch', '?')} (pid {who.get('pid', '?')} on {who.get('host', '?')}, "
        f"since {who.get('started', '?')})"
    )


@contextlib.contextmanager
def launch_lock(sweep: SweepDir, launch_id: str) -> Iterator[None]:
    """Hold the sweep for this launch, or fail at once with :class:`SweepBusy`."""
    sweep.create()  # one line if the root cannot be written
    with open(sweep.lock_file, "a+") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SweepBusy(
                f"sweep '{sweep.name}' is being run by {holder_text(handle)}; wait for it to "
                f"finish (`raysweep status {sweep.name}`), or stop that process and resume"
            ) from None
        try:
            started = dt.datetime.now().astimezone().isoformat(timespec="seconds")
            who = {"launch": launch_id, "pid": os.getpid(), "host": socket.gethostname()}
            handle.seek(0)
            handle.truncate()
            handle.write(json.dumps({**who, "started": started}))
            handle.flush()
            os.fsync(handle.fileno())
            yield
        finally:
            handle.seek(0)
            handle.truncate()
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def launch_running(sweep: SweepDir) -> bool:
    """Whether a launch holds the sweep now (read-only: the lock file is never created)."""
    try:
        handle = open(sweep.lock_file)  # noqa: SIM115 - closed below, whatever happens
    except OSError:
        return False
    with handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        return False
