"""Cores freed at the end of a stage go to the tasks still running (issue #17: the last source
of the quickstart trained alone on one of two cores)."""

from __future__ import annotations

import sys
import time
from typing import Any

import pytest

from raysweep.driver.cores import CoreSharing
from raysweep.driver.scheduling import collect_tasks
from raysweep.plan import Job
from raysweep.protocol import EventSender

pytestmark = pytest.mark.usefixtures("local_ray")


def threads_seen(key: str, grants: Any, seconds: float) -> list[int]:
    """A task that reads its grant every 50 ms for ``seconds``, the way a source does per
    epoch, starting from the 1 thread it was scheduled with."""
    events = EventSender(None, key, grants)
    seen, threads = [], 1
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        threads = events.granted_threads(threads)
        seen.append(threads)
        time.sleep(0.05)
    return seen


class Quiet:
    def tick(self, failed: bool = False) -> None:
        pass


def job(name: str) -> Job:
    return Job(stage="pretrain", key=name, name=name, config={})


def test_the_last_running_task_gets_the_core_the_others_freed() -> None:
    import ray
    from ray import cloudpickle

    # tests/ is not on the workers' path: ship this module by value
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    jobs = {name: job(name) for name in ("short", "long")}
    cores = CoreSharing(jobs, cpus_each=1)
    task = ray.remote(threads_seen).options(num_cpus=1)
    refs = {
        task.remote("short", cores.actor, 0.5): jobs["short"],
        task.remote("long", cores.actor, 6.0): jobs["long"],
    }
    results: dict[str, list[int]] = {}
    failed = collect_tasks(
        Quiet(),  # type: ignore[arg-type]
        refs,
        lambda j, seen: results.__setitem__(j.key, seen),
        on_end=cores.finished,
        on_poll=cores.refresh,
    )
    cores.shutdown()
    assert failed == []
    assert set(results["short"]) == {1}  # two tasks on two cores: nothing to give
    assert results["long"][0] == 1 and results["long"][-1] == 2  # then both cores


def test_no_grant_while_tasks_still_wait_for_a_slot() -> None:
    cores = CoreSharing(["a", "b", "c"], cpus_each=1)
    cores.finished(job("a"))  # b and c run on the 2 cores: none is free
    assert cores.granted == {"b": 1, "c": 1}
    cores.shutdown()
