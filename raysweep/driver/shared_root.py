"""On a multi-node Ray cluster, the runs root must be one filesystem that every node sees.

Everything a sweep keeps between its processes lives under the root (``--root`` or
``$RAYSWEEP_ROOT``): source checkpoints and subsets in the store, which pretraining tasks write
and fine-tune trials on other nodes read; each trial's resumable state (``trials/<key>/``);
probe outputs; Ray Tune's experiment state (``storage_path``); and ``sweep.json``, which
``resume`` reads. A trial scheduled on a node that does not see the store fails with a missing
checkpoint, and a trial's saved state is lost when it is retried on another node.

The root must therefore be a *shared POSIX filesystem* mounted at the same path on every node
(AWS EFS, NFS, FSx for Lustre). An object-store URI such as ``s3://…`` is not offered: Ray Tune
alone could write its experiment state there, but the store, the trial state and the sweep
folder are written with atomic renames (write a temporary file, then ``os.replace``) so that a
crash leaves the old file or the new one, never half of one, and object stores have no atomic
rename. Splitting the root in two (Tune on S3, the rest on a filesystem) would still need the
filesystem, so it would add a second place to configure without removing the first.

:func:`check_shared_root` proves the property before anything is recorded: the driver writes a
marker file with a random token under the root, and one tiny Ray task pinned to each alive node
(``NodeAffinitySchedulingStrategy(soft=False)``) reads it back. Nodes that join later (an
autoscaler adding GPU workers) are not checked; mount the shared root in the node setup
(``cluster.yaml`` does) so that every node has it.
"""

from __future__ import annotations

import secrets
import socket
from dataclasses import dataclass
from pathlib import Path

from raysweep.sweepdir import SweepDirError

#: Folder under the root for the markers; removed again after each check.
MARKER_DIR = ".raysweep-shared-check"


class SharedStorageError(SweepDirError):
    """The runs root is not the same filesystem on every node; the message says how to fix it."""


@dataclass(frozen=True)
class NodeView:
    """What one node saw when it looked for the marker."""

    node_id: str
    hostname: str
    sees_marker: bool
    problem: str = ""


def read_marker(path: str, token: str) -> tuple[str, str, bool, str]:
    """Ray task body: (node id, hostname, whether ``path`` holds ``token``, what went wrong)."""
    import ray

    node = ray.get_runtime_context().get_node_id()
    try:
        seen = Path(path).read_text() == token
        return node, socket.gethostname(), seen, "" if seen else "marker has other content"
    except OSError as error:
        return node, socket.gethostname(), False, error.strerror or type(error).__name__


def alive_node_ids() -> list[str]:
    import ray

    return [node["NodeID"] for node in ray.nodes() if node["Alive"]]


def look_from_every_node(marker: Path, token: str, timeout_s: float) -> list[NodeView]:
    """One zero-CPU task per alive node reads the marker (zero CPUs: busy nodes answer too)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    task = ray.remote(read_marker)
    refs = {
        node: task.options(
            num_cpus=0,
            max_retries=0,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=node, soft=False),
        ).remote(str(marker), token)
        for node in alive_node_ids()
    }
    ready, _ = ray.wait(list(refs.values()), num_returns=len(refs), timeout=timeout_s)
    views = []
    for node, ref in refs.items():
        if ref not in ready:
            views.append(NodeView(node, "?", False, f"no answer in {timeout_s:g} s"))
            ray.cancel(ref, force=True)
            continue
        try:
            views.append(NodeView(*ray.get(ref)))
        except Exception as error:  # the node died or refused the task: it saw nothing
            views.append(NodeView(node, "?", False, type(error).__name__))
    return views


def check_shared_root(root: Path, timeout_s: float = 60.0) -> list[NodeView]:
    """Fail with one line unless every alive node of the connected Ray cluster sees ``root``.

    A single-node cluster needs no check (an empty list is returned). Call after ``ray.init``
    and before anything is recorded.
    """
    if len(alive_node_ids()) <= 1:
        return []
    folder = Path(root) / MARKER_DIR
    token = secrets.token_hex(16)
    marker = folder / f"{token}.marker"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        marker.write_text(token)
    except OSError as error:
        raise SweepDirError(
            f"cannot write under the runs root {root} ({error.strerror}); pass a writable --root"
        ) from None
    try:
        views = look_from_every_node(marker, token, timeout_s)
    finally:
        marker.unlink(missing_ok=True)
        try:
            folder.rmdir()
        except OSError:  # another launch is checking at the same time: its marker is still there
            pass
    # A node the autoscaler removed meanwhile is not a problem; one that is still there is.
    alive = set(alive_node_ids())
    blind = [view for view in views if not view.sees_marker and view.node_id in alive]
    if blind:
        first = blind[0]
        raise SharedStorageError(
            f"runs root {root} is not shared: node {first.node_id[:12]} ({first.hostname}) "
            f"cannot read a file the driver wrote there ({first.problem})"
            + (f", nor can {len(blind) - 1} other node(s)" if len(blind) > 1 else "")
            + "; mount one NFS/EFS/FSx path at the same place on every node and pass it, e.g. "
            "--root /mnt/shared/raysweep_runs (or RAYSWEEP_ROOT)"
        )
    return views
