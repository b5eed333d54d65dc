"""The driver: Ray + Tune + MLflow on the machine that runs ``raysweep``; never torch.

- :mod:`~raysweep.driver.launcher`: ``launch`` / ``resume``, the stage graph, skip-if-done
- :mod:`~raysweep.driver.context`: the ``StageContext`` every stage gets, the ``Outcome``
- one module per stage: :mod:`~raysweep.driver.pretrain`, :mod:`~raysweep.driver.probe`,
  :mod:`~raysweep.driver.search` (with :mod:`~raysweep.driver.studies`),
  :mod:`~raysweep.driver.finetune` (with :mod:`~raysweep.driver.packing` and the Tune
  callback :mod:`~raysweep.driver.recorder`)
- :mod:`~raysweep.driver.tracker`: the MLflow writer; :mod:`~raysweep.driver.entrypoints`:
  the worker functions handed to Ray, by import path
- :mod:`~raysweep.driver.cluster`, :mod:`~raysweep.driver.shared_root`: attaching to Ray
- :mod:`~raysweep.driver.status`, :mod:`~raysweep.driver.report`: ``status`` and ``analyze``

Submodules load on first access, so importing the package costs nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from raysweep.lazy import lazy_attributes

if TYPE_CHECKING:
    from raysweep.driver.context import Outcome
    from raysweep.driver.launcher import launch, resume
    from raysweep.driver.report import analyze
    from raysweep.driver.status import SweepStatus, sweep_status

__getattr__, __dir__ = lazy_attributes(
    __name__,
    {
        "Outcome": "context",
        "launch": "launcher",
        "resume": "launcher",
        "analyze": "report",
        "SweepStatus": "status",
        "sweep_status": "status",
    },
)

__all__ = ["Outcome", "SweepStatus", "analyze", "launch", "resume", "sweep_status"]
