"""Every way raysweep draws images from a split, as functions of (labels, size, seed) only.

- :func:`sample_subset`: a fine-tuning subset with every label present (Utrera et al. 2021,
  Appendix A.3);
- :func:`draw_images`: a probe's or tracker's images, also fewer than the classes;
- :func:`validation_split`: a search trial's held-out part of its training subset.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch


def as_numpy(values: torch.Tensor | np.ndarray) -> np.ndarray:
    """A NumPy view of labels or indices given as a tensor (any device) or an array; torch-free
    here, so that spec validation can use this module without torch."""
    if hasattr(values, "detach"):
        return values.detach().cpu().numpy()
    return np.asarray(values)


def sample_subset(
    labels: torch.Tensor | np.ndarray,
    size: int | None,
    seed: int,
    num_classes: int,
    *,
    dataset: str | None = None,
) -> np.ndarray:
    """Indices of a random subset of ``size`` images in which every label occurs at least once.

    Utrera et al. (ICLR 2021, A.3) draw subsets of 100 ... 25,600 images "using random sampling
    without replacement, with a minor constraint: all labels must have at least one training
    image" (their later code dropped the constraint; we keep it). The draw, with
    ``rng = numpy.random.Generator(PCG64(seed))`` and ``perm = rng.permutation(N)``:

    1. for each label k, the first index of class k in ``perm`` (a uniform draw within class k);
    2. the remaining ``size - num_classes`` slots: the earliest other indices of ``perm``.

    So the result depends only on (labels, size, seed), never on global RNG state, and for a
    fixed seed the subsets are nested: ``sample_subset(y, 100, s) ⊂ sample_subset(y, 200, s)``.

    Args:
        labels: int labels [N] in 0 .. num_classes-1.
        size: number of images wanted; ``None`` means all N.
        seed: seed of the PCG64 generator (Utrera use 20000000 + 100000·i).
        num_classes: number of labels that must all be present.
        dataset: name used in error messages only.

    Returns:
        sorted int64 indices into ``labels``, no duplicates.
    """
    y = as_numpy(labels).astype(np.int64).reshape(-1)
    n = y.shape[0]
    if size is None:
        return np.arange(n, dtype=np.int64)
    _check_size(size, n, num_classes, dataset)
    _check_labels(y, num_classes, dataset)
    perm = np.random.Generator(np.random.PCG64(seed)).permutation(n)
    # np.unique(return_index) gives each label's first position in the permuted order.
    _, first_pos = np.unique(y[perm], return_index=True)
    chosen = perm[first_pos]
    is_chosen = np.zeros(n, dtype=bool)
    is_chosen[chosen] = True
    rest = perm[~is_chosen[perm]][: size - num_classes]
    return np.sort(np.concatenate([chosen, rest])).astype(np.int64)


def _check_size(size: int, n: int, num_classes: int, dataset: str | None) -> None:
    """Reject sizes that cannot give a subset holding every label once, with a one-line fix."""
    of = f" of '{dataset}'" if dataset else ""
    if isinstance(size, bool) or not isinstance(size, int | np.integer):
        raise ValueError(f"subset size must be an int or None ('all'), got {size!r}")
    if size > n:
        raise ValueError(
            f"subset size {size} exceeds the {n} training images{of}; use a size <= {n} or 'all'"
        )
    if size < num_classes:
        raise ValueError(
            f"subset size {size} is below the {num_classes} classes{of}; every label needs "
            f"at least one image, use a size >= {num_classes}"
        )


def _check_labels(y: np.ndarray, num_classes: int, dataset: str | None) -> None:
    """Every label 0..num_classes-1 must occur, and nothing else, for the guarantee to hold."""
    outside = y[(y < 0) | (y >= num_classes)]
    missing = np.setdiff1d(np.arange(num_classes), y)
    if outside.size or missing.size:
        where = f" of '{dataset}'" if dataset else ""
        raise ValueError(
            f"every label 0..{num_classes - 1} must occur in the training labels{where} to be put "
            f"in a subset; missing {missing[:10].tolist()}, out of range {outside[:10].tolist()}"
        )


def draw_images(
    labels: torch.Tensor | np.ndarray, size: int, seed: int, num_classes: int, dataset: str
) -> np.ndarray:
    """Sorted indices of ``size`` images of a split (probes, information tracking).

    ``size >= N``: every image. ``num_classes <= size < N``: :func:`sample_subset` (every class
    present). ``size < num_classes`` (e.g. 8 images for an inversion grid of a 10-class set):
    ``size`` images of distinct classes, drawn from the one-per-class subset.
    """
    n = int(labels.shape[0])
    if size >= n:
        return np.arange(n, dtype=np.int64)
    if size >= num_classes:
        return sample_subset(labels, size, seed, num_classes, dataset=dataset)
    one_each = sample_subset(labels, num_classes, seed, num_classes, dataset=dataset)
    rng = np.random.Generator(np.random.PCG64(seed))
    return np.sort(rng.choice(one_each, size, replace=False)).astype(np.int64)


def validation_count(size: int, fraction: float) -> int:
    """Images carved off for validation: round(fraction · size), at least one."""
    return max(1, round(fraction * size))


def validation_split(
    indices: np.ndarray | torch.Tensor,
    labels: np.ndarray | torch.Tensor,
    fraction: float,
    seed: int,
    num_classes: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Split a training subset into (fit, validation) rows, both sorted.

    ``n_val = validation_count(n, fraction)`` rows go to validation, drawn from a PCG64(seed)
    permutation of the subset after one row of every class present is kept for training, so
    the fit part still holds every label. Only training images are involved: a search never
    reads the test split.
    """
    indices = as_numpy(indices).astype(np.int64)
    y = as_numpy(labels)[indices]
    n_val = validation_count(len(indices), fraction)
    if len(indices) - n_val < len(np.unique(y)):
        raise ValueError(
            f"a validation split of {n_val} of {len(indices)} images leaves a class of the "
            f"{num_classes} without a training image; lower search.validation_fraction"
        )
    perm = np.random.Generator(np.random.PCG64(seed)).permutation(len(indices))
    _, first = np.unique(y[perm], return_index=True)
    keep = np.zeros(len(indices), dtype=bool)
    keep[perm[first]] = True
    held = perm[~keep[perm]][:n_val]
    fit = np.setdiff1d(np.arange(len(indices)), held)
    return np.sort(indices[fit]), np.sort(indices[held])
