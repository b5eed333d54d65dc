"""cluster.yaml: valid for Ray's own autoscaler (no cloud call), and every command it runs exists.

The commands are run here where that is possible without AWS: the dataset preparation (under its
lock, on built-in datasets) and the MLflow start script (two real servers, whose listening
sockets are read from /proc/net/tcp). raysweep commands in the file are parsed by raysweep's
own CLI parser, `mlflow server` flags are looked up in `mlflow server --help`.
"""

from __future__ import annotations

import copy
import json
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from cluster_utils import MLFLOW_CLI, Proc, descendants, free_port, read_stat, wait_gone
from ray.autoscaler._private.util import prepare_config, validate_config

from raysweep.cli import COMMANDS, build_parser

CLUSTER_YAML = Path(__file__).resolve().parents[1] / "cluster.yaml"
TEXT = CLUSTER_YAML.read_text()
CONFIG: dict[str, Any] = yaml.safe_load(TEXT)
DATA_DIR = "/mnt/data/raysweep"
FILE_DATASETS = "cifar10 cifar100 svhn mnist fashion_mnist kmnist"
SHELL_TOOLS = ("flock", "mountpoint", "mount", "curl", "hostname", "awk", "nohup", "seq", "dpkg")


def all_commands() -> list[str]:
    keys = (
        "initialization_commands",
        "setup_commands",
        "head_setup_commands",
        "head_start_ray_commands",
        "worker_start_ray_commands",
    )
    return [command for key in keys for command in CONFIG[key]]


def mlflow_script() -> str:
    command = next(c for c in CONFIG["head_setup_commands"] if "start_mlflow.sh" in c)
    return command.split("<< 'EOF'\n", 1)[1].rsplit("\nEOF", 1)[0]


def test_ray_autoscaler_accepts_the_config_and_rejects_a_broken_copy() -> None:
    prepared = prepare_config(copy.deepcopy(CONFIG))
    validate_config(prepared)
    assert prepared["provider"]["type"] == "aws"
    assert set(prepared["available_node_types"]) == {"head", "gpu_1x", "gpu_8x"}
    assert prepared["available_node_types"]["head"]["max_workers"] == 0
    assert (
        prepared["head_setup_commands"][: len(CONFIG["setup_commands"])]
        == (CONFIG["setup_commands"])
    )
    broken = copy.deepcopy(prepared)
    broken["available_node_types"]["gpu_1x"]["resources"] = {"GPU": "one"}
    with pytest.raises(jsonschema.ValidationError):
        validate_config(broken)


def test_gpu_workers_are_spot_and_capped_and_the_head_takes_no_tasks() -> None:
    types = CONFIG["available_node_types"]
    instances = {name: t["node_config"]["InstanceType"] for name, t in types.items()}
    assert instances == {"head": "m5.2xlarge", "gpu_1x": "g5.xlarge", "gpu_8x": "g5.48xlarge"}
    for name in ("gpu_1x", "gpu_8x"):
        node = types[name]
        assert node["node_config"]["InstanceMarketOptions"] == {"MarketType": "spot"}
        assert 0 <= node["min_workers"] <= node["max_workers"] <= CONFIG["max_workers"]
    assert types["head"]["resources"] == {"CPU": 0}
    assert CONFIG["docker"]["image"] == "rayproject/ray:2.60.0-py311-gpu"


def test_only_ssh_is_open_to_the_internet_and_mlflow_never_binds_everywhere() -> None:
    assert CONFIG["provider"]["security_group"]["IpPermissions"] == []
    for command in [*all_commands(), mlflow_script()]:
        code = [line for line in command.splitlines() if not line.lstrip().startswith("#")]
        assert "0.0.0.0" not in "\n".join(code)
    assert "--dashboard-host=127.0.0.1" in " ".join(CONFIG["head_start_ray_commands"])
    assert CONFIG["head_start_ray_commands"][-1] == "bash ~/start_mlflow.sh"


def test_every_placeholder_is_marked_as_a_value_to_change() -> None:
    lines = TEXT.splitlines()
    placeholders = ("ami-0123456789abcdef0", "fs-0123456789abcdef0", "CHANGE-ME", "us-west-2")
    marked = 0
    for number, line in enumerate(lines):
        if any(p in line for p in placeholders) and not line.lstrip().startswith("#"):
            near = lines[max(0, number - 1) : number + 2]
            assert any("# CHANGE:" in n for n in near), f"line {number + 1}: {line}"
            marked += 1
    assert marked >= 8
    assert TEXT.count("# CHANGE:") >= 12


def test_raysweep_commands_in_the_file_parse_with_the_cli(
    capsys: pytest.CaptureFixture[str],
) -> None:
    found = re.findall(r"(?:^|[\s'`])raysweep\s+([^'`\n]*)", TEXT, flags=re.MULTILINE)
    commands = []
    for text in found:
        words = shlex.split(re.split(r"\s*(?:>|\||&&|;)", text)[0])
        if words and (words[0] in COMMANDS or words[0].startswith("-")):
            commands.append(words)
    assert {words[0] for words in commands} >= {"launch", "status", "plan", "--help"}
    for words in commands:
        if words == ["--help"]:
            with pytest.raises(SystemExit) as exit_info:
                build_parser().parse_args(words)
            assert exit_info.value.code == 0
            continue
        args = build_parser().parse_args(words)
        assert args.command == words[0]
    launch = next(w for w in commands if w[0] == "launch")
    assert launch[launch.index("--address") + 1] == "auto"
    capsys.readouterr()


