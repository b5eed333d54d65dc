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
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

#: The `ray` next to the interpreter running the tests: the venv's, not whatever is on PATH.
RAY_CLI = str(Path(sys.executable).with_name("ray"))
MLFLOW_CLI = str(Path(sys.executable).with_name("mlflow"))
#: Ray 2.60 turns token auth on for a new head (reading or writing ~/.ray/auth_token) but not for
#: `ray start --address`, which then cannot join; a short-lived test cluster goes without tokens.
#: Drivers attaching to it need the same setting.
CLUSTER_ENV = {"RAY_AUTH_MODE": "disabled"}
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


@dataclass(frozen=True)
class Proc:
    """A process as /proc shows it; (pid, start time) names it even after its pid is reused."""

    pid: int
    name: str
    start: int

    def running(self) -> bool:
        now = read_stat(self.pid)
        return now is not None and now[2] == self.start and now[3] != "Z"

    def signal(self, sig: int) -> None:
        if self.running():
            with suppress(ProcessLookupError):
                os.kill(self.pid, sig)


def read_stat(pid: int) -> tuple[int, str, int, str] | None:
    """(parent pid, name, start time in clock ticks, state) from /proc/<pid>/stat."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    name = text[text.index("(") + 1 : text.rindex(")")]
    rest = text[text.rindex(")") + 2 :].split()  # the name may hold spaces and parentheses
    return int(rest[1]), name, int(rest[19]), rest[0]


def descendants(root: int) -> list[Proc]:
    """Every live process below ``root`` in the process tree."""
    stats = {int(d): read_stat(int(d)) for d in os.listdir("/proc") if d.isdigit()}
    children: dict[int, list[int]] = {}
    for pid, stat in stats.items():
        if stat is not None:
            children.setdefault(stat[0], []).append(pid)
    found, todo = [], list(children.get(root, []))
    while todo:
        pid = todo.pop()
        stat = stats[pid]
        if stat is not None and stat[3] != "Z":
            found.append(Proc(pid, stat[1], stat[2]))
        todo.extend(children.get(pid, []))
    return found


def wait_gone(procs: Iterable[Proc], timeout_s: float) -> list[Proc]:
    deadline = time.monotonic() + timeout_s
    alive = [p for p in procs if p.running()]
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = [p for p in alive if p.running()]
    return alive


@dataclass
class RayNode:
    """One `ray start --block` process and the Ray processes it spawned."""

    name: str
    process: subprocess.Popen
    log: Path
    temp_link: Path
    #: Every descendant ever seen: Ray workers outlive a killed raylet as orphans for a moment.
    seen: set[Proc] = field(default_factory=set)

    def descendants(self) -> list[Proc]:
        found = descendants(self.process.pid)
        self.seen.update(found)
        return found

    def owns(self, pid: int) -> bool:
        """Whether ``pid`` is a live descendant of this node's `ray start` process."""
        return any(p.pid == pid for p in self.descendants())

    def lose(self) -> None:
        """SIGKILL every Ray process of the node at once, as when its machine goes away.

        Killing the raylet alone is not enough: a worker process notices a dead raylet only at
        its next liveness check and may finish its trial first.
        """
        for proc in self.descendants():
            proc.signal(signal.SIGKILL)

    def wait_started(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while STARTED not in self.log.read_text(errors="replace"):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not start:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.2)
        self.descendants()

    def unreaped(self) -> int:
        """How many exited children `ray start` has not reaped yet (zombies)."""
        stats = (read_stat(int(d)) for d in os.listdir("/proc") if d.isdigit())
        return sum(1 for st in stats if st and st[0] == self.process.pid and st[3] == "Z")

    def close(self, grace_s: float) -> None:
        """Stop `ray start` itself, once it reaped its children; remove the temp-dir symlink."""
        deadline = time.monotonic() + 2.0  # its --block loop polls its children every second
        while self.process.poll() is None and self.unreaped() and time.monotonic() < deadline:
            time.sleep(0.1)
        if self.process.poll() is None:
            self.process.terminate()
        try:
            self.process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        shutil.rmtree(self.temp_link.parent, ignore_errors=True)  # the symlink's folder only


def stop_nodes(nodes: Sequence[RayNode], grace_s: float = 3.0) -> None:
    """SIGTERM every Ray process of the nodes, SIGKILL what runs after ``grace_s``, then the
    `ray start` processes.

    Ray's processes go first so that each `ray start` reaps its children rather than leaving
    zombies to an init that may never reap them. A head drains for up to 30 s on SIGTERM; a
    throwaway cluster has nothing worth waiting for.
    """
    procs = [proc for node in nodes for proc in (*node.descendants(), *node.seen)]
    for proc in procs:  # running() compares start times: a reused pid is spared
        proc.signal(signal.SIGTERM)
    for proc in wait_gone(procs, grace_s):
        proc.signal(signal.SIGKILL)
    wait_gone(procs, grace_s)
    for node in nodes:
        node.close(grace_s)


