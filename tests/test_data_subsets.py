"""sample_subset: every label present, deterministic in (labels, size, seed), clear errors."""

import numpy as np
import pytest
import torch

from raysweep.data import load_dataset, sample_subset

# Imbalanced on purpose: class 9 has a single image, so the label guarantee is exercised.
LABELS = np.concatenate([np.repeat(np.arange(9), 100), [9]]).astype(np.int64)


@pytest.mark.parametrize("size", [10, 11, 50, 400, 901])
def test_every_label_present_no_duplicates(size: int) -> None:
    for seed in range(20):
        idx = sample_subset(LABELS, size, seed, 10)
        assert idx.dtype == np.int64 and idx.shape == (size,)
        assert np.all(np.diff(idx) > 0)  # sorted and unique
        assert set(LABELS[idx].tolist()) == set(range(10))


def test_deterministic_and_seed_dependent() -> None:
    a = sample_subset(LABELS, 100, 20_000_000, 10)
    b = sample_subset(torch.from_numpy(LABELS), 100, 20_000_000, 10)
    c = sample_subset(LABELS, 100, 20_100_000, 10)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    # Global RNG state must not matter.
    np.random.seed(1)
    torch.manual_seed(1)
    np.testing.assert_array_equal(a, sample_subset(LABELS, 100, 20_000_000, 10))


def test_subsets_nested_for_a_fixed_seed() -> None:
    small = sample_subset(LABELS, 100, 7, 10)
    large = sample_subset(LABELS, 200, 7, 10)
    assert set(small.tolist()) <= set(large.tolist())


def test_roughly_uniform_beyond_the_guarantee() -> None:
    # 200 draws of 100 from 901: each of the 900 class-0..8 images has inclusion rate ~ 0.1.
    counts = np.zeros(LABELS.size)
    for seed in range(200):
        counts[sample_subset(LABELS, 100, seed, 10)] += 1
    assert counts[-1] == 200  # the lone class-9 image is always in
    assert abs(counts[:-1].mean() / 200 - 99 / 900) < 0.002


def test_none_means_all() -> None:
    np.testing.assert_array_equal(sample_subset(LABELS, None, 0, 10), np.arange(LABELS.size))


def test_size_errors_are_one_line() -> None:
    with pytest.raises(ValueError, match=r"^subset size 5000 exceeds the 901 training images"):
        sample_subset(LABELS, 5000, 0, 10)
    with pytest.raises(ValueError, match=r"^subset size 9 is below the 10 classes"):
        sample_subset(LABELS, 9, 0, 10)
    with pytest.raises(ValueError, match=r"missing \[9\]"):
        sample_subset(LABELS[:-1], 50, 0, 10)


def test_error_names_the_dataset() -> None:
    digits = load_dataset("digits", "train")
    with pytest.raises(ValueError) as err:
        sample_subset(digits.labels, 5000, 0, 10, dataset="digits")
    msg = str(err.value)
    assert msg == (
        "subset size 5000 exceeds the 1347 training images of 'digits'; use a size <= 1347 or 'all'"
    )
    assert "\n" not in msg
