"""Cores left idle at the end of a stage, given to the tasks still running.

A stage starts its tasks with an equal share of the CPUs each (three sources on two cores: one
CPU each, two at a time). When all but the last have finished, that one would train alone on
one core with the other idle — on a laptop, a third of the quickstart's pretraining. On a
single-node cluster, once no task of the stage is waiting for a slot, :class:`CoreSharing`
splits the CPUs the finished tasks freed among the running ones (through a
:class:`~raysweep.protocol.ThreadGrants` actor each task reads once per epoch). It only hands
out CPUs Ray reports free, so another sweep's tasks that took them are never oversubscribed by
more than the rest of one epoch. On a multi-node cluster the freed CPUs are usually on other
nodes than the running tasks, so nothing is granted.
"""

from __future__ import annotations

from collections.abc import Iterable

from raysweep.driver.cluster import largest_node_cpus
from raysweep.plan import Job
from raysweep.protocol import ThreadGrants


class CoreSharing:
    """Threads granted to the running tasks of one stage, raised as its other tasks finish."""

    def __init__(self, keys: Iterable[str], cpus_each: int) -> None:
        import ray

        self.running = set(keys)
        self.cpus_each = cpus_each
        self.granted = {key: cpus_each for key in self.running}
        self.enabled = sum(1 for node in ray.nodes() if node["Alive"]) == 1
        self.actor = ray.remote(ThreadGrants).options(num_cpus=0).remote()

    def finished(self, job: Job) -> None:
        """A task ended (result or failure): its CPUs may go to the others."""
        self.running.discard(job.key)
        self.granted.pop(job.key, None)
        self.refresh()

    def refresh(self) -> None:
        """Grant each running task its share of the CPUs free now (called every poll)."""
        import ray

        if not self.enabled or not self.running:
            return
        node_cpus = largest_node_cpus()
        reserved = len(self.running) * self.cpus_each
        if reserved > node_cpus:  # tasks still wait for a slot: freed CPUs are theirs
            return
        free = min(node_cpus - reserved, int(ray.available_resources().get("CPU", 0)))
        threads = self.cpus_each + free // len(self.running)
        for key in self.running:
            if threads > self.granted[key]:
                self.granted[key] = threads
                self.actor.grant.remote(key, threads)

    def shutdown(self) -> None:
        import ray

        ray.kill(self.actor)