def test_mlflow_server_flags_exist() -> None:
    script = mlflow_script().replace("\\\n", " ")
    server = next(line for line in script.splitlines() if "mlflow server" in line)
    flags = set(re.findall(r"\s(--[a-z-]+)", server))
    assert flags == {
        "--backend-store-uri",
        "--artifacts-destination",
        "--serve-artifacts",
        "--host",
        "--port",
        "--allowed-hosts",
    }
    help_text = subprocess.run(
        [MLFLOW_CLI, "server", "--help"], capture_output=True, text=True, timeout=60
    ).stdout
    for flag in flags:
        assert re.search(rf"(^|\s|/){re.escape(flag)}[\s/]", help_text), flag
    assert 'ARTIFACTS="s3://' in script


def test_shell_tools_exist_and_every_command_is_valid_shell() -> None:
    missing = [tool for tool in SHELL_TOOLS if shutil.which(tool) is None]
    assert missing == []
    for command in [*all_commands(), mlflow_script()]:
        checked = subprocess.run(["bash", "-n", "-c", command], capture_output=True, text=True)
        assert checked.returncode == 0, f"{command}\n{checked.stderr}"


def preparation(folder: Path, datasets: str) -> str:
    command = next(c for c in CONFIG["setup_commands"] if "flock" in c)
    assert command.count(FILE_DATASETS) == 1
    command = command.replace(FILE_DATASETS, datasets).replace(DATA_DIR, str(folder))
    return command.replace("python -c", f"{shlex.quote(sys.executable)} -c")


def test_datasets_are_prepared_once_per_node_under_the_lock(tmp_path: Path) -> None:
    done = tmp_path / "prepared"
    first = subprocess.run(["bash", "-c", preparation(done, "digits textures")], timeout=120)
    assert first.returncode == 0 and (done / ".prepared").is_file()
    assert (done / ".prepare.lock").is_file()
    started = time.monotonic()
    again = subprocess.run(["bash", "-c", preparation(done, "no_such_dataset")], timeout=60)
    assert again.returncode == 0  # the marker skips the work (it would fail on this name)
    assert time.monotonic() - started < 5
    failed = tmp_path / "failed"
    broken = subprocess.run(
        ["bash", "-c", preparation(failed, "no_such_dataset")], capture_output=True, timeout=120
    )
    assert broken.returncode != 0 and not (failed / ".prepared").exists()
    assert b"unknown dataset 'no_such_dataset'" in broken.stderr


def listening(port: int) -> set[str]:
    """IPv4 addresses with a socket listening on ``port`` (state 0A in /proc/net/tcp)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, hex_port = local.split(":")
        if state == "0A" and int(hex_port, 16) == port:
            found.add(".".join(str(int(address[i : i + 2], 16)) for i in (6, 4, 2, 0)))
    return found


def our_servers(folder: Path) -> list[int]:
    """Pids of the `mlflow server` processes whose command line names ``folder``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if "mlflow" in cmdline and " server " in cmdline and str(folder) in cmdline:
                pids.append(int(entry.name))
    return pids


@pytest.mark.slow
def test_the_mlflow_script_listens_on_the_private_ip_and_loopback_only(tmp_path: Path) -> None:
    port = free_port()
    script = (
        mlflow_script()
        .replace("s3://CHANGE-ME-bucket/raysweep/mlflow-artifacts", str(tmp_path / "artifacts"))
        .replace("/mnt/mlflow", str(tmp_path))
        .replace(":5000", f":{port}")
        .replace("--port 5000", f"--port {port}")
        .replace("mlflow server", f"{MLFLOW_CLI} server")
        .replace("--serve-artifacts", "--serve-artifacts --workers 1")  # 2 cores, 2 servers
    )
    env = {"PATH": "/usr/bin:/bin", "MLFLOW_BACKEND_STORE_URI": f"sqlite:///{tmp_path}/mlflow.db"}
    private_ip = subprocess.run(["hostname", "-I"], capture_output=True, text=True).stdout.split()
    try:
        done = subprocess.run(
            ["bash", "-c", script], capture_output=True, text=True, timeout=240, env=env
        )
        addresses = listening(port)
        api = f"http://{private_ip[0]}:{port}/api/2.0/mlflow/experiments/search?max_results=1"
        with urllib.request.urlopen(api, timeout=10) as response:  # its Host header is allowed
            searched = json.load(response)
        rerun = subprocess.run(
            ["bash", "-c", script], capture_output=True, text=True, timeout=60, env=env
        )
    finally:
        servers = our_servers(tmp_path)
        procs = [Proc(pid, stat[1], stat[2]) for pid in servers if (stat := read_stat(pid))]
        procs += [child for pid in servers for child in descendants(pid)]
        for proc in procs:
            proc.signal(signal.SIGTERM)
        for proc in wait_gone(procs, 10):
            proc.signal(signal.SIGKILL)
    assert done.returncode == 0, done.stderr[-3000:]
    assert addresses == {private_ip[0], "127.0.0.1"}
    assert f"http://{private_ip[0]}:{port}" in done.stdout
    assert [e["name"] for e in searched["experiments"]] == ["Default"]
    assert len(servers) == 2  # the rerun found both healthy and started none
    assert rerun.returncode == 0
