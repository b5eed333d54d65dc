"""Probe runners for distances and information measures: ``distance``, ``weight_fisher``,
``diag_fisher``, ``input_fisher``, ``cckl``.

Each runner takes a :class:`~raysweep.probes.context.ProbeContext` (validated params, the loaded
source model, seed, output folder) and returns a :class:`~raysweep.probes.context.ProbeOutput`.
The mathematics lives in :mod:`raysweep.measures`; runners choose data, log and write files.
"""

from __future__ import annotations

import copy

import numpy as np
import torch

from raysweep.measures.distance import class_mean_features, domain_similarity, emd_distance
from raysweep.measures.fisher import diagonal_fisher, weight_fisher_logvar
from raysweep.measures.input_fisher import (
    cckl_pairs,
    g1_g2,
    input_fisher_stats,
    kl_g1_vs_eps,
)
from raysweep.probes.context import (
    ProbeContext,
    ProbeOutput,
    fisher_plateau,
    fisher_summary,
    sample_curve,
    write_json,
)

# G1/G2 pairs are evaluated this many at a time (two forward passes + one JVP per chunk).
PAIR_CHUNK = 256
# Pairs whose KL is below this are left out of G2/KL: the ratio of two round-off errors.
MIN_PAIR_KL = 1e-12


def run_distance(ctx: ProbeContext) -> ProbeOutput:
    """EMD between source and target (Cui et al. 2018; Terzi et al. Fig. 3, 7).

    With f the source model's penultimate features, each dataset is a point cloud of class
    means μ_k = mean f(x) over up to ``images_per_class`` test images of class k (all of a
    class with fewer; :func:`~raysweep.probes.context.draw_per_class`), each weighted by its
    class's share of the whole test split (Cui et al.: mass = share of the images; the drawn
    subset is balanced by construction, so its own shares would lose that); d = EMD with
    Euclidean ground cost, similarity = exp(−γ d). A fixed count per class rather than per
    dataset: 2,000 images of ImageNet's 1,000 classes left ≈2 per mean.
    Target images are resized/channel-matched by ``to_model_input``. Both subsets use the same
    seed, so a dataset's distance to itself is exactly 0.

    Metrics ``probe/emd``, ``probe/similarity``, and per dataset the images and classes used:
    ``probe/emd_images_{source,target}``, ``probe/emd_classes_{source,target}``.
    """
    assert ctx.target is not None
    p = ctx.params
    clouds, used = [], {}
    for role, name in (("source", ctx.source["dataset"]), ("target", ctx.target)):
        ds = ctx.per_class_subset(name, "test", p["images_per_class"])
        means, _ = class_mean_features(
            ctx.model, ds.images, ds.labels, ds.info.num_classes, prepare=ctx.model_input
        )
        counts = np.bincount(ds.labels.numpy(), minlength=ds.info.num_classes)
        split = ctx.class_counts(name, "test")  # every class in it is in the draw too
        clouds.append((means, split / split.sum()))
        used[role] = {"dataset": name, "images": len(ds), "classes": int((counts > 0).sum())}
        used[role].update(per_class=counts, split_per_class=split)
    (m_src, w_src), (m_tgt, w_tgt) = clouds
    d = emd_distance(m_src, w_src, m_tgt, w_tgt)
    sim = domain_similarity(d, p["gamma"])
    np.savez(
        ctx.path("class_means.npz"), source=m_src, source_w=w_src, target=m_tgt, target_w=w_tgt
    )
    record = {"emd": d, "similarity": sim, **p, **used}
    write_json(ctx.path("distance.json"), record)
    metrics = {"probe/emd": d, "probe/similarity": sim}
    for role, info in used.items():
        metrics[f"probe/emd_images_{role}"] = float(info["images"])
        metrics[f"probe/emd_classes_{role}"] = float(info["classes"])
    return ProbeOutput(
        metrics=metrics,
        artifacts=[ctx.path("distance.json"), ctx.path("class_means.npz")],
    )


