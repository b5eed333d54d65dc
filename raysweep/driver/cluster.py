"""Attaching the driver to Ray: a local instance, or a cluster named by ``--address``.

Unreachable clusters fail in seconds with one line, before anything is recorded.
"""

from __future__ import annotations

import os
import socket


class ClusterError(RuntimeError):
    """The Ray cluster named by --address does not answer; the message says what to do."""


def check_cluster_reachable(address: str | None, timeout_s: float = 5.0) -> None:
    """Fail in seconds, before anything is recorded: ray.init waits minutes for a dead head."""
    if address and address.startswith("ray://"):
        # Under Ray Client, Tuner.fit runs as an actor on the head (ray/tune/tuner.py), so the
        # recorder callback, the only MLflow writer, would run there and report nothing back.
        raise ClusterError(
            f"Ray Client addresses ({address}) are not supported: Tune would run raysweep's "
            "recorder on the cluster, not in this process; run raysweep on the head instead "
            "(`ray exec cluster.yaml 'raysweep launch SPEC --address auto'` or "
            "`ray job submit -- raysweep launch SPEC --address auto`)"
        )
    if not address or address == "auto" or "://" in address:
        return
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout_s):
            return
    except (OSError, ValueError) as error:
        raise ClusterError(
            f"Ray cluster {address} is unreachable ({error}); start it (`ray start --head`) "
            "or pass the head's host:port or auto"
        ) from None


def ensure_ray(address: str | None) -> None:
    """Attach to the cluster at ``address``, or start Ray on this machine's cores."""
    import ray

    if ray.is_initialized():
        return
    if address:
        try:
            ray.init(address=address, log_to_driver=False)
        except ConnectionError as error:  # `auto` with no RAY_ADDRESS and no local cluster
            raise ClusterError(
                f"no Ray cluster at --address {address} ({error}); start one or pass host:port"
            ) from None
    else:
        ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False, log_to_driver=False)


def total_cpus() -> int:
    import ray

    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def largest_node_cpus() -> int:
    """A task runs on one node: asking for more CPUs than any node has never schedules."""
    import ray

    alive = [int(node["Resources"].get("CPU", 0)) for node in ray.nodes() if node["Alive"]]
    return max(1, max(alive, default=1))
