"""The demonstration world: `digits` as flat arrays, fixed cross-validation folds, a logistic fit.

Pure helpers behind the farm's demonstration task (`actors/demo_task.py`, run by
`sweeps/demo_sweep.py`): multinomial logistic regression on digits, scored by k-fold CV. The
accuracy is measured, not simulated, and depends on the parameters in the usual way (too strong
regularisation underfits, too weak overfits a little). Our own design; no paper.
"""
from __future__ import annotations

import numpy as np

from sims.data.digits import SIZES, load_digits_split

Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def digits_arrays() -> dict[int, Arrays]:
    """{size: (x_train, y_train, x_test, y_test)} with flattened images, for every digits size."""
    data = {}
    for size in SIZES:
        xtr, ytr = load_digits_split("train", size)
        xte, yte = load_digits_split("test", size)
        data[size] = (xtr.flatten(1).numpy(), ytr.numpy(), xte.flatten(1).numpy(), yte.numpy())
    return data


def cv_folds(n: int, n_folds: int, seed: int) -> np.ndarray:
    """Fold index (0..n_folds-1) of each of `n` samples; the same for every trial at one seed."""
    return np.random.default_rng(seed).permutation(n) % n_folds


def fit_logreg(C: float, x: np.ndarray, y: np.ndarray, max_iter: int, seed: int):
    """Multinomial logistic regression (lbfgs) with inverse regularisation strength `C`."""
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=C, max_iter=max_iter, random_state=seed).fit(x, y)


def accuracy(model, x: np.ndarray, y: np.ndarray) -> float:
    return float((model.predict(x) == y).mean())
