"""Fisher information of the weights: variational log-variances and a Monte-Carlo diagonal.

Terzi et al. (AAAI 2021, Fig. 4) show that adversarial training *reduces* the information the
weights hold about the task, measured as in Achille & Soatto ("Where is the information in a
deep neural network?", 2019) and task2vec (Achille et al., ICCV 2019): the largest Gaussian
noise each filter tolerates without hurting the loss. Larger log-variance = less information.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
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
        layer_logvars: module name -> log σ² per output filter (float64 [out_channels]),
            averaged over the last window of steps (see :class:`Plateau`).
        layer_loglambda2: module name -> log λ² of the learned Gaussian prior N(0, λ² I).
        mean_logvar: mean of log σ² over all filters of all layers (the summary of Fig. 4).
        initial_mean_logvar: the same mean at the start.
        loss_curve: total loss CE + β·2KL at every step (one random batch each).
        logvar_curve: mean log σ² after every step.
        steps: optimisation steps taken.
        converged: whether the plateau criterion held before ``max_steps``.
        final_loss: the objective at the reported log-variances on the fixed evaluation batch.
    """

    layer_logvars: dict[str, np.ndarray]
    layer_loglambda2: dict[str, float]
    mean_logvar: float
    initial_mean_logvar: float
    loss_curve: list[float]
    logvar_curve: list[float]
    steps: int
    converged: bool
    final_loss: float

    @property
    def mean_logvar_change(self) -> float:
        """mean log σ² − mean initial log σ²: how far the optimisation moved from its start."""
        return self.mean_logvar - self.initial_mean_logvar


@dataclass(frozen=True)
class Plateau:
    """When :func:`weight_fisher_logvar` stops. Every ``window`` steps the variational
    parameters averaged over that window (iterate averaging, Polyak & Juditsky 1992: Adam at a
    constant rate jitters around the optimum) are checked; with L the objective at them on a
    fixed evaluation batch with fixed noise draws and μ their mean log σ² over all filters, it
    has converged at the first check, at least ``min_steps`` in, where

        |L_new − L_old| < tolerance · |L_new|   and   |μ_new − μ_old| < tolerance (nats)

    against the previous check; otherwise it stops at ``max_steps`` (not converged). After
    each check the optimisation goes on from the averaged parameters.

    Why these: the training loss of a step is one random batch and one noise draw, and its
    window means still differ by ≈2 % from window to window at the optimum (small_cnn,
    batches of 32), so a 1 % loss plateau would be luck; with the same images and noise at
    every check (common random numbers) L changes only when the parameters do. The loss is
    nearly flat in the log-variance of a filter the task hardly uses (its only gradient is
    β·n_f·(σ²/λ² − 1), ≈1e-5 at β = 1e-7), so μ — the number Fig. 4 reports — must settle too:
    a change below ``tolerance`` nats is a change of the geometric-mean σ² below that fraction.
    ``tolerance = 0`` never converges: exactly ``max_steps`` steps.
    """

    max_steps: int = 400
    min_steps: int = 200
    window: int = 50
    tolerance: float = 1e-2

    def __post_init__(self) -> None:
        check_positive_int("max_steps", self.max_steps)
        check_positive_int("min_steps", self.min_steps)
        check_positive_int("window", self.window)
        if not self.tolerance >= 0:
            raise ValueError(f"tolerance must be >= 0, got {self.tolerance}")

    def reached(self, step: int, checks: list[tuple[float, float]]) -> bool:
        """Whether it converged at ``step``, given (L, μ) of every check so far."""
        if step < self.min_steps or len(checks) < 2:
            return False
        (loss_old, mu_old), (loss_new, mu_new) = checks[-2:]
        settled = abs(loss_new - loss_old) < self.tolerance * abs(loss_new)
        return bool(settled and abs(mu_new - mu_old) < self.tolerance)


# The plateau is judged on this many images (fixed, as their noise draws: common random
# numbers), seeded apart from the training noise.
EVAL_IMAGES = 128
EVAL_SEED = 20_190_601


@dataclass
class _Noise:
    """Where the local-reparametrisation noise comes from. ``antithetic``: the batch is two
    copies of the same images and the second copy gets −ε."""

    generator: torch.Generator | None
    antithetic: bool

    def draw(self, like: Tensor) -> Tensor:
        # Draw where the generator lives (a CPU generator may drive a GPU model).
        where = self.generator.device if self.generator is not None else like.device
        rows = like.shape[0] // 2 if self.antithetic else like.shape[0]
        shape = (rows, *like.shape[1:])
        eps = torch.randn(shape, generator=self.generator, dtype=like.dtype, device=where)
        eps = eps.to(like.device)
        return torch.cat([eps, -eps]) if self.antithetic else eps


