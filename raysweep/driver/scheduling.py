"""How stages get their work back from Ray: task results as they finish, failures as one line,
and Tune runs without Tune's own console chatter."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import Any

from raysweep.driver.progress import Progress, Write
from raysweep.plan import Job


def collect_tasks(
    stage: str,
    refs: dict[Any, Job],
    on_result: Callable[[Job, Any], None],
    write: Write,
) -> list[tuple[Job, str]]:
    """Hand each task's result to ``on_result`` as it finishes; return the failed jobs.

    A failed task is reported (with its innermost cause), never raised: the sweep goes on.
    """
    import ray

    progress = Progress(stage, len(refs), write=write, every_s=0.0)
    failures: list[tuple[Job, str]] = []
    while refs:
        done, _ = ray.wait(list(refs), num_returns=1)
        job = refs.pop(done[0])
        try:
            result = ray.get(done[0])
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
