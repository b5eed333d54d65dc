"""raysweep: transfer-learning sweeps of the adversarial-robustness literature.

The public API (what ``bench/`` and users import); each name loads its module on first use, so
``import raysweep`` stays cheap::

    spec = raysweep.load_spec("search_spaces/quickstart.yaml")
    plan = raysweep.make_plan(spec)              # every job, per stage, with a stable key
    print(raysweep.describe_plan(plan))
    outcome = raysweep.launch("search_spaces/quickstart.yaml", root="raysweep_runs")
    print(raysweep.sweep_status(raysweep.SweepDir(root, "quickstart")).render())

The layers, top to bottom (imports point down only; ``pyproject.toml``'s import-linter
contracts check it): ``cli`` → ``driver`` (Ray, Tune, MLflow; never torch) → ``plan`` →
``spec``; ``worker`` (inside Ray workers; never ``driver``) → ``probes`` and the science
packages ``data``, ``models``, ``train``, ``measures``; ``analysis`` reads MLflow through
``schema``. ``schema``, ``protocol``, ``store`` and ``sweepdir`` hold the names and paths
every layer shares.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from raysweep.lazy import lazy_attributes

if TYPE_CHECKING:
    from raysweep.driver import Outcome, SweepStatus, analyze, launch, resume, sweep_status
    from raysweep.plan import Job, Plan, describe_plan, make_plan
    from raysweep.spec import SpecError, SweepSpec, load_spec, parse_spec
    from raysweep.sweepdir import SweepDir

__version__ = "0.1.0"

__getattr__, __dir__ = lazy_attributes(
    __name__,
    {
        "load_spec": "spec",
        "parse_spec": "spec",
        "SpecError": "spec",
        "SweepSpec": "spec",
        "make_plan": "plan",
        "describe_plan": "plan",
        "Plan": "plan",
        "Job": "plan",
        "launch": "driver.launcher",
        "resume": "driver.launcher",
        "Outcome": "driver.context",
        "sweep_status": "driver.status",
        "SweepStatus": "driver.status",
        "analyze": "driver.report",
        "SweepDir": "sweepdir",
    },
)

__all__ = [
    "Job",
    "Outcome",
    "Plan",
    "SpecError",
    "SweepDir",
    "SweepSpec",
    "SweepStatus",
    "analyze",
    "describe_plan",
    "launch",
    "load_spec",
    "make_plan",
    "parse_spec",
    "resume",
    "sweep_status",
]
