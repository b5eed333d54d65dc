"""How stages get their work back from Ray: task results as they finish, failures as one line,
and Tune runs without Tune's own console chatter."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import Any

from raysweep.driver.live import Inbox, LiveRuns
from raysweep.driver.progress import Progress
from raysweep.plan import Job

#: Seconds between looks at a stage's inbox while its tasks run.
POLL_S = 1.0


def collect_tasks(
    progress: Progress,
    refs: dict[Any, Job],
    on_result: Callable[[Job, Any], None],
    runs: LiveRuns | None = None,
    inbox: Inbox | None = None,
    on_end: Callable[[Job], None] | None = None,
    on_poll: Callable[[], None] | None = None,
) -> list[tuple[Job, str]]:
    """Hand each task's result to ``on_result`` as it finishes; return the failed jobs.

    With an ``inbox``, the events its tasks send (started, epochs) go to ``runs`` as they
    arrive, always before the result of the task that sent them. A failed task is reported
    (with its innermost cause), never raised: the sweep goes on. ``on_end`` hears of every
    task that ended, succeeded or failed, before its result is handled; ``on_poll`` is called
    once per wait (at least every ``POLL_S``).
    """
    import ray

    failures: list[tuple[Job, str]] = []
    while refs:
        done, _ = ray.wait(list(refs), num_returns=1, timeout=POLL_S if inbox or on_poll else None)
        if inbox is not None and runs is not None:
            for event in inbox.drain():
                runs.on_event(event)
        if on_poll is not None:
            on_poll()
        for ref in done:
            job = refs.pop(ref)
            if on_end is not None:
                on_end(job)
            try:
                result = ray.get(ref)
            except Exception as error:
                failures.append((job, one_line(error)))
                progress.tick(failed=True)
                continue
            on_result(job, result)
            progress.tick()
    return failures


def one_line(error: BaseException) -> str:
    """The innermost cause of a (possibly Ray-wrapped) exception, on one line."""
    cause = getattr(error, "cause", None) or error
    text = f"{type(cause).__name__}: {cause}"
    return " ".join(text.split())[:500]


@contextlib.contextmanager
def quiet_result_loading() -> Iterator[None]:
    """Tune's result grid warns for every trial without result.json, and Tune logs where it
    saved its state after every experiment: MLflow and our progress lines are the record."""
    loggers = [
        (logging.getLogger("ray.tune.analysis.experiment_analysis"), logging.ERROR),
        (logging.getLogger("ray.tune.tune"), logging.WARNING),
    ]
    levels = [logger.level for logger, _ in loggers]
    for logger, level in loggers:
        logger.setLevel(level)
    try:
        yield
    finally:
        for (logger, _), level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
