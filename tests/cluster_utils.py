"""A throwaway multi-node Ray cluster on this machine, made of `ray start --block` processes.

Every process here is one we started (or a descendant of one), and it is stopped by pid: never
`ray stop`, which would stop every Ray instance on the machine, other tests' included. Each node
gets its own `--temp-dir`, so its session (and its `ray_current_cluster` file, which a plain
`ray.init()` elsewhere would otherwise read and attach to) stays out of /tmp/ray.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psutil

RAY = Path(os.environ.get("VIRTUAL_ENV", Path(__file__).resolve().parents[1] / ".venv"))
RAY_CLI = str(RAY / "bin" / "ray")
#: `ray start` prints this once the node's processes are up and registered.
STARTED = "Ray runtime started"


def free_port() -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def short_temp_dir(target: Path) -> Path:
    """A short /tmp symlink to ``target``.

    Ray puts Unix sockets under its temp dir and a socket path may not exceed 107 bytes, which
    pytest's tmp_path plus Ray's session name does; the files themselves land under ``target``.
    """
    target.mkdir(parents=True, exist_ok=True)
    link = Path(tempfile.mkdtemp(prefix="rsc", dir="/tmp")) / "t"
    link.symlink_to(target, target_is_directory=True)
    return link


@dataclass
class RayNode:
    """One `ray start --block` process and the Ray processes it spawned."""

    name: str
    process: subprocess.Popen
    log: Path
    temp_link: Path
    #: Every descendant ever seen: Ray workers outlive a killed raylet as orphans for a moment.
    seen: dict[int, psutil.Process] = field(default_factory=dict)

    def descendants(self) -> list[psutil.Process]:
        try:
            found = psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            found = []
        for proc in found:
            self.seen.setdefault(proc.pid, proc)
        return found

    def owns(self, pid: int) -> bool:
        """Whether ``pid`` is this node's `ray start` or one of its descendants now."""
        return pid == self.process.pid or any(p.pid == pid for p in self.descendants())

    def raylet(self) -> psutil.Process:
        for proc in self.descendants():
            try:
                if proc.name() == "raylet":
                    return proc
            except psutil.NoSuchProcess:
                continue
        raise RuntimeError(f"{self.name}: no raylet among the children of pid {self.process.pid}")

    def wait_started(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while STARTED not in self.log.read_text(errors="replace"):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not start:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.2)
        self.descendants()

    def stop(self, grace_s: float = 5.0) -> None:
        """SIGTERM this node's processes, SIGKILL what is left after ``grace_s``."""
        self.descendants()
        try:
            root = psutil.Process(self.process.pid)
        except psutil.NoSuchProcess:
            root = None
        procs = [p for p in [root, *self.seen.values()] if p is not None and p.is_running()]
        for proc in procs:  # is_running() checks the start time too: a reused pid is spared
            with_signal(proc, signal.SIGTERM)
        _, alive = psutil.wait_procs(procs, timeout=grace_s)
        for proc in alive:
            with_signal(proc, signal.SIGKILL)
        psutil.wait_procs(alive, timeout=grace_s)
        self.process.wait(timeout=grace_s)
        shutil.rmtree(self.temp_link.parent, ignore_errors=True)  # the symlink's folder only


def with_signal(proc: psutil.Process, sig: int) -> None:
    try:
        if proc.is_running():
            proc.send_signal(sig)
    except psutil.NoSuchProcess:
        pass


def start_node(
    name: str, args: Sequence[str], folder: Path, env: dict[str, str] | None = None
) -> RayNode:
    """`ray start --block ARGS` with its own temp dir under ``folder``; output to a log file."""
    folder.mkdir(parents=True, exist_ok=True)
    link = short_temp_dir(folder / "ray")
    log = folder / f"{name}.log"
    with open(log, "w") as out:
        process = subprocess.Popen(
            [RAY_CLI, "start", "--block", "--temp-dir", str(link), *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
    return RayNode(name, process, log, link)


@dataclass
class LocalCluster:
    address: str
    head: RayNode
    workers: list[RayNode]


def node_ports() -> list[str]:
    """Ports `ray start` would otherwise take at fixed defaults, clashing between nodes."""
    return [
        "--dashboard-agent-listen-port",
        str(free_port()),
        "--disable-usage-stats",
    ]


@contextmanager
def local_cluster(
    folder: Path, head_cpus: int = 1, worker_cpus: int = 1, env: dict[str, str] | None = None
) -> Iterator[LocalCluster]:
    """A head node and one worker node; both stopped by pid when the block exits."""
    port = free_port()
    nodes: list[RayNode] = []
    try:
        head = start_node(
            "head",
            [
                "--head",
                "--port",
                str(port),
                "--node-ip-address",
                "127.0.0.1",
                "--num-cpus",
                str(head_cpus),
                "--resources",
                json.dumps({"head_node": 1}),
                "--include-dashboard=false",
                "--ray-client-server-port",
                str(free_port()),
                *node_ports(),
            ],
            folder / "head",
            env,
        )
        nodes.append(head)
        head.wait_started()
        worker = start_node(
            "worker",
            [
                "--address",
                f"127.0.0.1:{port}",
                "--node-ip-address",
                "127.0.0.1",
                "--num-cpus",
                str(worker_cpus),
                "--resources",
                json.dumps({"worker_node": 1}),
                *node_ports(),
            ],
            folder / "worker",
            env,
        )
        nodes.append(worker)
        worker.wait_started()
        yield LocalCluster(f"127.0.0.1:{port}", head, [worker])
    finally:
        for node in reversed(nodes):
            node.stop()