class _Variational:
    """Per-filter log-variance and prior log-scale of one conv/linear layer."""

    def __init__(self, module: nn.Conv2d | nn.Linear, start_logvar: Tensor) -> None:
        w = module.weight.detach()
        self.logvar = start_logvar.detach().to(w).clone().requires_grad_(True)
        self.loglambda2 = (w.pow(2).mean() + 1e-8).log().requires_grad_(True)
        self.module = module

    def expanded_var(self) -> Tensor:
        w = self.module.weight
        return self.logvar.exp().view(-1, *([1] * (w.ndim - 1))).expand_as(w)

    def variance(self, inp: Tensor) -> Tensor:
        """Variance of the pre-activations under w ~ N(ŵ, σ²): Σ over each output's receptive
        field of σ_f² x². σ² is shared by a filter's weights, so this is σ_f² times ONE box sum
        of x² over input channels and kernel window (a 1-channel conv): the same numbers as
        conv(x², σ²) for less (a small_cnn step: 131 ms instead of 214 on one core)."""
        m, var = self.module, self.logvar.exp()
        if isinstance(m, nn.Linear):
            return var * inp.pow(2).sum(-1, keepdim=True)
        if m.groups != 1:  # grouped/depthwise: the sum differs per group
            return F.conv2d(
                inp.pow(2), self.expanded_var(), None, m.stride, m.padding, m.dilation, m.groups
            )
        ones = inp.new_ones(1, 1, *m.kernel_size)
        box = F.conv2d(inp.pow(2).sum(1, keepdim=True), ones, None, m.stride, m.padding, m.dilation)
        return var.view(1, -1, 1, 1) * box

    def noisy_output(self, inp: Tensor, out: Tensor, noise: _Noise) -> Tensor:
        """Local reparametrisation (Kingma et al. 2015): with w ~ N(ŵ, σ²) per weight the
        pre-activation is Gaussian with mean ŵ·x and variance σ²·x², so sample it directly."""
        return out + (self.variance(inp) + 1e-20).sqrt() * noise.draw(out)

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
def _noise_hooks(layers: dict[str, _Variational], noise: _Noise) -> Iterator[None]:
    handles = [
        v.module.register_forward_hook(
            lambda _m, inputs, out, v=v: v.noisy_output(inputs[0], out, noise)
        )
        for v in layers.values()
    ]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


Loss = Callable[[Tensor, Tensor], Tensor]
# Where the log-variances start: the quadratic (Laplace) estimate, or task2vec's fraction of
# each filter's weight variance.
STARTS: tuple[str, ...] = ("fisher", "weights")


@dataclass
class _Objective:
    """L = loss(f_w(x), y) + β·Σ 2KL for one batch, noise drawn by ``noise`` (the model's
    forward hooks must be :func:`_noise_hooks` of the same ``noise``)."""

    model: TransferNet
    layers: dict[str, _Variational]
    loss_fn: Loss
    beta: float
    noise: _Noise

    def __call__(self, x: Tensor, y: Tensor) -> Tensor:
        device = next(self.model.parameters()).device
        x, y = x.to(device), y.to(device)
        if self.noise.antithetic:
            x, y = torch.cat([x, x]), torch.cat([y, y])
        data = self.loss_fn(self.model(x), y)
        return data + self.beta * sum(v.two_kl() for v in self.layers.values())

    def evaluate(self, x: Tensor, y: Tensor) -> float:
        """L on (x, y) with the same noise draws at every call (common random numbers)."""
        saved = self.noise.generator
        where = saved.device if saved is not None else torch.device("cpu")
        self.noise.generator = torch.Generator(where).manual_seed(EVAL_SEED)
        try:
            with torch.no_grad():
                return float(self(x, y))
        finally:
            self.noise.generator = saved


class _Averager:
    """Mean of the variational parameters over the steps since the last check."""

    def __init__(self, params: list[Tensor]) -> None:
        self.params = params
        self.sums = [torch.zeros_like(p) for p in params]
        self.count = 0

    def add(self) -> None:
        for total, p in zip(self.sums, self.params, strict=True):
            total += p.detach()
        self.count += 1

    def take(self) -> list[Tensor]:
        """The mean since the last ``take``; starts the next window."""
        means = [total / self.count for total in self.sums]
        self.sums = [torch.zeros_like(p) for p in self.params]
        self.count = 0
        return means


