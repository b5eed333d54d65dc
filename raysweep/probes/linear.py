"""Probe runner ``linear_probe``: the convex reference of a head-only fine-tune, per grid cell.

One job per (source, target, subset size, seed) of the fine-tuning grid. It draws the subset
exactly as that cell's fine-tune trials draw it (:func:`raysweep.data.sample_subset` on the
target's train split, with the trial's size and seed), takes the source's frozen penultimate
features of those images and of the whole test split — what a ``blocks: 0`` trial trains its
head on (:mod:`raysweep.worker.features`: ``model.run_stages(to_model_input(x), 0, -1)`` in
eval mode, under the fine-tuning normalisation) — and fits
:func:`raysweep.measures.linear_probe.fit_linear_probe`.
"""

from __future__ import annotations

import numpy as np
import torch

from raysweep.data import cached_dataset, sample_subset
from raysweep.measures.linear_probe import fit_linear_probe
from raysweep.models.net import Normalize
from raysweep.probes.context import ProbeContext, ProbeOutput, write_json

#: Images per forward pass (the feature cache's batch).
BATCH = 512


def frozen_features(ctx: ProbeContext, images: torch.Tensor) -> np.ndarray:
    """Penultimate features of uint8 ``images``, batch by batch (float64 for the solver)."""
    parts = [
        ctx.features(ctx.model_input(images[start : start + BATCH]))
        for start in range(0, len(images), BATCH)
    ]
    return torch.cat(parts).double().numpy()


def run_linear_probe(ctx: ProbeContext) -> ProbeOutput:
    """Multinomial logistic regression on the frozen features of the cell's training subset,
    C from ``cs`` by ``folds``-fold cross-validation on that subset, L-BFGS up to ``max_iter``
    iterations; scored on the target's test split.

    Metrics: ``probe/linear_acc`` (test accuracy %, the number to set beside a head-only
    fine-tune's ``test/acc``), ``probe/linear_train_acc``, ``probe/linear_cv_acc`` (mean fold
    accuracy % at the chosen C), ``probe/linear_c``, ``probe/linear_iterations``,
    ``probe/linear_converged`` (0/1: the final fit met its tolerance), ``probe/linear_images``.
    """
    assert ctx.target is not None
    p = ctx.params
    train = cached_dataset(ctx.target, "train", ctx.data_root, ctx.download)
    test = cached_dataset(ctx.target, "test", ctx.data_root, ctx.download)
    if ctx.normalization == "target":  # as the fine-tune trials' models (prepare_target_model)
        info = train.info
        ctx.model.normalize = Normalize(info.mean, info.std, ctx.model.input_channels)
    rows = sample_subset(train.labels, ctx.subset_size, ctx.seed, train.info.num_classes)
    index = torch.as_tensor(rows)
    result = fit_linear_probe(
        frozen_features(ctx, train.images[index]),
        train.labels[index].numpy(),
        frozen_features(ctx, test.images),
        test.labels.numpy(),
        cs=tuple(p["cs"]),
        folds=p["folds"],
        max_iter=p["max_iter"],
        seed=ctx.seed,
    )
    metrics = {
        "probe/linear_acc": result.test_acc,
        "probe/linear_train_acc": result.train_acc,
        "probe/linear_cv_acc": result.cv_acc,
        "probe/linear_c": result.c,
        "probe/linear_iterations": float(result.iterations),
        "probe/linear_converged": float(result.converged),
        "probe/linear_images": float(len(rows)),
    }
    record = {**metrics, **p, "subset_size": ctx.subset_size, "seed": ctx.seed}
    path = write_json(ctx.path("linear_probe.json"), record)
    return ProbeOutput(metrics=metrics, artifacts=[path])
