"""Frozen-feature cache: the penultimate features of a source on a target split, computed once.

A head-only fine-tuning trial (Utrera et al. 2021 ``blocks: 0``; the linear probe) trains
``W h + b`` on ``h = pool(blocks(stem(normalize(x))))``, and with every BatchNorm frozen (eval
mode, ``update_frozen_bn_stats: false``) and no augmentation ``h`` is a fixed function of the
image. So the frozen network runs once per

    (source key, target, split, normalisation, input size/channels, feature version)

over the WHOLE split, the features go to ``<root>/store/features/<key>.pt``, and every trial of
that source×target — any subset size, any seed — indexes its subset's rows out of them. The
head's init, the batch order and the SGD steps are those of the uncached path (the same
:func:`raysweep.train.finetune`, fed the features instead of recomputing them).

When the cache is NOT used (the trial computes its prefix itself, see
``raysweep.train.finetuning``):

* ``blocks > 0`` or a Terzi mode: the first trained block sits before the features;
* ``update_frozen_bn_stats: true``: BatchNorms in train mode make ``h`` batch-dependent;
* any stage before the head with a Dropout (train mode makes it random);
* for the TRAIN split only, ``augment`` other than ``none``: each epoch sees new inputs, so
  only the test features (never augmented) come from the cache.

Concurrency: trials that need the same features at the same moment take an exclusive
``fcntl`` lock on ``<key>.lock``; the first computes and writes (temporary file, then
``os.replace``), the others wait and then read. A crash leaves no partial ``.pt``.

Integrity: ``<key>.json`` beside each file records its sha256; a file that does not match (a
flipped bit, a file from before checksums) is recomputed, never read.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from raysweep.models.net import TransferNet
from raysweep.store import Store, exclusive, sha256_file, write_json_atomic
from raysweep.train.attacks import eval_mode
from raysweep.train.common import model_batch

#: Bump when the meaning of stored features changes (a new prepare, a new pooling, ...).
FEATURES_VERSION = 1
#: Batch of the one-off forward pass; the same as the fine-tuning loop's evaluation batch.
BATCH = 512


def head_only(job: dict[str, Any], model: TransferNet) -> bool:
    """True when everything before the head is frozen AND deterministic for this job.

    ``blocks == 0`` trains only the head; frozen BatchNorms stay in eval mode unless
    ``update_frozen_bn_stats``; a Dropout anywhere before the head would be in train mode.
    """
    blocks = job["blocks"]
    if isinstance(blocks, bool) or blocks != 0 or job["update_frozen_bn_stats"]:
        return False
    prefix = model.stages()[:-1]
    return not any(isinstance(m, nn.Dropout) for stage in prefix for m in stage.modules())


def feature_key(source_key: str, target: str, split: str, model: TransferNet) -> str:
    """First 16 hex digits of SHA-256 over what determines the features.

    The normaliser's mean/std enter by value (``normalization: target`` swaps them), so two
    jobs share features exactly when their frozen networks see the same input.
    """
    payload = {
        "version": FEATURES_VERSION,
        "source_key": source_key,
        "target": target,
        "split": split,
        "arch": model.arch,
        "input_size": model.input_size,
        "input_channels": model.input_channels,
        "mean": [round(float(v), 10) for v in model.normalize.mean.flatten()],
        "std": [round(float(v), 10) for v in model.normalize.std.flatten()],
    }
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def compute_features(
    model: TransferNet, images: Tensor, prepare: Callable[[Tensor], Tensor]
) -> Tensor:
    """``h = model.run_stages(prepare(x), 0, -1)`` for every image, in eval mode, no autograd.

    ``no_grad`` rather than ``inference_mode``: the head later trains on these tensors, and
    autograd refuses to save inference tensors for backward. Batches of :data:`BATCH` as the
    uncached fine-tuning path uses, on the model's device; the
    result is float32 on the CPU, ``[N, feature_dim]``.
    """
    device = next(model.parameters()).device
    parts: list[Tensor] = []
    with eval_mode(model), torch.no_grad():
        for start in range(0, len(images), BATCH):
            h = model_batch(images, slice(start, start + BATCH), device, prepare)
            parts.append(model.run_stages(h, 0, len(model.stages()) - 1).float().cpu())
    if not parts:
        return torch.empty(0, model.head.in_features)
    return torch.cat(parts)


def write_tensor_atomic(path: Path, payload: dict[str, Any]) -> None:
    """``torch.save`` to a temporary file beside ``path``, then rename: never half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@functools.lru_cache(maxsize=4)
def load_features(path: str) -> Tensor:
    """Features of one stored file; kept in memory across the trials a reused actor runs.

    Content-addressed files never change, so caching by path is safe. Four entries are the
    train and test splits of two targets (ResNet-50 on CIFAR-10's train split: 400 MB).
    """
    return torch.load(path, weights_only=True)["features"]


def stored_features(
    store: Store,
    source_key: str,
    target: str,
    split: str,
    model: TransferNet,
    images: Tensor,
    prepare: Callable[[Tensor], Tensor],
) -> tuple[Tensor, bool]:
    """The split's features from the store, computing and storing them if missing.

    Returns ``(features [N, d], hit)``; ``hit`` is False for the caller that computed them.
    """
    key = feature_key(source_key, target, split, model)
    path = store.features(key)
    if features_intact(path):
        return load_features(str(path)), True
    with exclusive(path.with_suffix(".lock")):
        if features_intact(path):  # another trial wrote it while we waited for the lock
            return load_features(str(path)), True
        features = compute_features(model, images, prepare)
        meta = {"key": key, "source_key": source_key, "target": target, "split": split}
        write_tensor_atomic(path, {"features": features, "meta": meta, "n": len(images)})
        write_json_atomic(record_of(path), {**meta, "sha256": sha256_file(path)})
    return features, False


def record_of(path: Path) -> Path:
    """The sidecar record of a feature file: its sha256 and what it holds."""
    return path.with_suffix(".json")


def features_intact(path: Path) -> bool:
    """Whether a feature file exists and matches its record's sha256 (else it is recomputed:
    features are derived data). Checked once per process and file version."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return False
    return _matches_record(str(path), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=64)
def _matches_record(path: str, mtime_ns: int, size: int) -> bool:
    try:
        expected = json.loads(record_of(Path(path)).read_text())["sha256"]
    except (OSError, ValueError, KeyError):
        return False
    return sha256_file(Path(path)) == expected


def head_inputs(
    job: dict[str, Any],
    model: TransferNet,
    store: Store,
    train_images: Tensor,
    test_images: Tensor,
    train_index: Tensor,
    prepare: Callable[[Tensor], Tensor],
) -> tuple[Tensor | None, Tensor | None]:
    """Cached inputs of the head for ``finetune(..., cached_inputs=...)``: (train rows, test).

    ``(None, None)`` when the job cannot use the cache; the train part is None when the job
    augments its training images (see the module docstring). ``train_images`` is the whole
    train split, ``train_index`` the subset's rows in it.
    """
    if not head_only(job, model):
        return None, None
    source, target = job["source_key"], job["target"]
    test, _ = stored_features(store, source, target, "test", model, test_images, prepare)
    if job["augment"] != "none":
        return None, test
    train, _ = stored_features(store, source, target, "train", model, train_images, prepare)
    return train[train_index], test