def hiding(path: Path) -> list[str]:
    """A command prefix that runs its command where ``path`` is an empty folder.

    The command gets its own mount namespace (an unprivileged user namespace, `unshare -Urm`)
    with a fresh tmpfs over ``path``: like a machine that has no shared mount there, while the
    rest of the filesystem and the network stay the same. `unshare` and `sh` exec the command,
    so its pid is the one Popen returns.
    """
    path.mkdir(parents=True, exist_ok=True)
    return ["unshare", "-Urm", "sh", "-c", 'mount -t tmpfs tmpfs "$0" && exec "$@"', str(path)]


def start_node(
    name: str,
    args: Sequence[str],
    folder: Path,
    env: dict[str, str] | None = None,
    prefix: Sequence[str] = (),
) -> RayNode:
    """`ray start --block ARGS` with its own temp dir under ``folder``; output to a log file.

    ``prefix`` goes before the command (e.g. :func:`hiding`) and must exec it.
    """
    folder.mkdir(parents=True, exist_ok=True)
    link = short_temp_dir(folder / "ray")
    log = folder / f"{name}.log"
    with open(log, "w") as out:
        process = subprocess.Popen(
            [*prefix, RAY_CLI, "start", "--block", "--temp-dir", str(link), *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **CLUSTER_ENV, **(env or {})},
        )
    return RayNode(name, process, log, link)


@dataclass
class LocalCluster:
    address: str
    head: RayNode
    workers: list[RayNode]


def node_flags() -> list[str]:
    """Flags of every node: the agent port defaults to a fixed 52365, which two nodes (or another
    test's Ray) on one machine would fight over; usage stats are never wanted here."""
    return [
        "--dashboard-agent-listen-port",
        str(free_port()),
        "--disable-usage-stats",
    ]


@contextmanager
def local_cluster(
    folder: Path,
    head_cpus: int = 1,
    worker_cpus: int = 1,
    env: dict[str, str] | None = None,
    worker_prefix: Sequence[str] = (),
) -> Iterator[LocalCluster]:
    """A head node and one worker node; both stopped by pid when the block exits.

    Each node has its own CPUs and a custom resource (``head_node`` / ``worker_node``);
    ``worker_prefix`` wraps the worker's `ray start` (see :func:`hiding`).
    """
    port = free_port()
    nodes: list[RayNode] = []
    try:
        head = start_node(
            "head",
            [
                "--head",
                "--port",
                str(port),
                "--num-cpus",
                str(head_cpus),
                "--resources",
                json.dumps({"head_node": 1}),
                "--include-dashboard=false",
                *node_flags(),
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
                "--num-cpus",
                str(worker_cpus),
                "--resources",
                json.dumps({"worker_node": 1}),
                *node_flags(),
            ],
            folder / "worker",
            env,
            worker_prefix,
        )
        nodes.append(worker)
        worker.wait_started()
        yield LocalCluster(f"127.0.0.1:{port}", head, [worker])
    finally:
        stop_nodes(nodes)


def stop_tree(process: subprocess.Popen, grace_s: float = 5.0) -> None:
    """SIGTERM a process we started and everything below it, SIGKILL what is left after
    ``grace_s``, and reap it."""
    procs = descendants(process.pid)
    if process.poll() is None:
        process.terminate()
    for proc in procs:
        proc.signal(signal.SIGTERM)
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    for proc in wait_gone(procs, grace_s):
        proc.signal(signal.SIGKILL)


@contextmanager
def mlflow_server(folder: Path, timeout_s: float = 60.0) -> Iterator[str]:
    """A real `mlflow server` on 127.0.0.1: SQLite backend and a separate artifact folder,
    artifacts served through the server. Yields its URI; stopped by pid at exit."""
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    command = [
        MLFLOW_CLI,
        "server",
        "--backend-store-uri",
        f"sqlite:///{folder / 'mlflow.db'}",
        "--artifacts-destination",
        str(folder / "artifacts"),
        "--serve-artifacts",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    log = folder / "mlflow-server.log"
    with open(log, "w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(uri, process, log, timeout_s)
        yield uri
    finally:
        stop_tree(process)


def wait_healthy(uri: str, process: subprocess.Popen, log: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2):
                return
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                log_tail = log.read_text()[-3000:]
                raise RuntimeError(f"mlflow server did not start:\n{log_tail}") from None
            time.sleep(0.3)


def node_ids(address: str) -> list[str]:
    """[head node id, worker node id] of a :func:`local_cluster`, told apart by their custom
    resources; asked from a separate driver so the test process stays out of Ray."""
    script = (
        "import json, sys, ray; ray.init(address=sys.argv[1], log_to_driver=False); "
        "print(json.dumps({n['NodeID']: sorted(n['Resources']) for n in ray.nodes() "
        "if n['Alive']}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, address],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **CLUSTER_ENV},
    )
    if done.returncode != 0:
        raise RuntimeError(f"cannot list the nodes of {address}:\n{done.stderr[-3000:]}")
    nodes = json.loads(done.stdout.strip().splitlines()[-1])
    head = next(node for node, resources in nodes.items() if "head_node" in resources)
    worker = next(node for node, resources in nodes.items() if "worker_node" in resources)
    return [head, worker]
