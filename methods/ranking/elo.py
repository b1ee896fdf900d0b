"""Online Elo, Chatbot Arena's early-leaderboard rule: the baseline of K-Sort Arena's Table 1.

Papers: "K-Sort Arena" (Li et al., arXiv 2408.14468) uses Elo with random pairs as its baseline;
"Chatbot Arena: An Open Platform for Evaluating LLMs by Human Preference" (Chiang et al., arXiv
2403.04132). The settings follow FastChat's `compute_elo` (fastchat/serve/monitor/elo_analysis.py,
read via the reference brief): E_a = 1/(1 + base^((R_b − R_a)/scale)), R_a += K·(S_a − E_a),
K = 4, base 10, scale 400, initial rating 1000, a tie scores 0.5.

Our own design [inferred]: a K-wise vote is split into its pairwise constraints (Outcome.pairs())
and applied one pair after another, as FastChat applies battles in log order.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from methods.errors import ConfigError
from methods.ranking.base import BaseRanker, Outcome, register_ranker


@dataclass(frozen=True)
class EloConfig:
    version: int = 1
    k_factor: float = 4.0
    base: float = 10.0
    scale: float = 400.0
    init: float = 1000.0

    def __post_init__(self) -> None:
        if self.version != 1:
            raise ConfigError(f"EloConfig version 1 expected, got {self.version}.")
        if not self.k_factor > 0 or not self.scale > 0 or not self.base > 1:
            raise ConfigError(f"EloConfig needs k_factor > 0, scale > 0 and base > 1; got "
                              f"k_factor={self.k_factor}, scale={self.scale}, base={self.base}.")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def search_space() -> dict[str, tuple]:
    return {"k_factor": ("float", 1.0, 32.0)}


def elo_expected(r_a: float, r_b: float, base: float = 10.0, scale: float = 400.0) -> float:
    """Probability that a beats b under the logistic Elo model."""
    return 1.0 / (1.0 + base ** ((r_b - r_a) / scale))


@register_ranker("elo")
class EloRanker(BaseRanker):
    """Online Elo with random matchmaking (Chatbot Arena settings by default)."""

    name = "elo"
    config_cls = EloConfig

    def __init__(self, models: Iterable[str] = (), config: EloConfig | None = None) -> None:
        self.config = config or EloConfig()
        if not isinstance(self.config, EloConfig):
            raise ConfigError(f"EloRanker expects an EloConfig, got {type(self.config).__name__}.")
        self.rating = np.zeros(0)
        super().__init__(models)

    def _add(self, index: int) -> None:
        self.rating = np.append(self.rating, self.config.init)

    def _update(self, idx: list[int], outcome: Outcome) -> None:
        cfg = self.config
        for i, j, s in outcome.pairs():
            a, b = idx[i], idx[j]
            e = elo_expected(self.rating[a], self.rating[b], cfg.base, cfg.scale)
            self.rating[a] += cfg.k_factor * (s - e)
            self.rating[b] -= cfg.k_factor * (s - e)

    def _scores(self) -> np.ndarray:
        return self.rating
