"""Online adaptation over a stream, batch by batch: the piece the TTA stream actor and the TTAQ
benchmark share (pure: no Ray, no I/O).

`StreamAdapter` wraps one model, one registered TTA method (or none: the source model as it is)
and optionally TTAQ's adaptive balanced loss; `step(x, y)` adapts on the batch and returns that
batch's error, mean prediction entropy and seconds; `state_dict()` holds everything a resumed
stream needs (TTA state, ABL statistics, per-domain tallies). Per-domain error and its mean over
domains follow the continual-TTA protocol of CoTTA (arXiv:2203.13591) as used by TTAQ
(arXiv:2412.09899); the class and its state layout are our design [inferred].
"""
from __future__ import annotations

import time
from typing import Any

import torch
from torch import nn

from methods.metrics.classification import error_rate, mean_prediction_entropy
from methods.tta.base import TTA_METHODS

NO_TTA = "none"


class StreamAdapter:
    """One model adapted online by one TTA method (`"none"`: evaluated as it is, eval-mode BN)."""

    def __init__(self, model: nn.Module, tta: str, num_classes: int, abl: bool = False, seed: int = 0,
                 tta_config=None, abl_config=None) -> None:
        from methods.ttaq import AdaptiveBalancedLoss  # ttaq imports the PTQ stack; keep it lazy here

        self.model = model.eval()
        self.abl = AdaptiveBalancedLoss(num_classes, abl_config) if abl else None
        self.tta_name = tta
        self.method = None if tta == NO_TTA else TTA_METHODS.get(tta).build(model, tta_config, self.abl, seed)
        self.tally: dict[str, list[float]] = {}  # domain -> [wrong, seen]

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        if self.method is None:
            with torch.no_grad():
                return self.model(x)
        return self.method.adapt(x)

    def step(self, x: torch.Tensor, y: torch.Tensor, domain: str = "") -> dict[str, float]:
        t0 = time.perf_counter()
        logits = self.predict(x)
        seconds = time.perf_counter() - t0
        err = error_rate(logits, y)
        wrong_seen = self.tally.setdefault(domain, [0.0, 0.0])
        wrong_seen[0] += err * len(y)
        wrong_seen[1] += len(y)
        return {"batch_error": err, "entropy": mean_prediction_entropy(logits), "seconds": seconds,
                "n_items": len(y)}

    def domain_errors(self) -> dict[str, float]:
        return {d: w / n for d, (w, n) in self.tally.items() if n}

    def mean_error(self) -> float:
        errs = self.domain_errors()
        return sum(errs.values()) / len(errs) if errs else float("nan")

    def state_dict(self) -> dict[str, Any]:
        return {"tta": None if self.method is None else self.method.state_dict(),
                "abl": None if self.abl is None else self.abl.state_dict(),
                "tally": {d: list(v) for d, v in self.tally.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.method is not None:
            self.method.load_state_dict(state["tta"])
        if self.abl is not None:
            self.abl.load_state_dict(state["abl"])
        self.tally = {d: list(v) for d, v in state["tally"].items()}
