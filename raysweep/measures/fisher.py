"""Fisher information of the weights: variational log-variances and a Monte-Carlo diagonal.

Terzi et al. (AAAI 2021, Fig. 4) show that adversarial training *reduces* the information the
weights hold about the task, measured as in Achille & Soatto ("Where is the information in a
deep neural network?", 2019) and task2vec (Achille et al., ICCV 2019): the largest Gaussian
noise each filter tolerates without hurting the loss. Larger log-variance = less information.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from raysweep.measures._util import check_positive_int, frozen
from raysweep.models.net import TransferNet


@dataclass(frozen=True)
class WeightFisher:
    """Result of :func:`weight_fisher_logvar`.

    Attributes:
        layer_logvars: module name -> log σ² per output filter (float64 [out_channels]).
        layer_loglambda2: module name -> log λ² of the learned Gaussian prior N(0, λ² I).
        mean_logvar: mean of log σ² over all filters of all layers (the summary of Fig. 4).
        loss_curve: total loss CE + β·2KL at every step.
    """

    layer_logvars: dict[str, np.ndarray]
    layer_loglambda2: dict[str, float]
    mean_logvar: float
    loss_curve: list[float]


class _Variational:
    """Per-filter log-variance and prior log-scale of one conv/linear layer."""

    def __init__(self, module: nn.Conv2d | nn.Linear, variance_scaling: float) -> None:
        w = module.weight.detach()
        filter_var = w.flatten(1).var(dim=1) if w[0].numel() > 1 else w.flatten(1).pow(2)[:, 0]
        # Start well inside the prior: a fraction of each filter's weight variance (task2vec).
        self.logvar = (filter_var * variance_scaling + 1e-8).log().requires_grad_(True)
        self.loglambda2 = (w.pow(2).mean() + 1e-8).log().requires_grad_(True)
        self.module = module

    def expanded_var(self) -> Tensor:
        w = self.module.weight
        return self.logvar.exp().view(-1, *([1] * (w.ndim - 1))).expand_as(w)

    def noisy_output(self, inp: Tensor, out: Tensor, generator: torch.Generator | None) -> Tensor:
        """Local reparametrisation (Kingma et al. 2015): with w ~ N(ŵ, σ²) per weight the
        pre-activation is Gaussian with mean ŵ·x and variance σ²·x², so sample it directly."""
        m = self.module
        if isinstance(m, nn.Conv2d):
            var = F.conv2d(
                inp.pow(2), self.expanded_var(), None, m.stride, m.padding, m.dilation, m.groups
            )
        else:
            var = F.linear(inp.pow(2), self.expanded_var())
        # Draw where the generator lives (a CPU generator may drive a GPU model).
        where = generator.device if generator is not None else out.device
        eps = torch.randn(out.shape, generator=generator, dtype=out.dtype, device=where)
        eps = eps.to(out.device)
        return out + (var + 1e-20).sqrt() * eps

    def two_kl(self) -> Tensor:
        """2·KL(N(ŵ, diag σ²) ‖ N(0, λ² I)) = ‖ŵ‖²/λ² + Σσ²/λ² + k log λ² − Σ log σ² − k."""
        w = self.module.weight
        k = w.numel()
        fan = k // w.shape[0]
        lam2 = self.loglambda2.exp()
        return (
            w.pow(2).sum() / lam2
            + fan * self.logvar.exp().sum() / lam2
            + k * self.loglambda2
            - fan * self.logvar.sum()
            - k
        )


def noisy_layers(model: TransferNet) -> dict[str, nn.Conv2d | nn.Linear]:
    """Conv and linear layers that get a log-variance: every one except the classifier head
    (BatchNorm layers and biases carry none)."""
    head = model.head
    return {
        name: m
        for name, m in model.named_modules()
        if isinstance(m, (nn.Conv2d, nn.Linear)) and m is not head
    }


@contextmanager
def _noise_hooks(
    layers: dict[str, _Variational], generator: torch.Generator | None
) -> Iterator[None]:
    handles = [
        v.module.register_forward_hook(
            lambda _m, inputs, out, v=v: v.noisy_output(inputs[0], out, generator)
        )
        for v in layers.values()
    ]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def weight_fisher_logvar(
    model: TransferNet,
    x: Tensor,
    y: Tensor,
    *,
    steps: int = 200,
    batch_size: int = 64,
    beta: float = 1e-7,
    lr: float = 1e-2,
    variance_scaling: float = 0.05,
    generator: torch.Generator | None = None,
) -> WeightFisher:
    """Variational Fisher of the weights (Achille & Soatto 2019; task2vec; Terzi et al. Fig. 4).

    Weights ŵ stay frozen; each output filter f of every conv/linear layer except the head gets
    a noise variance σ_f², each layer a prior scale λ². With noise injected by local
    reparametrisation, minimise over (log σ², log λ²) with Adam (lr 1e-2), N steps of random
    batches from (x, y)::

        L = E_{w ~ N(ŵ, σ²)} CE(f_w(x), y) + β · 2·KL(N(ŵ, σ²) ‖ N(0, λ² I)),   β ≈ 1e-7

    The optimum approximates σ² ≈ β/2 · (F + β/(2λ²))⁻¹ (Terzi et al., after Def. 0.5), so a
    large log σ² marks a filter the task hardly constrains: little information.
    ``x`` is float model input in [0, 1]; the model is left unchanged (eval mode is used, so
    BatchNorm running statistics do not move).
    """
    check_positive_int("steps", steps)
    check_positive_int("batch_size", batch_size)
    layers = {n: _Variational(m, variance_scaling) for n, m in noisy_layers(model).items()}
    if not layers:
        raise ValueError("model has no conv/linear layer besides the head")
    params = [p for v in layers.values() for p in (v.logvar, v.loglambda2)]
    opt = torch.optim.Adam(params, lr=lr, betas=(0.9, 0.999))
    device = next(model.parameters()).device
    curve: list[float] = []
    with frozen(model), _noise_hooks(layers, generator):
        for _ in range(steps):
            idx = torch.randint(0, x.shape[0], (min(batch_size, x.shape[0]),), generator=generator)
            ce = F.cross_entropy(model(x[idx].to(device)), y[idx].to(device))
            loss = ce + beta * sum(v.two_kl() for v in layers.values())
            opt.zero_grad()
            loss.backward()
            opt.step()
            curve.append(float(loss.detach()))
    logvars = {n: v.logvar.detach().double().cpu().numpy() for n, v in layers.items()}
    return WeightFisher(
        layer_logvars=logvars,
        layer_loglambda2={n: float(v.loglambda2.detach()) for n, v in layers.items()},
        mean_logvar=float(np.concatenate(list(logvars.values())).mean()),
        loss_curve=curve,
    )


def diagonal_fisher(
    model: nn.Module,
    x: Tensor,
    y: Tensor | None = None,
    *,
    chunk_size: int = 32,
    generator: torch.Generator | None = None,
) -> dict[str, Tensor]:
    """Monte-Carlo diagonal Fisher of the weights from PER-SAMPLE gradients.

    F_diag = (1/N) Σ_i (∇_w ℓ(x_i, y_i))²,  ℓ = −log p_w(y|x),

    with the given labels (empirical Fisher) or, if ``y`` is None, one label per image drawn
    from the model, y_i ~ p_w(·|x_i) (the true Fisher's Monte-Carlo estimate, as task2vec).
    Squaring the batch-mean gradient instead, (1/N Σ_i ∇ℓ_i)², is wrong by about a factor N
    when the per-sample gradients are roughly independent with zero mean (the score has zero
    mean under y ~ p_w). Per-sample gradients come from ``torch.func.vmap(grad(...))`` over
    chunks of ``chunk_size`` images; BatchNorm uses running statistics (eval mode).
    Returns name -> F_diag (shape of the parameter) for every parameter that requires grad.
    """
    check_positive_int("chunk_size", chunk_size)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    if not names:
        raise ValueError("model has no parameter that requires grad")
    with frozen(model):
        params = {n: p.detach() for n, p in model.named_parameters() if n in names}
        consts = {n: p.detach() for n, p in model.named_parameters() if n not in names}
        consts.update({n: b for n, b in model.named_buffers()})
        if y is None:
            with torch.no_grad():
                probs = torch.cat([F.softmax(model(c), dim=1) for c in x.split(chunk_size)])
            y = torch.multinomial(probs.cpu(), 1, generator=generator).view(-1).to(x.device)

        def sample_loss(p: dict[str, Tensor], xi: Tensor, yi: Tensor) -> Tensor:
            logits = functional_call(model, {**p, **consts}, (xi.unsqueeze(0),))
            return F.cross_entropy(logits, yi.unsqueeze(0))

        per_sample = vmap(grad(sample_loss), in_dims=(None, 0, 0))
        acc = {n: torch.zeros_like(p) for n, p in params.items()}
        for xc, yc in zip(x.split(chunk_size), y.split(chunk_size), strict=True):
            for n, g in per_sample(params, xc, yc).items():
                acc[n] += g.pow(2).sum(0)
    return {n: a / x.shape[0] for n, a in acc.items()}
