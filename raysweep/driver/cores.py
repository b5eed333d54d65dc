"""Cores left idle at the end of a stage, given to the tasks still running.

A stage starts its tasks with an equal share of the CPUs each (three sources on two cores: one
CPU each, two at a time). When all but the last have finished, that one would train alone on
one core with the other idle — on a laptop, a third of the quickstart's pretraining. On a
single-node cluster, once no task of the stage is waiting for a slot, :class:`CoreSharing`
splits the CPUs the finished tasks freed among the running ones: it writes each one's grant
into a file (:func:`~raysweep.protocol.thread_grant_file`) that the task reads once per epoch,
a file because a task waiting on a Ray call lends its CPU to another task. It only hands out
CPUs Ray reports free, so another sweep's tasks that took them are never oversubscribed by
more than the rest of one epoch. On a multi-node cluster the freed CPUs are usually on other
nodes than the running tasks, so nothing is granted.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from raysweep.driver.cluster import alive_nodes, largest_node_cpus
from raysweep.plan import Job
from raysweep.protocol import thread_grant_file
from raysweep.store import write_text_atomic


class CoreSharing:
    """Threads granted to the running tasks of one stage, raised as its other tasks finish."""

    def __init__(self, keys: Iterable[str], cpus_each: float, folder: Path) -> None:
        self.running = set(keys)
        self.cpus_each = cpus_each
        self.folder = Path(folder)
        self.granted = {key: max(1, int(cpus_each)) for key in self.running}
        self.enabled = alive_nodes() == 1

    def finished(self, job: Job) -> None:
        """A task ended (result or failure): its CPUs may go to the others."""
        self.running.discard(job.key)
        self.granted.pop(job.key, None)
        thread_grant_file(self.folder, job.key).unlink(missing_ok=True)
        self.refresh()

    def refresh(self) -> None:
        """Grant each running task its share of the CPUs free now (called every poll)."""
        import ray

        if not self.enabled or not self.running:
            return
        node_cpus = largest_node_cpus()
        reserved = len(self.running) * self.cpus_each
        if reserved > node_cpus + 1e-9:  # tasks still wait for a slot: freed CPUs are theirs
            return
        free = ray.available_resources().get("CPU", 0.0)
        usable = min(float(node_cpus), reserved + free)  # never what another sweep holds
        threads = max(1, int(usable + 1e-9) // len(self.running))
        for key in self.running:
            if threads > self.granted[key]:
                self.granted[key] = threads
                self.folder.mkdir(parents=True, exist_ok=True)
                write_text_atomic(thread_grant_file(self.folder, key), str(threads))

    def shutdown(self) -> None:
        for key in list(self.granted):
            thread_grant_file(self.folder, key).unlink(missing_ok=True)
