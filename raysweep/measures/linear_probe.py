"""The linear probe: the convex reference a head-only fine-tune should reach.

Multinomial logistic regression on frozen penultimate features h (Kornblith et al. 2019's
"logistic regression on fixed features"; the head Utrera et al.'s ``blocks: 0`` trains by SGD):

    min_{W, b}  (1/2C)·‖W‖²_F + Σ_i −log softmax(W z_i + b)_{y_i},   z = (h − μ) / σ,

with μ, σ the per-feature mean and standard deviation of the TRAINING subset (features of
robust and natural sources live on different scales; standardising makes one grid of C fit
both). C is chosen from ``cs`` by stratified k-fold cross-validation on the training subset
only (mean fold accuracy, ties to the smaller C — the stronger penalty), then the model is
refit on the whole subset with that C (scikit-learn's ``LogisticRegressionCV`` for the search,
``LogisticRegression``, L-BFGS, for the refit).
The test split is touched once, for the reported accuracy.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
from sklearn.model_selection import StratifiedKFold
from sklearn.preprocessing import StandardScaler

#: C grid: 10^-4 … 10^4, 17 values (half-decade steps).
DEFAULT_CS: tuple[float, ...] = tuple(float(c) for c in np.logspace(-4, 4, 17))


@dataclass(frozen=True)
class LinearProbeResult:
    """Test and training accuracy (%), the chosen C, its mean cross-validated accuracy (%),
    the L-BFGS iterations of the final fit, whether it met its tolerance, and the fitted
    (W [K, d], b [K]) on standardised features with the scaler's (μ, σ)."""

    test_acc: float
    train_acc: float
    c: float
    cv_acc: float
    iterations: int
    converged: bool
    weight: np.ndarray
    bias: np.ndarray
    mean: np.ndarray
    scale: np.ndarray


def cv_folds(labels: np.ndarray, folds: int) -> int:
    """Folds actually used: at most ``folds``, at least 2, and no more than the images of the
    second-largest class allow (a class seen in only one fold cannot be predicted anywhere
    else; the smallest class may still be a singleton — subsets guarantee one image a label)."""
    counts = np.sort(np.bincount(labels))[::-1]
    return int(max(2, min(folds, counts[1] if len(counts) > 1 else counts[0])))


def fit_linear_probe(
    train_h: np.ndarray,
    train_y: np.ndarray,
    test_h: np.ndarray,
    test_y: np.ndarray,
    *,
    cs: tuple[float, ...] = DEFAULT_CS,
    folds: int = 5,
    max_iter: int = 1000,
    tol: float = 1e-6,
    seed: int = 0,
) -> LinearProbeResult:
    """Fit the probe of the module docstring on (train_h, train_y); score it on the test split.

    Deterministic in ``seed`` (it shuffles the folds only; L-BFGS is deterministic).
    """
    scaler = StandardScaler().fit(train_h)
    z, z_test = scaler.transform(train_h), scaler.transform(test_h)
    split = StratifiedKFold(cv_folds(train_y, folds), shuffle=True, random_state=seed % 2**32)
    search = LogisticRegressionCV(
        Cs=list(cs), cv=split, max_iter=max_iter, tol=tol, scoring="accuracy", refit=False
    )
    with warnings.catch_warnings():  # singleton classes and unconverged folds: reported below
        warnings.simplefilter("ignore", (UserWarning, ConvergenceWarning, FutureWarning))
        search.fit(z, train_y)
        cv_scores = np.mean(next(iter(search.scores_.values())), axis=0)
        best = int(np.argmax(cv_scores))  # the first maximum: the smallest C among ties
        c = float(search.Cs_[best])
        model = LogisticRegression(C=c, max_iter=max_iter, tol=tol).fit(z, train_y)
    iterations = int(np.max(model.n_iter_))
    return LinearProbeResult(
        test_acc=100.0 * float(model.score(z_test, test_y)),
        train_acc=100.0 * float(model.score(z, train_y)),
        c=c,
        cv_acc=100.0 * float(cv_scores[best]),
        iterations=iterations,
        converged=iterations < max_iter,
        weight=model.coef_,
        bias=model.intercept_,
        mean=scaler.mean_,
        scale=scaler.scale_,
    )