def run_weight_fisher(ctx: ProbeContext) -> ProbeOutput:
    """Per-filter log-variance of tolerated weight noise (Terzi et al. Fig. 4; task2vec):
    minimise CE + β·2KL over log σ² by Adam (``lr``) on ``images`` source test images, from
    ``start`` ("fisher": the Laplace optimum from the diagonal Fisher; "weights": task2vec's 5 %
    of each filter's weight variance), until the objective and the mean log σ² plateau
    (:class:`~raysweep.measures.fisher.Plateau`: relative change below ``tolerance`` between
    checks every 50 steps, after ``min_steps``, at most ``max_steps``). Larger log σ² = less
    information.

    Metrics: ``probe/fisher_mean_logvar`` (over all filters), ``probe/fisher_mean_logvar_change``
    (minus its value at the start), ``probe/fisher_steps``, ``probe/fisher_converged`` (0/1),
    ``probe/fisher_final_loss`` (the objective on a fixed batch), ``probe/fisher_logvar/<layer>``
    (mean over the layer's filters); series ``probe/fisher_loss`` (per training batch) and
    ``probe/fisher_mean_logvar_curve``.
    """
    p = ctx.params
    x, y = ctx.source_test(p["images"])
    wf = weight_fisher_logvar(
        ctx.model,
        x,
        y,
        plateau=fisher_plateau(p),
        beta=p["beta"],
        lr=p["lr"],
        start=p["start"],
        generator=ctx.generator(),
    )
    summary = fisher_summary(wf)
    metrics = {f"probe/fisher_{k}": v for k, v in summary.items()}
    for layer, logvar in wf.layer_logvars.items():
        metrics[f"probe/fisher_logvar/{layer}"] = float(logvar.mean())
    layers = {
        name: {"logvar": wf.layer_logvars[name], "loglambda2": wf.layer_loglambda2[name]}
        for name in wf.layer_logvars
    }
    record = {**summary, "initial_mean_logvar": wf.initial_mean_logvar, "images": len(y)}
    path = write_json(ctx.path("weight_fisher.json"), {**record, **p, "layers": layers})
    return ProbeOutput(
        metrics=metrics,
        series={
            "probe/fisher_loss": sample_curve(wf.loss_curve),
            "probe/fisher_mean_logvar_curve": sample_curve(wf.logvar_curve),
        },
        artifacts=[path],
    )


def run_diag_fisher(ctx: ProbeContext) -> ProbeOutput:
    """Monte-Carlo diagonal Fisher of all weights from per-sample gradients, labels drawn from
    the model (task2vec): F_w = (1/N) Σ_i (∇_w log p(ŷ_i|x_i))², ŷ_i ~ p(·|x_i).

    Metrics: ``probe/diag_fisher_trace`` = Σ_w F_w; ``probe/diag_fisher_mean_log`` = mean of
    ln F_w over the entries with F_w > 0 (dead units give exact zeros, whose log is −∞);
    ``probe/diag_fisher_zero_share`` = share of entries with F_w = 0.
    """
    x, _ = ctx.source_test(ctx.params["images"])
    fisher = diagonal_fisher(ctx.model, x, None, generator=ctx.generator())
    flat = torch.cat([f.flatten() for f in fisher.values()]).double()
    positive = flat[flat > 0]
    mean_log = float(positive.log().mean()) if positive.numel() else float("-inf")
    per_param = {name: float(f.double().sum()) for name, f in fisher.items()}
    path = write_json(ctx.path("diag_fisher.json"), {"images": len(x), "trace": per_param})
    return ProbeOutput(
        metrics={
            "probe/diag_fisher_trace": float(flat.sum()),
            "probe/diag_fisher_mean_log": mean_log,
            "probe/diag_fisher_zero_share": 1.0 - positive.numel() / flat.numel(),
        },
        artifacts=[path],
    )


def run_input_fisher(ctx: ProbeContext) -> ProbeOutput:
    """Input Fisher F_x = Σ_j p_j ∇ₓlog p_j ∇ₓlog p_jᵀ per image (CCKL paper Eq. 9): means over
    ``images`` source test images of ‖F_x‖_F, tr F_x and λ_max(F_x) (``probe/fx_fnorm``,
    ``probe/fx_trace``, ``probe/fx_lambda_max``); per-image values in ``input_fisher.json``."""
    x, _ = ctx.source_test(ctx.params["images"])
    stats = input_fisher_stats(ctx.model, x)
    path = write_json(ctx.path("input_fisher.json"), stats)
    return ProbeOutput(
        metrics={f"probe/fx_{k}": float(np.mean(v)) for k, v in stats.items()},
        artifacts=[path],
    )


def g1_g2_pairs(
    model: torch.nn.Module, x: torch.Tensor, pi: np.ndarray, pj: np.ndarray
) -> dict[str, np.ndarray]:
    """KL, G1, G2 of the pairs (x[pi[n]], x[pj[n]]), ``PAIR_CHUNK`` pairs per batch."""
    parts = [
        g1_g2(
            model,
            x[torch.as_tensor(pi[s : s + PAIR_CHUNK])],
            x[torch.as_tensor(pj[s : s + PAIR_CHUNK])],
        )
        for s in range(0, pi.size, PAIR_CHUNK)
    ]
    if not parts:
        return {k: np.zeros(0) for k in ("kl", "g1", "g2")}
    return {k: np.concatenate([part[k] for part in parts]) for k in parts[0]}


def relerr_metric(eps: float) -> str:
    """Metric name of |KL − G1|/KL at ε. MLflow names cannot hold '=', hence ``eps_<ε>``."""
    return f"probe/kl_g1_relerr/eps_{eps:g}"


def _g2_over_kl(split: dict[str, np.ndarray]) -> tuple[float, float]:
    """Mean and median of G2/KL over the pairs with KL >= ``MIN_PAIR_KL`` (NaN if none)."""
    usable = split["kl"] >= MIN_PAIR_KL
    ratio = split["g2"][usable] / split["kl"][usable]
    if not ratio.size:
        return float("nan"), float("nan")
    return float(ratio.mean()), float(np.median(ratio))


