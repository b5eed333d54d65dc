"""EMD dataset distance (Cui et al. 2018) on hand-checkable point sets and tiny real datasets."""

from __future__ import annotations

import math

import numpy as np
import ot
import pytest
import torch
from scipy.stats import wasserstein_distance
from tiny_nets import one_thread, tiny_net  # noqa: F401  (one_thread: autouse fixture)

from raysweep.data.info import ArrayDataset, DatasetInfo
from raysweep.data.transforms import to_model_input
from raysweep.measures.distance import (
    class_mean_features,
    dataset_distance,
    domain_similarity,
    emd_distance,
)
from raysweep.models.net import TransferNet


def _net(seed: int = 0) -> TransferNet:
    return tiny_net(seed, width=5, block_tanh=False)


def _dataset(name: str, n: int, k: int, channels: int, size: int, seed: int) -> ArrayDataset:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, channels, size, size), generator=g, dtype=torch.uint8)
    labels = torch.arange(n) % k
    info = DatasetInfo(name, k, channels, size, (0.5,) * channels, (0.25,) * channels, n, False)
    return ArrayDataset(images, labels, info)


def test_two_single_points_at_distance_three_is_three_not_nine() -> None:
    d = emd_distance(np.array([[0.0, 0.0]]), np.array([1.0]), np.array([[3.0, 0.0]]), [2.0])
    assert d == pytest.approx(3.0, abs=1e-12)


def test_shifted_pair_of_points_costs_the_shift() -> None:
    a = np.array([[0.0, 0.0], [4.0, 0.0]])
    b = a + np.array([0.0, 3.0])
    assert emd_distance(a, [0.5, 0.5], b, [0.5, 0.5]) == pytest.approx(3.0, abs=1e-12)


def test_matches_one_dimensional_wasserstein_and_hand_built_emd2() -> None:
    rng = np.random.default_rng(0)
    u, v = rng.normal(size=4), rng.normal(loc=1.0, size=6)
    wu, wv = rng.uniform(0.1, 1, 4), rng.uniform(0.1, 1, 6)
    on_line = emd_distance(np.c_[u, np.zeros(4)], wu, np.c_[v, np.zeros(6)], wv)
    assert on_line == pytest.approx(wasserstein_distance(u, v, wu, wv), rel=1e-10)
    a, b = rng.normal(size=(3, 5)), rng.normal(size=(4, 5))
    cost = np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))
    expected = ot.emd2(np.full(3, 1 / 3), np.full(4, 1 / 4), cost)
    assert emd_distance(a, np.ones(3), b, np.ones(4)) == pytest.approx(expected, rel=1e-12)


def test_emd_is_symmetric_and_zero_on_identical_sets() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(5, 7)), rng.normal(size=(3, 7))
    wa, wb = rng.uniform(size=5), rng.uniform(size=3)
    assert emd_distance(a, wa, b, wb) == pytest.approx(emd_distance(b, wb, a, wa), rel=1e-12)
    assert emd_distance(a, wa, a, wa) == pytest.approx(0.0, abs=1e-12)


def test_class_mean_features_equal_manual_means_and_counts() -> None:
    model = _net()
    ds = _dataset("a", 10, 4, 3, 8, seed=2)
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 1, 3, 3, 3])  # class 2 is empty

    def prepare(b: torch.Tensor) -> torch.Tensor:
        return to_model_input(b, 8, 3)

    means, weights = class_mean_features(model, ds.images, labels, 4, prepare=prepare, batch_size=3)
    with torch.no_grad():
        model.eval()
        feats = model.features(prepare(ds.images)).double().numpy()
    assert means.dtype == np.float64 and means.shape == (4, 5)
    np.testing.assert_allclose(weights, [0.3, 0.4, 0.0, 0.3])
    np.testing.assert_allclose(means[1], feats[3:7].mean(0), rtol=1e-6)
    np.testing.assert_allclose(means[3], feats[7:].mean(0), rtol=1e-6)
    np.testing.assert_array_equal(means[2], np.zeros(5))


def test_dataset_distance_zero_for_identical_and_symmetric_otherwise() -> None:
    model = _net()
    a = _dataset("a", 12, 3, 3, 8, seed=3)
    b = _dataset("b", 15, 5, 1, 6, seed=4)  # grey 6x6: resized and repeated to 3x8x8
    assert dataset_distance(model, a, a) == pytest.approx(0.0, abs=1e-9)
    d_ab, d_ba = dataset_distance(model, a, b), dataset_distance(model, b, a)
    assert d_ab > 1e-4
    assert d_ab == pytest.approx(d_ba, rel=1e-9)
    assert model.training  # the caller's mode is restored


def test_domain_similarity_reproduces_cui_reference_value() -> None:
    assert domain_similarity(57.53) == pytest.approx(0.5625, abs=5e-4)  # Cui et al.: 0.563
    assert domain_similarity(0.0) == 1.0
    assert domain_similarity(10.0, gamma=0.1) == pytest.approx(math.exp(-1.0))


def test_invalid_inputs_raise_value_error() -> None:
    with pytest.raises(ValueError, match="w_a"):
        emd_distance(np.zeros((2, 3)), [0.0, 0.0], np.zeros((1, 3)), [1.0])
    with pytest.raises(ValueError, match="equal D"):
        emd_distance(np.zeros((2, 3)), [1, 1], np.zeros((1, 4)), [1.0])
    with pytest.raises(ValueError, match="labels must lie"):
        class_mean_features(
            _net(),
            torch.zeros(2, 3, 8, 8, dtype=torch.uint8),
            torch.tensor([0, 5]),
            3,
            prepare=lambda b: b.float() / 255,
        )
