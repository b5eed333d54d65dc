"""Probe runners that look at images and representations: ``inversion``, ``effective_images``,
``tsne``, ``featvis``, and the head-only ``influence`` probe.

Each runner takes a :class:`~raysweep.probes.context.ProbeContext` and returns a
:class:`~raysweep.probes.context.ProbeOutput`; the mathematics lives in :mod:`raysweep.measures`.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import silhouette_score
from torch import Tensor, nn

from raysweep.measures.featvis import visualize_feature
from raysweep.measures.fisher import weight_fisher_logvar
from raysweep.measures.influence import influence_matrix, top_k_label_match
from raysweep.measures.inversion import (
    effective_images,
    inversion_loss,
    invert,
    logvar_noise_variances,
    variational_invert,
)
from raysweep.measures.tsne import plot_tsne, tsne_embedding
from raysweep.probes.context import (
    ProbeContext,
    ProbeOutput,
    fisher_plateau,
    fisher_summary,
    sample_curve,
    training_label,
    write_grid,
    write_json,
)

# Head-only logistic regression for the influence probe: Adam is insensitive to the scale of
# the features, which differs between natural and robust sources.
HEAD_LR = 1e-2
HEAD_BATCH = 64


def _inversion_kwargs(ctx: ProbeContext, stream: int) -> dict:
    p = ctx.params
    return {
        "steps": p["steps"],
        "step_size": p["step_size"],
        "start_sigma": p["start_sigma"],
        "generator": ctx.generator(stream),
    }


def run_inversion(ctx: ProbeContext) -> ProbeOutput:
    """Representation inversion (Terzi et al. Def. 0.1): from 0.5 + σN(0, I), ``steps``
    ℓ₂-normalised steps on ‖f(x') − f(x)‖/‖f(x)‖ for ``images`` source test images.

    Artifact ``inversion.png``: originals (top row) over reconstructions. Series
    ``probe/inversion_loss`` every steps/100 steps; metrics ``probe/inversion_final_loss`` and
    ``probe/inversion_pixel_rmse`` = RMS pixel difference between reconstruction and original.
    """
    x, _ = ctx.source_test(ctx.params["images"])
    recon, curve = invert(ctx.model, ctx.features(x), **_inversion_kwargs(ctx, 0))
    path = write_grid(ctx.path("inversion.png"), torch.cat([x, recon]), nrow=len(x))
    return ProbeOutput(
        metrics={
            "probe/inversion_final_loss": curve[-1],
            "probe/inversion_pixel_rmse": float((recon - x).pow(2).mean().sqrt()),
        },
        series={"probe/inversion_loss": sample_curve(curve)},
        artifacts=[path],
    )


def run_effective_images(ctx: ProbeContext) -> ProbeOutput:
    """Variational inversion and effective images (Terzi et al. App. D, Alg. 1 and 2).

    The noise covariance Σ* is the variational posterior of the weight Fisher probe, computed
    here on ``fisher_images`` images at ``beta`` with the same convergence rule
    (``fisher_min_steps``, ``fisher_max_steps``, ``fisher_tolerance``, ``fisher_lr``; see
    :func:`~raysweep.probes.information.run_weight_fisher`) and turned into per-weight
    variances (:func:`~raysweep.measures.inversion.logvar_noise_variances`). Then ``steps``
    steps of inversion with the weights perturbed once (variational) or afresh every step
    (effective).

    Artifacts ``variational.png`` and ``effective.png`` (originals over results). Series
    ``probe/variational_loss``, ``probe/effective_loss`` (under the noise); metrics their
    final values and ``probe/{variational,effective}_clean_loss``: L_inv of the result under
    the unperturbed network; ``probe/effective_fisher_{mean_logvar, mean_logvar_change, steps,
    converged, final_loss}`` as the weight Fisher probe's.
    """
    p = ctx.params
    xf, yf = ctx.source_test(p["fisher_images"])
    wf = weight_fisher_logvar(
        ctx.model,
        xf,
        yf,
        plateau=fisher_plateau(p, prefix="fisher_"),
        beta=p["beta"],
        lr=p["fisher_lr"],
        generator=ctx.generator(1),
    )
    variances = logvar_noise_variances(ctx.model, wf.layer_logvars)
    x, _ = ctx.source_test(p["images"])
    z = ctx.features(x)
    summary = {f"probe/effective_fisher_{k}": v for k, v in fisher_summary(wf).items()}
    out = ProbeOutput(metrics=summary)
    for kind, fn, stream in (
        ("variational", variational_invert, 2),
        ("effective", effective_images, 3),
    ):
        images, curve = fn(ctx.model, z, variances, **_inversion_kwargs(ctx, stream))
        clean = float(inversion_loss(ctx.features(images), z).mean())
        out.metrics[f"probe/{kind}_final_loss"] = curve[-1]
        out.metrics[f"probe/{kind}_clean_loss"] = clean
        out.series[f"probe/{kind}_loss"] = sample_curve(curve)
        out.artifacts.append(
            write_grid(ctx.path(f"{kind}.png"), torch.cat([x, images]), nrow=len(x))
        )
    return out


def run_tsne(ctx: ProbeContext) -> ProbeOutput:
    """2-D t-SNE of the penultimate features of ``images`` source test images (Terzi et al.
    Fig. 6), one panel titled with the source's training ε and kind.

    Artifacts ``tsne.png``, ``tsne_embedding.npy`` [N, 2], ``tsne_labels.npy`` [N]. Metrics
    ``probe/tsne_points`` = N and ``probe/tsne_silhouette``: the silhouette score of the class
    labels in the embedding (Rousseeuw 1987; −1..1, lower = classes more entangled).
    """
    x, y = ctx.source_test(ctx.params["images"])
    emb = tsne_embedding(ctx.features(x).numpy(), ctx.params["perplexity"], seed=ctx.seed)
    labels = y.numpy()
    np.save(ctx.path("tsne_embedding.npy"), emb)
    np.save(ctx.path("tsne_labels.npy"), labels)
    plot_tsne({training_label(ctx.source): (emb, labels)}, ctx.path("tsne.png"))
    classes = np.unique(labels).size
    silhouette = silhouette_score(emb, labels) if 2 <= classes < len(labels) else float("nan")
    return ProbeOutput(
        metrics={"probe/tsne_points": float(len(labels)), "probe/tsne_silhouette": silhouette},
        artifacts=[ctx.path(n) for n in ("tsne.png", "tsne_embedding.npy", "tsne_labels.npy")],
    )


def featvis_seed_dataset(source_dataset: str) -> str:
    """Out-of-distribution seeds (Utrera et al. A.1): the built-in ``textures`` for a source
    trained on ``shapes``/``shapes_outline``, the built-in ``shapes`` for any other source."""
    return "textures" if source_dataset in ("shapes", "shapes_outline") else "shapes"


def run_featvis(ctx: ProbeContext) -> ProbeOutput:
    """Feature visualisation (Engstrom et al. 2019; Utrera et al. A.1, Fig. 1b): gradient
    ascent on each of ``coordinates`` penultimate coordinates (drawn at random, fixed by the
    seed), ``steps`` ℓ₂-normalised steps from the same ``seeds`` OOD test images of
    :func:`featvis_seed_dataset`.

    Artifact ``featvis.png``: the seeds (top row), then one row per coordinate;
    ``featvis.json``: seed dataset, coordinates, per-coordinate curves. Metrics
    ``probe/featvis_gain`` = mean over coordinates of f_c(x_T) − f_c(x_0) (batch means),
    ``probe/featvis_final_activation`` = mean f_c(x_T); series ``probe/featvis_activation``.
    """
    p = ctx.params
    seed_name = featvis_seed_dataset(ctx.source["dataset"])
    seeds = ctx.model_input(ctx.subset(seed_name, "test", p["seeds"]).images)
    dim = ctx.model.head.in_features
    if p["coordinates"] > dim:
        raise ValueError(
            f"probe 'featvis': coordinates={p['coordinates']} exceeds the {dim} features"
        )
    coords = sorted(torch.randperm(dim, generator=ctx.generator())[: p["coordinates"]].tolist())
    rows, curves = [seeds], []
    for c in coords:
        images, curve = visualize_feature(
            ctx.model, seeds, c, steps=p["steps"], step_size=p["step_size"]
        )
        rows.append(images)
        curves.append(curve)
    grid = write_grid(ctx.path("featvis.png"), torch.cat(rows), nrow=len(seeds))
    arr = np.asarray(curves)
    record = {"seed_dataset": seed_name, "coordinates": coords, "curves": arr}
    return ProbeOutput(
        metrics={
            "probe/featvis_gain": float((arr[:, -1] - arr[:, 0]).mean()),
            "probe/featvis_final_activation": float(arr[:, -1].mean()),
        },
        series={"probe/featvis_activation": sample_curve(arr.mean(axis=0).tolist())},
        artifacts=[grid, write_json(ctx.path("featvis.json"), record)],
    )


def fit_head(
    features: Tensor, labels: Tensor, num_classes: int, epochs: int, generator: torch.Generator
) -> nn.Linear:
    """Multinomial logistic regression on frozen features: min_θ mean CE(Wφ + b, y) by Adam
    (lr 1e-2, batches of 64, ``epochs`` passes in a seeded order) from W = 0, b = 0."""
    head = nn.Linear(features.shape[1], num_classes)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    opt = torch.optim.Adam(head.parameters(), lr=HEAD_LR)
    for _ in range(epochs):
        for idx in torch.randperm(len(labels), generator=generator).split(HEAD_BATCH):
            loss = F.cross_entropy(head(features[idx]), labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return head.requires_grad_(False)


def _accuracy(head: nn.Linear, features: Tensor, labels: Tensor) -> float:
    with torch.no_grad():
        return float((head(features).argmax(1) == labels).double().mean())


def run_influence(ctx: ProbeContext) -> ProbeOutput:
    """Influence functions through a head trained on frozen source features (Utrera et al. §6,
    Fig. 7b; Koh & Liang 2017).

    The head is fitted (:func:`fit_head`) on ``train_images`` images of the target's TRAIN
    split; influence[t, i] = g_t H⁺ g_iᵀ over the head's parameters for ``test_images`` target
    test images (:func:`~raysweep.measures.influence.influence_matrix`), and
    ``probe/influence_topk_match`` = share of test images whose ``k`` most influential training
    images all carry its label. Also ``probe/influence_head_{train,test}_acc``. Artifacts
    ``influence.npy`` [T, N] and ``influence.json`` (subset indices, accuracies).
    """
    assert ctx.target is not None
    p = ctx.params
    train = ctx.subset(ctx.target, "train", p["train_images"])
    test = ctx.subset(ctx.target, "test", p["test_images"])
    x_train, x_test = ctx.model_input(train.images), ctx.model_input(test.images)
    f_train, f_test = ctx.features(x_train), ctx.features(x_test)
    head = fit_head(f_train, train.labels, train.info.num_classes, p["epochs"], ctx.generator())
    ctx.model.head = head
    inf = influence_matrix(ctx.model, x_train, train.labels, x_test, test.labels)
    match = top_k_label_match(inf, train.labels.numpy(), test.labels.numpy(), p["k"])
    acc = {
        "train": _accuracy(head, f_train, train.labels),
        "test": _accuracy(head, f_test, test.labels),
    }
    np.save(ctx.path("influence.npy"), inf)
    record = {
        "target": ctx.target,
        "topk_match": match,
        "k": p["k"],
        "accuracy": acc,
        "train_indices": ctx.indices(ctx.target, "train", p["train_images"]),
        "test_indices": ctx.indices(ctx.target, "test", p["test_images"]),
    }
    return ProbeOutput(
        metrics={
            "probe/influence_topk_match": match,
            "probe/influence_head_train_acc": acc["train"],
            "probe/influence_head_test_acc": acc["test"],
        },
        artifacts=[ctx.path("influence.npy"), write_json(ctx.path("influence.json"), record)],
    )
