"""Cores freed at the end of a stage go to the tasks still running (issue #17: the last source
of the quickstart trained alone on one of two cores)."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import pytest
from ray import cloudpickle

from raysweep.driver.cores import CoreSharing
from raysweep.driver.scheduling import collect_tasks
from raysweep.plan import Job
from raysweep.protocol import EventSender, thread_grant_file

pytestmark = pytest.mark.usefixtures("local_ray")
# tests/ is not on the workers' path: ship this module's task functions by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def threads_seen(key: str, folder: Path, seconds: float) -> list[int]:
    """A task that reads its grant every 50 ms for ``seconds``, the way a source does per
    epoch, starting from the 1 thread it was scheduled with."""
    events = EventSender(None, key, thread_grant_file(folder, key))
    seen, threads = [], 1
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        threads = events.granted_threads(threads)
        seen.append(threads)
        time.sleep(0.05)
    return seen


def chatty(queue: Any, key: str, folder: str) -> tuple[float, float]:
    """A task that sends 20 events over ~1 s, as a source sends its epochs."""
    events = EventSender(queue, key)
    start = time.time()
    for i in range(20):
        events.epoch({"epoch": i})
        time.sleep(0.05)
    events.flush()
    return start, time.time()


class Quiet:
    def tick(self, failed: bool = False) -> None:
        pass


def job(name: str) -> Job:
    return Job(stage="pretrain", key=name, name=name, config={})


def test_the_last_running_task_gets_the_core_the_others_freed(tmp_path: Path) -> None:
    import ray

    jobs = {name: job(name) for name in ("short", "long")}
    cores = CoreSharing(jobs, cpus_each=1, folder=tmp_path)
    task = ray.remote(threads_seen).options(num_cpus=1)
    refs = {
        task.remote("short", tmp_path, 0.5): jobs["short"],
        task.remote("long", tmp_path, 6.0): jobs["long"],
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
    assert not list(tmp_path.glob("*.threads"))  # grants are gone with the stage


def test_no_grant_while_tasks_still_wait_for_a_slot(tmp_path: Path) -> None:
    cores = CoreSharing(["a", "b", "c"], cpus_each=1, folder=tmp_path)
    cores.finished(job("a"))  # b and c run on the 2 cores: none is free
    assert cores.granted == {"b": 1, "c": 1} and not list(tmp_path.glob("*.threads"))
    cores.shutdown()


def test_sending_events_never_lends_the_tasks_cpu(tmp_path: Path) -> None:
    """Three sources on two cores: a task blocked in ray.get lends its CPU and Ray starts a
    third task beside the two (measured in the quickstart); events must not block."""
    import ray

    from raysweep.driver.live import Inbox

    inbox = Inbox()
    task = ray.remote(chatty).options(num_cpus=1)
    refs = [task.remote(inbox.queue, f"k{i}", str(tmp_path)) for i in range(3)]
    spans = ray.get(refs)
    events = inbox.drain()
    inbox.shutdown()
    assert len(events) == 3 * 20  # every event arrived before the results
    starts = sorted(start for start, _ in spans)
    ends = sorted(end for _, end in spans)
    assert starts[2] >= ends[0] - 0.05  # the third started only once one of two ended
