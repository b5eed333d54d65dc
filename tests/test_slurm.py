"""cluster/slurm.sbatch: its Ray start-up and shutdown, run here without Slurm.

`scontrol` and `srun` are two tiny fakes on PATH: the allocation is `localhost` twice, and srun
runs its command here (after noting its flags), so the script's own functions start a real
two-node Ray cluster on this machine; each node gets its own session folder (the script's
``RAY_TMP_BASE/<index>``) and dashboard-agent port (the script's ``RAY_HEAD_ARGS`` /
``RAY_WORKER_ARGS``). Every process is stopped by pid: by the script's `stop_ray` or, when a test
fails, by the test; never `ray stop`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cluster_utils import CLUSTER_ENV, Proc, descendants, free_port, read_stat, wait_gone

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "cluster" / "slurm.sbatch"
TEXT = SCRIPT.read_text()
VENV_BIN = Path(sys.executable).parent

FAKE_SCONTROL = """#!/bin/bash
[[ "$1 $2" == "show hostnames" && -n "$3" ]] || { echo "fake scontrol: $*" >&2; exit 1; }
printf 'localhost\\nlocalhost\\n'
"""
#: Notes its flags, drops them (the script writes every srun flag as --name=value) and runs the
#: rest in its place, so the script's $! is the `ray start` process itself.
FAKE_SRUN = """#!/bin/bash
printf '%s\\n' "$*" >> "$FAKE_SRUN_LOG"
while [[ $# -gt 0 && $1 == -* ]]; do shift; done
exec "$@"
"""
#: The driver: records what it was given and what it sees of the cluster, then waits for the
#: test (a file: exit with $FAKE_EXIT; SIGTERM: note it, exit 130 as raysweep does).
FAKE_RAYSWEEP = """#!{python}
import json, os, signal, sys, time
from pathlib import Path

out = Path(os.environ["FAKE_RECORD"])

def stopped(signum, frame):
    Path(str(out) + ".term").write_text(str(signum))
    sys.exit(130)

import ray

args = sys.argv[1:]
ray.init(address=args[args.index("--address") + 1], log_to_driver=False)
nodes = [n["Resources"].get("CPU") for n in ray.nodes() if n["Alive"]]
ray.shutdown()
signal.signal(signal.SIGTERM, stopped)  # after ray.init, which sets its own (raysweep does too)
record = {{
    "argv": args,
    "cpus": nodes,
    "cwd": os.getcwd(),
    "root": os.environ.get("RAYSWEEP_ROOT"),
    "auth": os.environ.get("RAY_AUTH_MODE"),
    "venv": os.environ.get("VIRTUAL_ENV"),
}}
Path(str(out) + ".tmp").write_text(json.dumps(record))
os.replace(str(out) + ".tmp", out)
while not Path(str(out) + ".go").exists():
    time.sleep(0.1)
sys.exit(int(os.environ.get("FAKE_EXIT", "0")))
"""
#: Sources the script (its guard keeps main from running) and drives its functions.
HARNESS = """
source "$1"
start_ray_cluster
printf '%s %s\\n' "$RAY_HEAD_ADDRESS" "${RAY_PIDS[*]}" > "$READY_FILE.tmp"
mv "$READY_FILE.tmp" "$READY_FILE"
read -r _ || true
stop_ray "${RAY_PIDS[@]}"
echo stopped > "$READY_FILE.stopped"
"""
NODES_PY = (
    "import json, sys, ray; ray.init(address=sys.argv[1], log_to_driver=False); "
    "print(json.dumps([n['Resources'] for n in ray.nodes() if n['Alive']]))"
)


def write_tool(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)
    return path


@pytest.fixture
def fake_slurm(tmp_path: Path) -> Iterator[dict[str, str]]:
    """The environment of a job on two fake nodes: fake scontrol/srun first on PATH, the venv's
    python and ray next, free ports, short session folders, no token; no other SLURM_*."""
    bin_dir = tmp_path / "bin"
    write_tool(bin_dir / "scontrol", FAKE_SCONTROL)
    write_tool(bin_dir / "srun", FAKE_SRUN)
    sessions = Path(tempfile.mkdtemp(prefix="rsl", dir="/tmp"))  # sockets: keep paths short
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM", "RAY"))}
    env.update(CLUSTER_ENV)
    env.update(
        {
            "PATH": f"{bin_dir}:{VENV_BIN}:/usr/bin:/bin",
            "HOME": str(tmp_path / "home"),
            "FAKE_SRUN_LOG": str(tmp_path / "srun.log"),
            "SLURM_JOB_ID": "4242",
            "SLURM_JOB_NODELIST": "node[01-02]",
            "SLURM_CPUS_PER_TASK": "1",  # Ray would count 2 here: 1 shows the flag was passed
            "SLURM_GPUS_PER_TASK": "a100:1",
            "RAY_PORT": str(free_port()),
            "RAY_TMP_BASE": str(sessions / "s"),
            "RAY_JOIN_TIMEOUT": "60",
            "RAY_STOP_GRACE": "20",
            "RAY_HEAD_ARGS": "--include-dashboard=false "
            f"--dashboard-agent-listen-port={free_port()} "
            '--resources={"head_node":1}',
            "RAY_WORKER_ARGS": f"--dashboard-agent-listen-port={free_port()} "
            '--resources={"worker_node":1}',
            "RAYSWEEP_ROOT": str(tmp_path / "runs"),
            "RAYSWEEP_VENV": "",
        }
    )
    try:
        yield env
    finally:
        shutil.rmtree(sessions, ignore_errors=True)


def wait_for_file(path: Path, process: subprocess.Popen, log: Path, timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"no {path.name}; the script's output:\n{log.read_text()[-4000:]}")
        time.sleep(0.1)
    return path.read_text()


def kill_everything_below(process: subprocess.Popen, seen: list[Proc]) -> None:
    """After a failed test: SIGKILL what the script started (by pid), then the script."""
    procs = [*seen, *descendants(process.pid)]
    if process.poll() is None:
        process.kill()
    for proc in procs:
        proc.signal(signal.SIGKILL)
    wait_gone(procs, 10)
    process.wait()


def srun_calls(env: dict[str, str]) -> list[str]:
    return Path(env["FAKE_SRUN_LOG"]).read_text().splitlines()


def test_the_script_parses_and_keeps_bash_strict() -> None:
    checked = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    assert TEXT.startswith("#!/bin/bash\n")
    assert "\nset -euo pipefail\n" in TEXT
    assert 'if [[ ${BASH_SOURCE[0]} == "$0" ]]; then\n    main "$@"\nfi\n' in TEXT
    assert "ray stop" not in re.sub(r"#.*", "", TEXT)  # comments may name it, code never


def test_shellcheck_passes() -> None:
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck is not installed")
    checked = subprocess.run(
        [shellcheck, "--shell=bash", "--severity=style", str(SCRIPT)],
        capture_output=True,
        text=True,
    )
    assert checked.returncode == 0, checked.stdout


def test_the_sbatch_header_is_complete_and_every_placeholder_is_marked() -> None:
    lines = TEXT.splitlines()
    first_command = next(
        i for i, line in enumerate(lines) if line.strip() and not line.startswith("#")
    )
    directives = {}
    for number, line in enumerate(lines):
        if line.startswith("#SBATCH"):
            # sbatch stops reading directives at the first command
            assert number < first_command, line
            match = re.fullmatch(r"#SBATCH --([a-z-]+)=(\S+)", line)
            assert match, f"one --name=value and nothing else: {line}"
            above = number  # the comment lines right above the directive
            while lines[above - 1].startswith("# "):
                above -= 1
            directives[match[1]] = (match[2], lines[above:number])
    assert set(directives) == {
        "job-name",
        "nodes",
        "ntasks-per-node",
        "cpus-per-task",
        "gpus-per-task",
        "mem",
        "time",
        "partition",
        "output",
        "signal",
    }
    assert directives["ntasks-per-node"][0] == "1"
    assert directives["signal"][0] == "B:TERM@180"
    for name, (_, comment_above) in directives.items():
        if name not in ("ntasks-per-node", "signal"):
            assert any(line.startswith("# CHANGE:") for line in comment_above), name
    for setting in ("RAYSWEEP_VENV=", "RAYSWEEP_ROOT:="):
        line = next(line for line in lines if setting in line and line.startswith(":"))
        assert "# CHANGE:" in line
    assert "--dependency=afterany" in TEXT and "ray get-auth-token --generate" in TEXT


def source_and_run(env: dict[str, str], commands: str) -> str:
    done = subprocess.run(
        ["bash", "-c", f'source "$1"; {commands}', "harness", str(SCRIPT)],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_head_is_the_batch_host_and_each_node_gets_its_resources(
    fake_slurm: dict[str, str], tmp_path: Path
) -> None:
    write_tool(tmp_path / "bin" / "scontrol", "#!/bin/sh\nprintf 'gpu01\\ngpu02\\ngpu03\\n'\n")
    order = "allocation_nodes | tr '\\n' ' '"
    assert source_and_run(fake_slurm, order) == "gpu01 gpu02 gpu03 "
    on_gpu02 = {**fake_slurm, "SLURMD_NODENAME": "gpu02"}
    assert source_and_run(on_gpu02, order) == "gpu02 gpu01 gpu03 "
    flags = "srun_args gpu03; ray_node_args 2"
    sessions = fake_slurm["RAY_TMP_BASE"]
    assert source_and_run(fake_slurm, flags).split() == [
        "--nodes=1",
        "--ntasks=1",
        "--nodelist=gpu03",
        "--cpus-per-task=1",
        "--gpus-per-task=a100:1",
        f"--temp-dir={sessions}/2",
        "--num-cpus=1",
        "--num-gpus=1",
    ]
    gres = {k: v for k, v in fake_slurm.items() if not k.startswith("SLURM_")}
    gres["RAY_NUM_GPUS"] = "4"  # a --gres=gpu:4 job: the step gets the job's GPUs by default
    assert source_and_run(gres, flags).split() == [
        "--nodes=1",
        "--ntasks=1",
        "--nodelist=gpu03",
        f"--temp-dir={sessions}/2",
        "--num-gpus=4",
    ]


def run_main(env: dict[str, str], *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=60
    )


def test_main_refuses_what_it_cannot_run_before_starting_anything(
    fake_slurm: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / "spec.yaml").write_text("name: demo\n")
    no_spec = run_main(fake_slurm, "--tracking-uri", "http://x", cwd=tmp_path)
    assert no_spec.returncode == 2 and "usage: sbatch cluster/slurm.sbatch SPEC" in no_spec.stderr
    missing = run_main(fake_slurm, "nope.yaml", cwd=tmp_path)
    assert missing.returncode == 1 and "cannot read the spec nope.yaml" in missing.stderr
    no_token = run_main({**fake_slurm, "RAY_AUTH_MODE": "token"}, "spec.yaml", cwd=tmp_path)
    assert no_token.returncode == 1
    assert "ray get-auth-token --generate" in no_token.stderr
    no_venv = run_main({**fake_slurm, "RAYSWEEP_VENV": str(tmp_path)}, "spec.yaml", cwd=tmp_path)
    assert no_venv.returncode == 1 and "has no bin/python" in no_venv.stderr
    outside = {k: v for k, v in fake_slurm.items() if k != "SLURM_JOB_NODELIST"}
    not_a_job = run_main(outside, "spec.yaml", cwd=tmp_path)
    assert not_a_job.returncode == 1 and "submit this script with sbatch" in not_a_job.stderr
    assert not Path(fake_slurm["FAKE_SRUN_LOG"]).exists()  # no srun: nothing was started


@pytest.mark.cluster
@pytest.mark.slow
def test_its_functions_start_a_head_and_a_worker_and_stop_them_by_pid(
    fake_slurm: dict[str, str], tmp_path: Path
) -> None:
    ready = tmp_path / "ready"
    log = tmp_path / "harness.log"
    with open(log, "w") as out:
        harness = subprocess.Popen(
            ["bash", "-c", HARNESS, "harness", str(SCRIPT)],
            stdin=subprocess.PIPE,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**fake_slurm, "READY_FILE": str(ready)},
            text=True,
        )
    seen: list[Proc] = []
    try:
        address, *pids = wait_for_file(ready, harness, log, 90).split()
        assert address == f"127.0.0.1:{fake_slurm['RAY_PORT']}"
        seen = descendants(harness.pid)
        for pid in map(int, pids):  # srun's pid, which the fake replaced with `ray start`
            stat = read_stat(pid)
            assert stat is not None and stat[0] == harness.pid
            assert "ray start --" in Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")
        assert len(pids) == 2 and len(seen) > 6  # the nodes' gcs_server, raylets, agents…

        listed = subprocess.run(
            [sys.executable, "-c", NODES_PY, address],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, **CLUSTER_ENV},
        )
        assert listed.returncode == 0, listed.stderr[-3000:]
        nodes = json.loads(listed.stdout.strip().splitlines()[-1])
        assert sorted("head_node" in n for n in nodes) == [False, True]
        assert [n.get("worker_node", 0) + n.get("head_node", 0) for n in nodes] == [1, 1]
        assert [(n["CPU"], n["GPU"]) for n in nodes] == [(1.0, 1.0), (1.0, 1.0)]

        port, sessions = fake_slurm["RAY_PORT"], fake_slurm["RAY_TMP_BASE"]
        step = "--nodes=1 --ntasks=1 --nodelist=localhost --cpus-per-task=1 --gpus-per-task=a100:1"
        assert srun_calls(fake_slurm) == [
            f"{step} ray start --head --block --node-ip-address=127.0.0.1 --port={port} "
            f"--temp-dir={sessions}/0 --num-cpus=1 --num-gpus=1 {fake_slurm['RAY_HEAD_ARGS']}",
            f"{step} ray start --block --address=127.0.0.1:{port} "
            f"--temp-dir={sessions}/1 --num-cpus=1 --num-gpus=1 {fake_slurm['RAY_WORKER_ARGS']}",
        ]

        started = time.monotonic()
        assert harness.stdin is not None
        harness.stdin.write("stop\n")
        harness.stdin.close()
        assert harness.wait(timeout=60) == 0, log.read_text()[-4000:]
        assert (tmp_path / "ready.stopped").exists()
        assert wait_gone(seen, 15) == []
        assert time.monotonic() - started < 15  # SIGTERM did it: no SIGKILL after the grace
        assert "SIGKILL" not in log.read_text()
    finally:
        kill_everything_below(harness, seen)


@pytest.mark.cluster
@pytest.mark.slow
@pytest.mark.parametrize("ending", ["driver exits", "job gets SIGTERM"])
def test_main_runs_the_driver_on_the_cluster_then_stops_it(
    fake_slurm: dict[str, str], tmp_path: Path, ending: str
) -> None:
    venv = tmp_path / "venv"
    write_tool(venv / "bin" / "python", f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    write_tool(venv / "bin" / "raysweep", FAKE_RAYSWEEP.format(python=sys.executable))
    record = tmp_path / "record.json"
    (tmp_path / "spec.yaml").write_text("name: demo\n")
    env = {**fake_slurm, "RAYSWEEP_VENV": str(venv), "FAKE_RECORD": str(record), "FAKE_EXIT": "3"}
    log = tmp_path / "job.out"
    with open(log, "w") as out:
        job = subprocess.Popen(
            ["bash", str(SCRIPT), "spec.yaml", "--tracking-uri", "http://mlflow:5000"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=tmp_path,
        )
    seen: list[Proc] = []
    try:
        seen_by_driver = json.loads(wait_for_file(record, job, log, 90))
        seen = descendants(job.pid)
        assert seen_by_driver == {
            "argv": [
                "launch",
                "spec.yaml",
                "--address",
                f"127.0.0.1:{fake_slurm['RAY_PORT']}",
                "--tracking-uri",
                "http://mlflow:5000",
            ],
            "cpus": [1.0, 1.0],
            "cwd": str(tmp_path),
            "root": str(tmp_path / "runs"),
            "auth": "disabled",
            "venv": str(venv),
        }
        assert (tmp_path / "runs").is_dir()
        assert sum("ray start" in line for line in srun_calls(fake_slurm)) == 2
        if ending == "driver exits":
            (tmp_path / "record.json.go").touch()
            assert job.wait(timeout=60) == 3  # the driver's status is the job's
        else:
            job.send_signal(signal.SIGTERM)  # what --signal=B:TERM@180 sends before the limit
            assert job.wait(timeout=60) == 143
            assert (tmp_path / "record.json.term").read_text() == str(int(signal.SIGTERM))
            assert "received SIGTERM" in log.read_text()
        assert wait_gone(seen, 15) == [], log.read_text()[-4000:]
        assert "stopping Ray (pids" in log.read_text()
    finally:
        kill_everything_below(job, seen)
