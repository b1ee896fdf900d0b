"""The demonstration task: logistic regression on `digits`, one cross-validation fold per chunk.

A task for the generic evaluator (`actors/task.py`), run by `sweeps/demo_sweep.py`: the digits
arrays are loaded once per actor; each chunk fits one fold, so the study can prune a trial after
its first folds; the last chunk also fits the whole train split and reports the test accuracy.
The world (data, folds, fit) is `sims/demo.py`. Our own design; no paper.

Trial params: `C` (inverse regularisation strength), `size` (8, 16 or 32 pixels; default 8).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from actors.task import register_task
from methods.config_dict import ConfigDict
from methods.errors import ConfigError
from sims.demo import accuracy, cv_folds, digits_arrays, fit_logreg


@dataclass(frozen=True)
class DemoTaskConfig(ConfigDict):
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


@register_task("demo_logreg")
class DigitsLogRegTask:
    """Loaded once per actor: the digits splits at every size."""

    def __init__(self, config: DemoTaskConfig = DemoTaskConfig()) -> None:
        self.config = config
        self.data = digits_arrays()
        self._fold_scores: dict[int, list[float]] = {}

    def evaluate(
        self, params: dict[str, Any], *, seed: int, trial: int, chunk: int, n_chunks: int
    ) -> dict[str, Any]:
        C, size = float(params["C"]), int(params.get("size", 8))
        if size not in self.data:
            raise ConfigError(f"size must be one of {tuple(self.data)}, got {size}.")
        xtr, ytr, xte, yte = self.data[size]
        folds = cv_folds(len(ytr), max(n_chunks, 2), self.config.folds_seed)
        k = chunk if n_chunks > 1 else 0
        t0 = time.perf_counter()
        model = fit_logreg(C, xtr[folds != k], ytr[folds != k], self.config.max_iter, seed)
        fold_acc = accuracy(model, xtr[folds == k], ytr[folds == k])
        fit_s = time.perf_counter() - t0
        scores = self._fold_scores.setdefault(trial, [])
        if chunk == 0:
            scores.clear()
        scores.append(fold_acc)
        cv = float(np.mean(scores))
        if chunk < n_chunks - 1:
            return {"intermediate": cv}
        self._fold_scores.pop(trial, None)
        full = fit_logreg(C, xtr, ytr, self.config.max_iter, seed)
        return {"objectives": {"accuracy": cv, "fit_seconds": fit_s},
                "metrics": {"test_accuracy": accuracy(full, xte, yte), "folds": len(scores)}}