def weights_start(model: TransferNet, variance_scaling: float = 0.05) -> dict[str, Tensor]:
    """task2vec's start: log σ_f² = log(variance_scaling · Var(ŵ_f)), well inside the prior. It
    scales with the weights, which is why a short optimisation mostly reports it."""
    out = {}
    for name, m in noisy_layers(model).items():
        w = m.weight.detach().flatten(1)
        filter_var = w.var(dim=1) if w.shape[1] > 1 else w.pow(2)[:, 0]
        out[name] = (filter_var * variance_scaling + 1e-8).log()
    return out


def fisher_start(
    model: TransferNet,
    x: Tensor,
    *,
    beta: float,
    images: int = 256,
    generator: torch.Generator | None = None,
) -> dict[str, Tensor]:
    """The optimum of the objective's quadratic (Laplace) approximation, per filter f.

    To second order, E_w[CE] ≈ CE(ŵ) + ½ Σ_f σ_f² Σ_{w∈f} H_ww, and for cross-entropy the
    Gauss-Newton H is the Fisher F (labels drawn from the model): :func:`diagonal_fisher` on up
    to ``images`` random images of x. With 2KL of :class:`_Variational` and λ² = mean ŵ² (the
    start of log λ²), ∂L/∂σ_f² = 0 gives

        σ_f² = β·n_f / (½ Σ_{w∈f} F_w + β·n_f/λ²),   n_f = weights per filter,

    Terzi et al.'s σ² ≈ β/2·(F + β/(2λ²))⁻¹ per weight, summed over the filter. A filter the
    task does not use (F = 0) starts at its optimum σ² = λ².
    """
    layers = noisy_layers(model)
    pick = torch.randperm(x.shape[0], generator=generator)[: min(images, x.shape[0])]
    device = next(model.parameters()).device
    names = [f"{name}.weight" for name in layers]
    fisher = diagonal_fisher(model, x[pick].to(device), None, names=names, generator=generator)
    out = {}
    for name, m in layers.items():
        f = fisher[f"{name}.weight"].flatten(1).double()
        fan = f.shape[1]
        lam2 = m.weight.detach().double().pow(2).mean() + 1e-8
        out[name] = (beta * fan / (0.5 * f.sum(1) + beta * fan / lam2)).log().float()
    return out


def _start_logvars(
    model: TransferNet,
    x: Tensor,
    start: str | dict[str, Tensor],
    beta: float,
    generator: torch.Generator | None,
) -> dict[str, Tensor]:
    if isinstance(start, dict):
        return {n: torch.as_tensor(v) for n, v in start.items()}
    if start == "fisher":
        return fisher_start(model, x, beta=beta, generator=generator)
    if start == "weights":
        return weights_start(model)
    raise ValueError(f"unknown start {start!r}; valid: {', '.join(STARTS)}")


def weight_fisher_logvar(
    model: TransferNet,
    x: Tensor,
    y: Tensor,
    *,
    plateau: Plateau | None = None,
    batch_size: int = 32,
    beta: float = 1e-7,
    lr: float = 0.1,
    start: str | dict[str, Tensor] = "fisher",
    loss_fn: Loss = F.cross_entropy,
    antithetic: bool = True,
    generator: torch.Generator | None = None,
) -> WeightFisher:
    """Variational Fisher of the weights (Achille & Soatto 2019; task2vec; Terzi et al. Fig. 4).

    Weights ŵ stay frozen; each output filter f of every conv/linear layer except the head gets
    a noise variance σ_f², each layer a prior scale λ². With noise injected by local
    reparametrisation, minimise over (log σ², log λ²) with Adam (``lr``) on random batches::

        L = E_{w ~ N(ŵ, σ²)} loss(f_w(x), y) + β · 2·KL(N(ŵ, σ²) ‖ N(0, λ² I)),   β ≈ 1e-7

    (loss: cross-entropy by default) until ``plateau`` (:class:`Plateau`) says it converged;
    the result is the parameters averaged over the last window. The optimum approximates
    σ² ≈ β/2 · (F + β/(2λ²))⁻¹ (Terzi et al., after Def. 0.5): a large log σ² marks a filter
    the task hardly constrains, little information.

    ``start``: "fisher" (:func:`fisher_start`, the Laplace optimum; for cross-entropy),
    "weights" (:func:`weights_start`, task2vec) or name -> log σ² per filter. ``antithetic``:
    every batch is its ``batch_size`` images twice, with noise ε and −ε, so the first-order
    term of the noise — zero mean, but a spread ∝ σ against a signal ∝ σ² — cancels; without
    it the gradient of a small σ² is mostly noise (measured on the tiny conv net of the tests:
    after 3,000 steps at lr 0.1 and at 0.03 the filters' log σ² differ by up to 1.5 nats
    between the two runs without, by 0.2 with). ``x`` is float model input in [0, 1]; the
    model is left unchanged (eval mode, so BatchNorm running statistics do not move).
    """
    plateau = plateau or Plateau()
    check_positive_int("batch_size", batch_size)
    starts = _start_logvars(model, x, start, beta, generator)
    layers = {n: _Variational(m, starts[n]) for n, m in noisy_layers(model).items()}
    if not layers:
        raise ValueError("model has no conv/linear layer besides the head")
    objective = _Objective(model, layers, loss_fn, beta, _Noise(generator, antithetic))
    pick = torch.randperm(x.shape[0], generator=generator)[:EVAL_IMAGES]
    with frozen(model), _noise_hooks(layers, objective.noise):
        return _optimise(objective, (x, y), (x[pick], y[pick]), plateau, batch_size, lr)


