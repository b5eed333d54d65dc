"""Probes: a measure of :mod:`raysweep.measures` run on a stored source model, as one Ray task.

- :mod:`~raysweep.probes.table`: the one table of probes (name, paper, parameters and
  defaults, per-target flag, runner path) and the validation specs use; torch-free
- :mod:`~raysweep.probes.run`: ``run_probe``, what a probe task calls on the worker
- :mod:`~raysweep.probes.context`: what runners share (model, data subsets, artifact writers)
- :mod:`~raysweep.probes.information`, :mod:`~raysweep.probes.images`,
  :mod:`~raysweep.probes.linear` (``linear_probe``, per grid subset): the runners

Importing the package does not import torch (``run_probe`` loads on first access).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from raysweep.lazy import lazy_attributes
from raysweep.probes.table import PROBES, Probe, ProbeSpec, probe_names, validate_probe

if TYPE_CHECKING:
    from raysweep.probes.run import run_probe

__getattr__, __dir__ = lazy_attributes(__name__, {"run_probe": "run"})

__all__ = ["PROBES", "Probe", "ProbeSpec", "probe_names", "run_probe", "validate_probe"]
