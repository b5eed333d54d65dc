"""The plan: every job of a spec, per stage, with a stable key. Torch-free.

- :mod:`~raysweep.plan.jobs`: ``Job``, ``Plan``, ``job_key``, the stages
- :mod:`~raysweep.plan.recipe`: the JSON config each job computes (what its key hashes)
- :mod:`~raysweep.plan.grid`: ``make_plan``: the spec expanded stage by stage
- :mod:`~raysweep.plan.search`: search groups and trial slots of a ``search:`` section
- :mod:`~raysweep.plan.size`: ``count_jobs``: a plan's size from the spec alone, and its limits
- :mod:`~raysweep.plan.describe`: the text ``raysweep plan`` prints
"""

from raysweep.plan.describe import describe_plan
from raysweep.plan.grid import finetune_jobs, make_plan, pretrain_jobs, probe_jobs
from raysweep.plan.jobs import PROTOCOL_VERSION, STAGES, Job, Plan, job_key
from raysweep.plan.recipe import eval_epochs, finetune_config, source_axes, source_config
from raysweep.plan.size import EVALUATIONS_PER_JOB, MAX_JOBS, count_evaluations, count_jobs

__all__ = [
    "EVALUATIONS_PER_JOB",
    "MAX_JOBS",
    "PROTOCOL_VERSION",
    "STAGES",
    "Job",
    "Plan",
    "count_evaluations",
    "count_jobs",
    "describe_plan",
    "eval_epochs",
    "finetune_config",
    "finetune_jobs",
    "job_key",
    "make_plan",
    "pretrain_jobs",
    "probe_jobs",
    "source_axes",
    "source_config",
]
