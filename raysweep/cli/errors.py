"""How a failed command reaches the user: one line (``raysweep: error: …``) naming the problem
and the fix, exit status 2; a spec with several problems lists each on its own line. A full
disk, a permission problem and an MLflow store that refuses are user errors too (with the fix);
anything else is a bug and shows its traceback. ``--debug`` shows the traceback always.
"""

from __future__ import annotations

import errno
import sys

from raysweep.driver.cluster import ClusterError
from raysweep.ledger import LedgerError
from raysweep.schema import NothingToAnalyze, TrackingError
from raysweep.spec import SpecError
from raysweep.sweepdir import SweepDirError

USER_ERRORS: tuple[type[BaseException], ...] = (
    SpecError,
    SweepDirError,
    TrackingError,
    ClusterError,
    FileNotFoundError,
    ValueError,
    NothingToAnalyze,
    LedgerError,
)


def environment_problem(error: BaseException) -> str | None:
    """One line with the fix for a failure of the machine or the tracking store, not of raysweep:
    a full disk, a permission, an MLflow store that refuses. None for anything else (a bug)."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        where = f" for {error.filename}" if error.filename else ""
        return (
            f"no space left on the device{where}; free some, then run the same command again "
            "(nothing recorded is lost)"
        )
    if isinstance(error, OSError) and error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        target = error.filename or "a file"
        return f"cannot write {target} ({error.strerror}); pass a writable --root"
    module = type(error).__module__.split(".")[0]
    if module in ("mlflow", "sqlalchemy"):
        text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if "disk is full" in text or "No space left" in text:
            return "the tracking database's disk is full; free some, then run the command again"
        return (
            f"the MLflow tracking store refused ({text[:300]}); check --tracking-uri, that the "
            "store is reachable and writable, then run the command again"
        )
    return None


def print_error(message: str) -> int:
    """``raysweep: error: <first line>``, further lines (a spec's other problems) indented;
    runs of whitespace inside a line collapsed. Returns the exit status, 2."""
    lines = [" ".join(line.split()) for line in message.strip().splitlines() if line.strip()]
    print(f"raysweep: error: {lines[0] if lines else 'failed'}", file=sys.stderr)
    for line in lines[1:]:
        print(f"  {line}", file=sys.stderr)
    return 2
