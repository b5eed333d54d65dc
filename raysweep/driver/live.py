"""Runs that live while their task runs: a source's run opens when its Ray task starts and takes
each epoch's metrics as they come, so a researcher watches a 10-hour source train in the UI.

Workers never write to MLflow: a task sends small events into an :class:`Inbox` (a Ray queue
actor of no CPU) — ``started`` when its work begins, ``epoch`` with each epoch's metrics — and
the driver, the only MLflow writer, drains it between waits on the tasks. A task retried after
a lost node sends its events again: the run is reused and epochs already logged are skipped.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from raysweep.driver.tracker import SweepTracker
from raysweep.plan import Job
from raysweep.protocol import EPOCH_EVENT, HOST_KEY, NODE_KEY


class Inbox:
    """A Ray queue the tasks of one stage report their events into."""

    def __init__(self) -> None:
        from ray.util.queue import Queue

        # No CPU: the queue must never wait for, or hold, a slot a task could use.
        self.queue = Queue(actor_options={"num_cpus": 0})

    def drain(self) -> list[dict[str, Any]]:
        """Every event sent so far, in order, without waiting."""
        size = self.queue.qsize()
        return self.queue.get_nowait_batch(size) if size else []

    def shutdown(self) -> None:
        self.queue.shutdown()


class LiveRuns:
    """The runs of one stage's jobs, opened when their work starts (or at the latest when their
    result arrives) and fed each epoch once."""

    def __init__(
        self,
        tracker: SweepTracker,
        jobs: dict[str, Job],
        on_epoch: Callable[[Job, dict[str, Any]], None] | None = None,
    ) -> None:
        self.tracker = tracker
        self.jobs = jobs
        #: Told each streamed epoch (the pretrain stage prints it: a person sees training).
        self.on_epoch = on_epoch
        self.run_ids: dict[str, str] = {}
        self.last_epoch: dict[str, int] = {}
        self.nodes: dict[str, str] = {}

    def run_of(self, key: str) -> str:
        """The job's run, created now if its work has not said it started."""
        if key not in self.run_ids:
            self.run_ids[key] = self.tracker.start_job(self.jobs[key])
        return self.run_ids[key]

    def on_event(self, event: dict[str, Any]) -> None:
        """Apply a task's event: open the run, tag where it runs, log an epoch."""
        key = str(event.get("key"))
        if key not in self.jobs:  # a source only rebuilt in the store has no run to feed
            return
        run_id = self.run_of(key)
        self.tag_node(key, run_id, event)
        if event.get("event") == EPOCH_EVENT:
            self.log_epochs(key, [event["row"]])
            if self.on_epoch is not None:
                self.on_epoch(self.jobs[key], event["row"])

    def tag_node(self, key: str, run_id: str, where: dict[str, Any]) -> None:
        node = where.get(NODE_KEY)
        if node is not None and self.nodes.get(key) != node:
            self.tracker.tag_node(run_id, str(node), str(where.get(HOST_KEY, "")))
            self.nodes[key] = str(node)

    def log_epochs(self, key: str, rows: list[dict[str, Any]]) -> None:
        """Log the rows (``{"epoch": e, metric: value, …}``) not logged yet, in one batch."""
        fresh = [r for r in rows if int(r["epoch"]) > self.last_epoch.get(key, 0)]
        if not fresh:
            return
        steps = [(int(r["epoch"]), {k: v for k, v in r.items() if k != "epoch"}) for r in fresh]
        self.tracker.log_steps(self.run_of(key), steps)
        self.last_epoch[key] = max(step for step, _ in steps)
