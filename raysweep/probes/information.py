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
    relative_error_vs_eps,
)
from raysweep.probes.context import ProbeContext, ProbeOutput, sample_curve, write_json

# G1/G2 pairs are evaluated this many at a time (two forward passes + one JVP per chunk).
PAIR_CHUNK = 256
# Pairs whose KL is below this are left out of G2/KL: the ratio of two round-off errors.
MIN_PAIR_KL = 1e-12


def run_distance(ctx: ProbeContext) -> ProbeOutput:
    """EMD between source and target (Cui et al. 2018; Terzi et al. Fig. 3, 7).

    With f the source model's penultimate features, each dataset is a point cloud of class
    means μ_k = mean f(x) over its ``images`` test images of class k (every class present),
    weighted by class share; d = EMD with Euclidean ground cost, similarity = exp(−γ d).
    Target images are resized/channel-matched by ``to_model_input``. Both subsets use the same
    seed, so a dataset's distance to itself is exactly 0.
    """
    assert ctx.target is not None
    p = ctx.params
    clouds = []
    for name in (ctx.source["dataset"], ctx.target):
        ds = ctx.subset(name, "test", p["images"])
        means, weights = class_mean_features(
            ctx.model, ds.images, ds.labels, ds.info.num_classes, prepare=ctx.model_input
        )
        clouds.append((name, len(ds), means, weights))
    (src, n_src, m_src, w_src), (tgt, n_tgt, m_tgt, w_tgt) = clouds
    d = emd_distance(m_src, w_src, m_tgt, w_tgt)
    sim = domain_similarity(d, p["gamma"])
    np.savez(
        ctx.path("class_means.npz"), source=m_src, source_w=w_src, target=m_tgt, target_w=w_tgt
    )
    summary = {"source": src, "target": tgt, "images": [n_src, n_tgt], "emd": d, "similarity": sim}
    write_json(ctx.path("distance.json"), {**summary, "gamma": p["gamma"]})
    return ProbeOutput(
        metrics={"probe/emd": d, "probe/similarity": sim},
        artifacts=[ctx.path("distance.json"), ctx.path("class_means.npz")],
    )


def run_weight_fisher(ctx: ProbeContext) -> ProbeOutput:
    """Per-filter log-variance of tolerated weight noise (Terzi et al. Fig. 4; task2vec):
    minimise CE + β·2KL over log σ² for ``steps`` Adam steps on ``images`` source test images
    (see :func:`~raysweep.measures.fisher.weight_fisher_logvar`). Larger = less information.

    Metrics: ``probe/fisher_mean_logvar`` (over all filters) and ``probe/fisher_logvar/<layer>``
    (mean over the layer's filters); series ``probe/fisher_loss``.
    """
    p = ctx.params
    x, y = ctx.source_test(p["images"])
    wf = weight_fisher_logvar(
        ctx.model, x, y, steps=p["steps"], beta=p["beta"], generator=ctx.generator()
    )
    metrics = {"probe/fisher_mean_logvar": wf.mean_logvar}
    for layer, logvar in wf.layer_logvars.items():
        metrics[f"probe/fisher_logvar/{layer}"] = float(logvar.mean())
    layers = {
        name: {"logvar": wf.layer_logvars[name], "loglambda2": wf.layer_loglambda2[name]}
        for name in wf.layer_logvars
    }
    path = write_json(
        ctx.path("weight_fisher.json"),
        {"mean_logvar": wf.mean_logvar, "images": len(y), **ctx.params, "layers": layers},
    )
    return ProbeOutput(
        metrics=metrics,
        series={"probe/fisher_loss": sample_curve(wf.loss_curve)},
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


def run_cckl(ctx: ProbeContext) -> ProbeOutput:
    """CCKL and its Fisher split (CCKL paper Eq. 2-3, 14-15, Table 2).

    On ``images`` source test images: ``probe/cckl`` = mean KL(f(x_i)‖f(x_j)) over all ordered
    pairs with y_i ≠ y_j. On ``pairs`` of those pairs drawn at random (G1 needs one JVP per
    pair): G1 = ½ΔᵀF_{x_i}Δ, G2 = KL − G1 with Δ = x_j − x_i, and ``probe/g2_share`` = mean
    G2/KL (pairs with KL < 1e-12 left out; heavy-tailed where G1 ≫ KL, so
    ``probe/g2_share_median`` too). ``probe/kl_g1_relerr/eps_<ε>`` = mean
    |KL(f(x)‖f(x+η)) − G1|/KL over the images for a random η of ``norm`` ε, per ε.
    Artifacts: ``cckl_pairs.npz`` (i, j, kl of all pairs; pair_i, pair_j, pair_kl, g1, g2 of
    the sampled ones) and ``cckl.json`` (the summary).
    """
    p = ctx.params
    x, y = ctx.source_test(p["images"])
    allpairs = cckl_pairs(ctx.model, x, y)
    rng = np.random.Generator(np.random.PCG64(ctx.seed))
    pick = np.sort(rng.choice(allpairs.kl.size, min(p["pairs"], allpairs.kl.size), replace=False))
    pi, pj = allpairs.i[pick], allpairs.j[pick]
    split = g1_g2_pairs(ctx.model, x, pi, pj)
    g2_share, g2_median = _g2_over_kl(split)
    # float64: in float32, KL(f(x)‖f(x+η)) at ε = 0.01 (ℓ₂, 32 px) is round-off sized and came
    # out negative for some images, making the median |KL − G1|/KL 0.25 instead of 0.06 and the
    # mean at ε = 0.1 negative (measured on small_cnn/shapes). The pairs' KL (≈1) is unaffected.
    model64 = copy.deepcopy(ctx.model).double()
    relerr = relative_error_vs_eps(
        model64, x.double(), p["eps"], p["norm"], generator=ctx.generator()
    )
    ij = {"i": allpairs.i.astype(np.int32), "j": allpairs.j.astype(np.int32)}
    np.savez(
        ctx.path("cckl_pairs.npz"),
        **ij,
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
        **{relerr_metric(e): v for e, v in relerr.items()},
    }
    summary = {"pairs_all": int(allpairs.kl.size), "pairs_g1g2": int(pi.size), "norm": p["norm"]}
    write_json(ctx.path("cckl.json"), {**summary, **metrics})
    return ProbeOutput(
        metrics=metrics, artifacts=[ctx.path("cckl.json"), ctx.path("cckl_pairs.npz")]
    )
