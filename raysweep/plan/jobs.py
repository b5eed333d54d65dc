"""A job and the plan that holds them: the unit of work every later layer schedules and records.

A job's key is a hash of its normalised configuration (never of its display name), so the same
work always has the same key: launching a spec twice, resuming, or a second sweep that shares a
source model all find the work already done.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from raysweep.schema import subset_label
from raysweep.spec import SweepSpec

#: Bump when the meaning of a job's configuration changes, so that old results are not reused.
PROTOCOL_VERSION = 1
STAGES = ("pretrain", "probe", "search", "finetune")


def job_key(stage: str, config: dict[str, Any]) -> str:
    """First 16 hex digits of SHA-256 over the canonical JSON of (protocol, stage, config)."""
    payload = json.dumps(
        {"protocol": PROTOCOL_VERSION, "stage": stage, "config": config},
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Job:
    """One unit of work: its stage, stable key, JSON-able config and the axes to record."""

    stage: str
    key: str
    name: str
    config: dict[str, Any]
    axes: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Plan:
    spec: SweepSpec
    jobs: dict[str, tuple[Job, ...]]

    def __iter__(self) -> Iterator[Job]:
        for stage in STAGES:
            yield from self.jobs.get(stage, ())

    @property
    def total(self) -> int:
        return sum(len(jobs) for jobs in self.jobs.values())

    def keys(self) -> set[str]:
        return {job.key for job in self}

    def architectures(self) -> dict[str, str]:
        """Source key → architecture of every source of the plan."""
        return {job.key: job.config["architecture"] for job in self.jobs.get("pretrain", ())}


def cell_name(source: str, target: str, size: int | None, blocks: int | str) -> str:
    """A grid cell's short run name: ``l2_0.25→digits n400 b1`` (full values are params)."""
    return f"{source}→{target} n{subset_label(size)} b{blocks}"
