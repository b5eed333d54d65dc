"""Inversion, variational inversion, effective images, image grids and feature visualisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_nets import one_thread, tiny_net  # noqa: F401  (one_thread: autouse fixture)

from raysweep.measures import inversion
from raysweep.measures.featvis import visualize_feature
from raysweep.measures.fisher import diagonal_fisher
from raysweep.measures.inversion import (
    effective_images,
    fisher_noise_variances,
    image_grid,
    inversion_loss,
    invert,
    logvar_noise_variances,
    variational_invert,
)
from raysweep.models.net import TransferNet


def _net(seed: int = 0) -> TransferNet:
    return tiny_net(seed, stem=8, width=16, classes=5).eval()


def _target(model: TransferNet, n: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.rand(n, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return x, model.features(x)


def test_inversion_lowers_the_loss_tenfold() -> None:
    model = _net()
    _, z = _target(model)
    images, curve = invert(
        model, z, steps=400, step_size=0.05, generator=torch.Generator().manual_seed(2)
    )
    assert images.shape == (4, 3, 8, 8)
    assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0
    assert len(curve) == 401
    assert curve[-1] <= curve[0] / 10
    with torch.no_grad():
        final = inversion_loss(model.features(images), z)
    assert float(final.mean()) == pytest.approx(curve[-1], rel=1e-5)


def test_inversion_loss_is_relative_l2_distance() -> None:
    z = torch.tensor([[3.0, 4.0]])
    assert float(inversion_loss(torch.tensor([[0.0, 4.0]]), z)[0]) == pytest.approx(3.0 / 5.0)


def test_zero_noise_variational_inversion_equals_plain_inversion() -> None:
    model = _net()
    _, z = _target(model, 2)
    zero = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    a, ca = invert(model, z, steps=20, step_size=0.05, generator=torch.Generator().manual_seed(3))
    b, cb = variational_invert(
        model, z, zero, steps=20, step_size=0.05, generator=torch.Generator().manual_seed(3)
    )
    torch.testing.assert_close(a, b)
    assert ca == pytest.approx(cb)


def test_noise_once_versus_noise_every_step(monkeypatch: pytest.MonkeyPatch) -> None:
    model = _net()
    x, z = _target(model, 2)
    before = {n: p.clone() for n, p in model.state_dict().items()}
    variances = fisher_noise_variances(diagonal_fisher(model, x, None), beta=1e-6, damping=1e-2)
    calls: list[int] = []
    real = inversion._noisy_params

    def counting(*args: object, **kwargs: object) -> dict[str, torch.Tensor]:
        calls.append(1)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(inversion, "_noisy_params", counting)
    g = torch.Generator().manual_seed(4)
    once, curve_once = variational_invert(
        model, z, variances, steps=30, step_size=0.05, generator=g
    )
    assert len(calls) == 1
    calls.clear()
    every, curve_every = effective_images(
        model, z, variances, steps=30, step_size=0.05, generator=g
    )
    assert len(calls) == 31  # one draw per step and one for the final loss
    assert not torch.allclose(once, every)
    assert curve_once[-1] < curve_once[0] and curve_every[-1] < curve_every[0]
    for n, p in model.state_dict().items():
        assert torch.equal(p, before[n]), n


def test_noise_variance_helpers() -> None:
    model = _net()
    fisher = {"head.bias": torch.tensor([0.0, 1.0, 3.0, 0.0, 0.0])}
    var = fisher_noise_variances(fisher, beta=2.0, damping=1.0)
    torch.testing.assert_close(var["head.bias"].float(), torch.tensor([2.0, 1.0, 0.5, 2.0, 2.0]))
    logvars = {"blocks.0.0": np.log(np.arange(1.0, 17.0))}
    per_weight = logvar_noise_variances(model, logvars)["blocks.0.0.weight"]
    assert per_weight.shape == (16, 8, 3, 3)
    assert float(per_weight[4, 7, 2, 1]) == pytest.approx(5.0)
    with pytest.raises(ValueError, match="unknown parameters"):
        variational_invert(model, torch.ones(1, 16), {"nope": torch.ones(1)}, steps=1)


def test_image_grid_layout_and_values() -> None:
    imgs = torch.zeros(3, 1, 4, 5)
    imgs[1, 0, 2, 3] = 0.5
    grid = image_grid(imgs, nrow=2, padding=2)
    assert grid.dtype == np.uint8 and grid.shape == (2 * 6 + 2, 2 * 7 + 2, 3)
    # Image 1 sits in row 0, column 1: origin at (2, 2 + 7).
    assert tuple(grid[2 + 2, 9 + 3]) == (128, 128, 128)
    assert tuple(grid[2, 2]) == (0, 0, 0) and tuple(grid[0, 0]) == (255, 255, 255)


def test_feature_visualisation_increases_the_coordinate() -> None:
    model = _net()
    seeds = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(5))
    images, curve = visualize_feature(model, seeds, coordinate=7, steps=40, step_size=0.1)
    assert len(curve) == 41 and curve[-1] > curve[0] + 0.1
    with torch.no_grad():
        before, after = model.features(seeds)[:, 7], model.features(images)[:, 7]
    assert torch.all(after > before)
    assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0
    with pytest.raises(ValueError, match="coordinate"):
        visualize_feature(model, seeds, coordinate=16, steps=1)
