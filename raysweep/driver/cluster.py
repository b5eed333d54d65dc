"""Attaching the driver to Ray: a local instance, or a cluster named by ``--address``.

Unreachable clusters fail in seconds with one line, before anything is recorded.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
from pathlib import Path
from typing import Any

import yaml

from raysweep.spec import SweepSpec

#: Where Ray's cluster launcher leaves the autoscaler's config on the head node.
AUTOSCALER_CONFIG = Path("~/ray_bootstrap_config.yaml")


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
    # ray.init makes SIGTERM exit the driver at once (exit status 15, nothing said); keep the
    # CLI's handler, which stops the launch and prints how to resume it.
    handler = signal.getsignal(signal.SIGTERM)
    # Ray's start-up lines (and its token notice) are noise on a normal launch: --debug shows them.
    level = logging.INFO if os.environ.get("RAYSWEEP_DEBUG") else logging.ERROR
    try:
        if address:
            ray.init(address=address, log_to_driver=False, logging_level=level)
        else:
            cpus = os.cpu_count() or 1
            ray.init(
                num_cpus=cpus, include_dashboard=False, log_to_driver=False, logging_level=level
            )
    except ConnectionError as error:  # `auto` with no RAY_ADDRESS and no local cluster
        raise ClusterError(
            f"no Ray cluster at --address {address} ({error}); start one or pass host:port"
        ) from None
    finally:
        if handler is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, handler)


def total_cpus() -> int:
    import ray

    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def alive_nodes() -> int:
    """How many nodes of the connected cluster are alive."""
    import ray

    return sum(1 for node in ray.nodes() if node["Alive"])


def largest_node_cpus() -> int:
    """A task runs on one node: asking for more CPUs than any node has never schedules."""
    import ray

    alive = [int(node["Resources"].get("CPU", 0)) for node in ray.nodes() if node["Alive"]]
    return max(1, max(alive, default=1))


def node_capacities() -> list[dict[str, float]]:
    """CPU and GPU of every alive node of the connected cluster."""
    import ray

    alive = [node["Resources"] for node in ray.nodes() if node["Alive"]]
    return [{"CPU": float(r.get("CPU", 0)), "GPU": float(r.get("GPU", 0))} for r in alive]


def autoscaler_node_types(config: Path | None = None) -> list[dict[str, float]] | None:
    """CPU and GPU of the node types the autoscaler can add (from the launcher's config on the
    head), or None without one. A type whose resources the config leaves to the cloud provider
    (``resources: {}``) could have anything: it is returned as unbounded."""
    path = (config or AUTOSCALER_CONFIG).expanduser()
    if not path.is_file():
        return None
    try:
        types: dict[str, Any] = yaml.safe_load(path.read_text()).get("available_node_types", {})
    except (OSError, yaml.YAMLError, AttributeError):
        return None
    unbounded = float("inf")
    found = []
    for node_type in types.values():
        given = (node_type or {}).get("resources") or {}
        found.append(
            {
                "CPU": float(given.get("CPU", unbounded if not given else 0)),
                "GPU": float(given.get("GPU", unbounded if not given else 0)),
            }
        )
    return found


def check_resources(spec: SweepSpec) -> None:
    """Fail before anything runs if no node (alive, or one the autoscaler can add) can host a
    task or a trial of the spec: Ray would wait for it forever."""
    requests = {"a source or probe task": {"CPU": 1.0, "GPU": 0.0}}
    if spec.finetune is not None:
        # gpu: auto needs no GPU: without one its trials run on CPUs (driver.gpu_packing).
        gpu = 0.0 if spec.resources.gpu_auto else float(spec.resources.gpu)
        requests["a fine-tune trial"] = {"CPU": spec.resources.cpu, "GPU": gpu}
    nodes = node_capacities() + (autoscaler_node_types() or [])
    for what, wanted in requests.items():
        if any(all(node[k] >= v for k, v in wanted.items()) for node in nodes):
            continue
        largest = max(nodes, key=lambda n: (n["GPU"], n["CPU"]), default={"CPU": 0, "GPU": 0})
        raise ClusterError(
            f"resources: {what} asks for {wanted['CPU']:g} CPU and {wanted['GPU']:g} GPU, but "
            f"no node of the Ray cluster has them (largest: {largest['CPU']:g} CPU, "
            f"{largest['GPU']:g} GPU); lower resources.cpu / resources.gpu in the spec, or "
            "attach to a cluster that has such nodes (--address)"
        )
