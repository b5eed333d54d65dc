"""The MLflow layout of a sweep, in one place: names the driver writes and analysis reads.

    experiment  raysweep/<sweep>
    parent run  tags raysweep.sweep, raysweep.role=sweep; the spec, git SHA, package versions
    child runs  one per job: tags raysweep.sweep, raysweep.role=job, raysweep.stage,
                raysweep.key (the job's stable key), every axis (also as a param), and
                raysweep.error when it FAILED; metrics per epoch (step = epoch)

A FINISHED child run means its job is done. The writer is :mod:`raysweep.driver.tracker`
(on the driver only); readers (``raysweep status``, ``plan --estimate``, :mod:`raysweep.analysis`)
list runs with :func:`iter_runs` and :func:`job_filter`. No MLflow import here: the client is
passed in, so this module is as cheap to import as the names it holds.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

EXPERIMENT_PREFIX = "raysweep/"

KEY_TAG = "raysweep.key"
SWEEP_TAG = "raysweep.sweep"
ROLE_TAG = "raysweep.role"
STAGE_TAG = "raysweep.stage"
ERROR_TAG = "raysweep.error"
#: The Ray node id and the hostname a job ran on (the last ones, if it was retried elsewhere).
NODE_TAG = "raysweep.node"
HOST_TAG = "raysweep.host"
#: On a source run: whether the checkpoint was already in the store (recorded, not retrained).
REUSED_TAG = "raysweep.reused_checkpoint"
GIT_SHA_TAG = "raysweep.git_sha"
#: The launch (one ``raysweep launch`` / ``resume`` process) that wrote a run; the parent run
#: carries the latest. Only one launch runs a sweep at a time (raysweep.driver.lock).
LAUNCH_TAG = "raysweep.launch"
#: Parent-run tags ``version.<package>``.
VERSION_TAG_PREFIX = "version."
PARENT_TAG = "mlflow.parentRunId"
RUN_NAME_TAG = "mlflow.runName"
#: MLflow's own columns (Source, User, Version in the UI), set on every run.
SOURCE_NAME_TAG = "mlflow.source.name"
SOURCE_TYPE_TAG = "mlflow.source.type"
GIT_COMMIT_TAG = "mlflow.source.git.commit"
USER_TAG = "mlflow.user"
#: The experiment tag MLflow 3 picks an experiment's landing page from: training runs, not the
#: GenAI traces overview (which it shows for an experiment without it).
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"

#: Values of ROLE_TAG.
SWEEP_ROLE = "sweep"
JOB_ROLE = "job"

#: The job's config as JSON, cut at this many characters (MLflow caps param values).
CONFIG_PARAM = "config"
CONFIG_PARAM_LIMIT = 6000
ERROR_TAG_LIMIT = 5000

#: Metric families a job reports, with step = epoch.
METRIC_PREFIXES = ("train/", "test/", "adv/", "val/")
#: A tuned hyperparameter's param and tag on search and grid runs: ``search.lr``.
SEARCH_PREFIX = "search."

#: A fine-tune run's convergence record, logged with its final epoch (the rule:
#: raysweep.train.convergence): optimiser steps, relative change of the training loss over the
#: last 10 % of the steps, that tail's share of the run's whole decrease at the base learning
#: rate, and 1/0 by the rule; the tag repeats the verdict as "true"/"false" for the UI's filter.
STEPS_METRIC = "train/steps"
LOSS_CHANGE_METRIC = "train/loss_rel_change"
TAIL_SHARE_METRIC = "train/loss_tail_share"
CONVERGED_METRIC = "train/converged"
CONVERGED_TAG = "converged"
#: The linear_probe probe's name, and its test accuracy (%) set beside a fine-tune's test/acc.
LINEAR_PROBE = "linear_probe"
LINEAR_PROBE_ACC = "probe/linear_acc"

#: Readers that keep a copy of a sweep's runs (the driver's job ledger, analysis' run cache)
#: fetch the runs that ended after their newest one, less this margin (ms), a safety net only:
#: what a killed driver left unrecorded is found by run id (the ledger's RUNNING entries;
#: analysis asks for the ledger's FINISHED runs it lacks), whatever the clocks say. A wide
#: margin would re-read every run of the sweep's last minute (1,200 at 20 jobs/s).
END_TIME_MARGIN_MS = 1000

#: The subset size label of the whole training set (``subset_size: all`` in specs).
ALL_IMAGES = "all"


class TrackingError(RuntimeError):
    """The tracking server or store cannot be used; the message says how to fix it."""


def experiment_name(sweep: str) -> str:
    return f"{EXPERIMENT_PREFIX}{sweep}"


def subset_label(size: int | None) -> str:
    """How a subset size is written in params, tags, file names and reports (None = all)."""
    return ALL_IMAGES if size is None else str(size)


def converged_label(metric: float) -> str:
    """The CONVERGED_TAG value of a run whose CONVERGED_METRIC is ``metric`` (1.0 or 0.0)."""
    return "true" if metric >= 0.5 else "false"


def search_param(name: str) -> str:
    return f"{SEARCH_PREFIX}{name}"


#: Config keys of a fine-tune job that are axes (own params) or bookkeeping, not its recipe.
_NOT_RECIPE = frozenset({"source_key", "target", "subset_size", "seed", "blocks", "search"})
#: Nested sections lifted into their parent's namespace: ``finetune.lr``, ``pretrain.eps``.
_LIFTED = frozenset({"optimizer", "attack"})


def recipe_params(stage: str, config: Mapping[str, Any]) -> dict[str, str]:
    """A job's resolved recipe as flat MLflow params, searchable in the UI and in
    ``search_runs`` (``params.`finetune.lr` = '0.1'``): ``finetune.*`` of a fine-tune job,
    ``pretrain.*`` of a source (its training kind and attack, its recipe), ``probe.*`` of a
    probe. Lists are JSON; values that are None are left out."""
    if stage == "finetune":
        return flatten("finetune", {k: v for k, v in config.items() if k not in _NOT_RECIPE})
    if stage == "pretrain":
        recipe = {**(config.get("pretrain") or {}), **config["training"]}
        if "checkpoint" in config:
            recipe["checkpoint"] = config["checkpoint"]
        return flatten("pretrain", recipe)
    if stage == "probe":
        return flatten("probe", config["probe"]["params"])
    return {}


def flatten(prefix: str, values: Mapping[str, Any]) -> dict[str, str]:
    """``{prefix}.{key}`` for every leaf of ``values`` (see :func:`recipe_params`)."""
    flat: dict[str, str] = {}
    for key, value in values.items():
        if value is None:
            continue
        if isinstance(value, Mapping):
            flat.update(flatten(prefix if key in _LIFTED else f"{prefix}.{key}", value))
        elif isinstance(value, list | tuple):
            flat[f"{prefix}.{key}"] = json.dumps(value, sort_keys=True)
        else:
            flat[f"{prefix}.{key}"] = str(value).lower() if isinstance(value, bool) else str(value)
    return flat


def run_id_filters(run_ids: Iterable[str], per_query: int = 100) -> list[str]:
    """``attributes.run_id IN (…)`` filters naming ``run_ids``, ``per_query`` ids each (the
    only attribute MLflow's search compares with a list)."""
    ids = list(run_ids)
    return [
        f"attributes.run_id IN ({', '.join(quote(i) for i in ids[start : start + per_query])})"
        for start in range(0, len(ids), per_query)
    ]


class NothingToAnalyze(Exception):
    """A sweep has no finished runs of the requested stage (a user error, not a bug)."""


def quote(value: str) -> str:
    """A single-quoted string of MLflow's filter grammar."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def job_filter(
    stage: str | None = None, *, sweep: str | None = None, status: str | None = None
) -> str:
    """The search_runs filter of a sweep's job runs, of one stage and status if given.

    ``status`` is a comparison on the run status, e.g. ``= 'FINISHED'`` or ``!= 'FINISHED'``.
    """
    parts = [f"tags.`{ROLE_TAG}` = '{JOB_ROLE}'"]
    if sweep is not None:
        parts.append(f"tags.`{SWEEP_TAG}` = {quote(sweep)}")
    if stage is not None:
        parts.append(f"tags.`{STAGE_TAG}` = {quote(stage)}")
    if status is not None:
        parts.append(f"attributes.status {status}")
    return " AND ".join(parts)


def sweep_experiment(client: Any, sweep: str) -> list[str]:
    """The sweep's experiment id as a one-item list for ``search_runs``; empty if it has none."""
    experiment = client.get_experiment_by_name(experiment_name(sweep))
    return [] if experiment is None else [experiment.experiment_id]


def iter_runs(
    client: Any, experiment_ids: Iterable[str], filter_string: str, page_size: int = 1000
) -> Iterator[Any]:
    """Every active run matching ``filter_string``, page by page (``page_token``).

    Ordered by start time so that runs created while we page land on later pages instead of
    shifting earlier ones; a caller that must not count a run twice de-duplicates by run id.
    """
    experiment_ids = list(experiment_ids)
    if not experiment_ids:
        return
    token: str | None = None
    while True:
        page = client.search_runs(
            experiment_ids,
            filter_string,
            max_results=page_size,
            order_by=["attributes.start_time ASC", "attributes.run_id ASC"],
            page_token=token,
        )
        yield from page
        token = page.token
        if not token:
            return


def sqlite_path(tracking_uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI, None for any other store."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    return Path(tracking_uri.removeprefix("sqlite:///"))


def store_exists(tracking_uri: str) -> bool:
    """False only for a SQLite store whose file is not there yet: readers must not open it,
    since opening creates it (``status`` and ``analyze`` never write)."""
    path = sqlite_path(tracking_uri)
    return path is None or path.is_file()


def check_reachable(tracking_uri: str, timeout_s: float = 5.0) -> None:
    """Fail fast, before any work, if an HTTP tracking server does not answer."""
    if not tracking_uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(f"{tracking_uri.rstrip('/')}/health", timeout=timeout_s):
            return
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise TrackingError(
            f"MLflow tracking server {tracking_uri} is unreachable ({reason}); start it or "
            "pass another --tracking-uri"
        ) from None
