"""The runs root must be one filesystem on every node: checked on a real two-node cluster.

The worker node runs in its own mount namespace where one folder is an empty tmpfs
(`cluster_utils.hiding`), as a machine without the shared mount would see it. A root inside that
folder must be refused before anything is recorded; a root outside it passes on both nodes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from cluster_utils import CLUSTER_ENV, hiding, local_cluster, node_ids
from micro_specs import one_source_spec

from raysweep.driver.shared_root import MARKER_DIR

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

CHECK_SCRIPT = """
import json, sys
from pathlib import Path
import ray
from raysweep.driver.shared_root import check_shared_root
ray.init(address=sys.argv[1], log_to_driver=False)
views = check_shared_root(Path(sys.argv[2]))
print(json.dumps([[v.node_id, v.hostname, v.sees_marker] for v in views]))
"""


def run(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        command,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **CLUSTER_ENV},
    )


def test_a_root_one_node_cannot_see_is_refused_before_anything_is_recorded(
    tmp_path: Path,
) -> None:
    hidden = tmp_path / "not-shared"
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(one_source_spec("unshared")))
    with local_cluster(tmp_path / "cluster", worker_prefix=hiding(hidden)) as cluster:
        worker_id = node_ids(cluster.address)[1]
        visible = tmp_path / "shared"
        check = run([sys.executable, "-c", CHECK_SCRIPT, cluster.address, str(visible)], tmp_path)
        root = hidden / "runs"
        cli = [sys.executable, "-m", "raysweep.cli", "--root", str(root), "launch", str(spec)]
        refused = run([*cli, "--address", cluster.address], tmp_path)

    assert check.returncode == 0, check.stderr[-3000:]
    views = json.loads(check.stdout.strip().splitlines()[-1])
    assert len({node for node, _, _ in views}) == 2
    assert all(seen for _, _, seen in views)
    assert not (visible / MARKER_DIR).exists()  # the marker is cleaned up

    assert refused.returncode == 2, refused.stderr[-3000:]
    message = refused.stderr.strip().splitlines()[-1]  # Ray's own log lines come first
    assert message.startswith(f"raysweep: error: runs root {root} is not shared: node ")
    assert worker_id[:12] in message
    assert "--root /mnt/shared/" in message
    assert sorted(p.name for p in root.iterdir()) == []  # no sweep folder, no mlflow.db