def _optimise(
    objective: _Objective,
    data: tuple[Tensor, Tensor],
    evaluation: tuple[Tensor, Tensor],
    plateau: Plateau,
    batch_size: int,
    lr: float,
) -> WeightFisher:
    """Adam steps on random batches of ``data``; every ``plateau.window`` steps a check of
    the window-averaged parameters on ``evaluation``, until :meth:`Plateau.reached`."""
    layers, generator = objective.layers, objective.noise.generator
    params = [p for v in layers.values() for p in (v.logvar, v.loglambda2)]
    opt = torch.optim.Adam(params, lr=lr, betas=(0.9, 0.999))
    averager, initial = _Averager(params), _mean_logvar(layers)
    losses: list[float] = []
    curve: list[float] = []
    checks: list[tuple[float, float]] = []
    converged = False
    x, y = data
    while len(losses) < plateau.max_steps and not converged:
        idx = torch.randint(0, x.shape[0], (min(batch_size, x.shape[0]),), generator=generator)
        loss = objective(x[idx], y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        curve.append(_mean_logvar(layers))
        averager.add()
        if len(losses) % plateau.window == 0 or len(losses) == plateau.max_steps:
            with torch.no_grad():
                for p, mean in zip(params, averager.take(), strict=True):
                    p.copy_(mean)  # continue from the average too: a smaller jitter
            checks.append((objective.evaluate(*evaluation), _mean_logvar(layers)))
            converged = plateau.reached(len(losses), checks)
    return _result(layers, initial, losses, curve, converged, checks[-1][0])


def _mean_logvar(layers: dict[str, _Variational]) -> float:
    return float(torch.cat([v.logvar.detach().double().cpu() for v in layers.values()]).mean())


def _result(
    layers: dict[str, _Variational],
    initial: float,
    losses: list[float],
    curve: list[float],
    converged: bool,
    final_loss: float,
) -> WeightFisher:
    logvars = {n: v.logvar.detach().double().cpu().numpy() for n, v in layers.items()}
    return WeightFisher(
        layer_logvars=logvars,
        layer_loglambda2={n: float(v.loglambda2.detach()) for n, v in layers.items()},
        mean_logvar=_mean_logvar(layers),
        initial_mean_logvar=initial,
        loss_curve=losses,
        logvar_curve=curve,
        steps=len(losses),
        converged=converged,
        final_loss=final_loss,
    )


def diagonal_fisher(
    model: nn.Module,
    x: Tensor,
    y: Tensor | None = None,
    *,
    names: Sequence[str] | None = None,
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
    Returns name -> F_diag (shape of the parameter) for the parameters ``names`` (default:
    every parameter that requires grad).
    """
    check_positive_int("chunk_size", chunk_size)
    if names is None:
        names = [n for n, p in model.named_parameters() if p.requires_grad]
    if not names:
        raise ValueError("model has no parameter that requires grad")
    unknown = sorted(set(names) - {n for n, _ in model.named_parameters()})
    if unknown:
        raise ValueError(f"names unknown parameters: {', '.join(unknown[:5])}")
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
