"""The demonstration task: multinomial logistic regression on `digits`, scored by k-fold CV.

A cheap but honest objective for the farm's demonstration sweep (`sweeps/demo_sweep.py`): the
accuracy is measured, not simulated, and depends on the parameters in the usual way (too strong
regularisation underfits, too weak overfits a little). Each chunk is one cross-validation fold,
so the study can prune a trial after its first folds. Our own design; no paper.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from methods.errors import ConfigError
from sims.data.digits import SIZES, load_digits_split


@dataclass(frozen=True)
class DemoTaskConfig:
    """Args:
    max_iter: LogisticRegression iterations (lbfgs).
    folds_seed: seed of the fold assignment (fixed across trials so trials are comparable).
    """

    max_iter: int = 200
    folds_seed: int = 0
    version: int = 1

    def __post_init__(self) -> None:
        if self.max_iter < 1:
            raise ConfigError(f"task.max_iter must be >= 1, got {self.max_iter}.")


class DigitsLogRegTask:
    """Loaded once per actor: the digits splits at every size."""

    def __init__(self, config: DemoTaskConfig = DemoTaskConfig()) -> None:
        self.config = config
        self.data = {}
        for size in SIZES:
            xtr, ytr = load_digits_split("train", size)
            xte, yte = load_digits_split("test", size)
            self.data[size] = (xtr.flatten(1).numpy(), ytr.numpy(), xte.flatten(1).numpy(), yte.numpy())
        self._fold_scores: dict[int, list[float]] = {}

    def _fit(self, C: float, x: np.ndarray, y: np.ndarray, seed: int):
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(C=C, max_iter=self.config.max_iter, random_state=seed).fit(x, y)

    def evaluate(self, params: dict[str, Any], *, seed: int, trial: int, chunk: int, n_chunks: int) -> dict[str, Any]:
        C, size = float(params["C"]), int(params.get("size", 8))
        if size not in self.data:
            raise ConfigError(f"size must be one of {SIZES}, got {size}.")
        xtr, ytr, xte, yte = self.data[size]
        folds = np.random.default_rng(self.config.folds_seed).permutation(len(ytr)) % max(n_chunks, 2)
        k = chunk if n_chunks > 1 else 0
        t0 = time.perf_counter()
        model = self._fit(C, xtr[folds != k], ytr[folds != k], seed)
        fold_acc = float((model.predict(xtr[folds == k]) == ytr[folds == k]).mean())
        fit_s = time.perf_counter() - t0
        scores = self._fold_scores.setdefault(trial, [])
        if chunk == 0:
            scores.clear()
        scores.append(fold_acc)
        cv = float(np.mean(scores))
        if chunk < n_chunks - 1:
            return {"intermediate": cv}
        self._fold_scores.pop(trial, None)
        full = self._fit(C, xtr, ytr, seed)
        test_acc = float((full.predict(xte) == yte).mean())
        return {"objectives": {"accuracy": cv, "fit_seconds": fit_s},
                "metrics": {"test_accuracy": test_acc, "folds": len(scores)}}
