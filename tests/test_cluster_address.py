"""`--address ray://…` (Ray Client) is refused in one line before anything is recorded.

Under Ray Client, `Tuner.fit` runs as an actor on the cluster (ray/tune/tuner.py), so raysweep's
recorder callback, the only MLflow writer, would not run in the driver that launched the sweep.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from micro_specs import one_source_spec

from raysweep.cli import main
from raysweep.driver.cluster import ClusterError, check_cluster_reachable


def test_ray_client_addresses_are_refused_with_the_way_to_run_on_the_head() -> None:
    with pytest.raises(ClusterError) as error:
        check_cluster_reachable("ray://10.0.0.5:10001")
    message = str(error.value)
    assert message.startswith("Ray Client addresses (ray://10.0.0.5:10001) are not supported")
    assert "ray job submit -- raysweep launch SPEC --address auto" in message


def test_launch_with_a_ray_client_address_exits_2_and_records_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = tmp_path / "client.yaml"
    spec.write_text(yaml.safe_dump(one_source_spec("client")))
    root = tmp_path / "runs"
    code = main(["--root", str(root), "launch", str(spec), "--address", "ray://127.0.0.1:1"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("raysweep: error: Ray Client addresses (ray://127.0.0.1:1)")
    assert "\n" not in err
    assert not root.exists()