def _near_summary(near: dict[float, dict[str, np.ndarray]]) -> list[dict[str, float]]:
    """Per ε: mean KL(f(x)‖f(x+η)), mean G1, median |KL − G1|/KL, mean and max ‖η‖ (in the
    probe's norm)."""
    return [
        {
            "eps": e,
            "kl_mean": float(r["kl"].mean()),
            "g1_mean": float(r["g1"].mean()),
            "relerr_median": float(np.median(np.abs(r["kl"] - r["g1"]) / r["kl"])),
            "eta_norm_mean": float(r["norm"].mean()),
            "eta_norm_max": float(r["norm"].max()),
        }
        for e, r in near.items()
    ]


def _near_x(
    ctx: ProbeContext, x: torch.Tensor, rng: np.random.Generator
) -> dict[float, dict[str, np.ndarray]]:
    """KL(f(x)‖f(x+η)), G1 and ‖η‖ per ε on ``relerr_images`` of ``x`` (a seeded draw)."""
    p = ctx.params
    # PGD and the float64 evaluation cost ≈6 s per ε for 256 small_cnn images: a subset.
    keep = np.sort(rng.choice(len(x), min(p["relerr_images"], len(x)), replace=False))
    # float64: in float32, KL(f(x)‖f(x+η)) at ε = 0.01 (ℓ₂, 32 px) is round-off sized and came
    # out negative for some images, making the median |KL − G1|/KL 0.25 instead of 0.06 and the
    # mean at ε = 0.1 negative (measured on small_cnn/shapes). The pairs' KL (≈1) is unaffected.
    # The adversarial η is searched on the float32 model: PGD only needs a good direction.
    return kl_g1_vs_eps(
        copy.deepcopy(ctx.model).double(),
        x[torch.as_tensor(keep)].double(),
        p["eps"],
        p["norm"],
        perturbation=p["perturbation"],
        attack_model=ctx.model,
        generator=ctx.generator(),
    )


def run_cckl(ctx: ProbeContext) -> ProbeOutput:
    """CCKL and its Fisher split (CCKL paper Eq. 2-3, 14-15, Table 2).

    On ``images`` source test images: ``probe/cckl`` = mean KL(f(x_i)‖f(x_j)) over all ordered
    pairs with y_i ≠ y_j. On ``pairs`` of those pairs drawn at random (G1 needs one JVP per
    pair): G1 = ½ΔᵀF_{x_i}Δ, G2 = KL − G1 with Δ = x_j − x_i, and ``probe/g2_share`` = mean
    G2/KL (pairs with KL < 1e-12 left out; heavy-tailed where G1 ≫ KL, so
    ``probe/g2_share_median`` too). ``probe/kl_g1_relerr/eps_<ε>`` = mean |KL(f(x)‖f(x+η)) −
    G1|/KL over ``relerr_images`` of the images, per ε of ``eps`` (default 1/255 … 8/255, as
    Table 2), with η in the ``norm`` ball of radius ε (x + η clamped to [0, 1]): the
    KL-maximising η found by PGD (``perturbation: adversarial``, as Table 2;
    :func:`~raysweep.measures.input_fisher.adversarial_perturbation`) or ε times one random
    direction per image (``random``). Artifacts: ``cckl_pairs.npz`` (i, j, kl of all pairs;
    pair_i, pair_j, pair_kl, g1, g2 of the sampled ones) and ``cckl.json`` (the summary, the
    params incl. ``perturbation``, and per ε the mean KL, G1 and ‖η‖ under ``near_x``).
    """
    p = ctx.params
    x, y = ctx.source_test(p["images"])
    allpairs = cckl_pairs(ctx.model, x, y)
    rng = np.random.Generator(np.random.PCG64(ctx.seed))
    pick = np.sort(rng.choice(allpairs.kl.size, min(p["pairs"], allpairs.kl.size), replace=False))
    pi, pj = allpairs.i[pick], allpairs.j[pick]
    split = g1_g2_pairs(ctx.model, x, pi, pj)
    g2_share, g2_median = _g2_over_kl(split)
    near = _near_x(ctx, x, rng)
    np.savez(
        ctx.path("cckl_pairs.npz"),
        i=allpairs.i.astype(np.int32),
        j=allpairs.j.astype(np.int32),
        kl=allpairs.kl,
        pair_i=pi,
        pair_j=pj,
        pair_kl=split["kl"],
        g1=split["g1"],
        g2=split["g2"],
    )
    metrics = {
        "probe/cckl": allpairs.cckl,
        "probe/g2_share": g2_share,
        "probe/g2_share_median": g2_median,
        **{
            relerr_metric(e): float(np.mean(np.abs(r["kl"] - r["g1"]) / r["kl"]))
            for e, r in near.items()
        },
    }
    summary = {"pairs_all": int(allpairs.kl.size), "pairs_g1g2": int(pi.size), **p}
    write_json(ctx.path("cckl.json"), {**summary, **metrics, "near_x": _near_summary(near)})
    return ProbeOutput(
        metrics=metrics, artifacts=[ctx.path("cckl.json"), ctx.path("cckl_pairs.npz")]
    )
