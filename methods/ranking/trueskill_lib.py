"""The `trueskill` package (Microsoft's TrueSkill, factor graph + expectation propagation) as a ranker.

Papers: "TrueSkill: A Bayesian Skill Rating System" (Herbrich, Minka, Graepel, NeurIPS 2006), the
model K-Sort Arena (Li et al., arXiv 2408.14468) builds on; the authors' sibling project K-Sort
Eval calls `trueskill.TrueSkill()` with its defaults and `env.rate([[r] for r in group], ranks)`
(reference brief §1.2). The library's factor graph links *adjacent* ranks only, unlike K-Sort's
full pairing.

Our own design [inferred]: draw_probability defaults to 0 (no draw margin, as in our K-Sort);
the library cannot rate a tie with a zero draw margin, so a vote with ties is rated in an
environment with `tie_draw_probability` (default 0.10, the library's default). A "best" vote with
K > 2 leaves the losers unordered, which the library cannot express: they are passed as tied.
Score = μ − 3σ (the library's `expose`).
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from methods.errors import ConfigError
from methods.ranking.base import BaseRanker, Outcome, register_ranker

try:  # an optional dependency: report clearly when it is missing, never at import of the package
    import trueskill as _ts
except ImportError:  # pragma: no cover - exercised only on a broken install
    _ts = None


def require_trueskill() -> Any:
    if _ts is None:
        raise ConfigError("The 'trueskill' ranker needs the `trueskill` package (pyproject lists "
                          "trueskill>=0.4.5), but it is not installed; reinstall the project.")
    return _ts


@dataclass(frozen=True)
class TrueSkillConfig:
    version: int = 1
    mu: float = 25.0
    sigma: float = 25.0 / 3.0
    beta: float = 25.0 / 6.0
    tau: float = 25.0 / 300.0
    draw_probability: float = 0.0
    tie_draw_probability: float = 0.10
    eta: float = 3.0

    def __post_init__(self) -> None:
        if self.version != 1:
            raise ConfigError(f"TrueSkillConfig version 1 expected, got {self.version}.")
        if not (self.sigma > 0 and self.beta > 0 and self.tau >= 0 and self.eta >= 0):
            raise ConfigError(f"TrueSkillConfig needs sigma, beta > 0 and tau, eta ≥ 0; got "
                              f"{self.to_dict()}.")
        if not (0 <= self.draw_probability < 1 and 0 < self.tie_draw_probability < 1):
            raise ConfigError(f"draw_probability must be in [0, 1) and tie_draw_probability in "
                              f"(0, 1); got {self.draw_probability}, {self.tie_draw_probability}.")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def search_space() -> dict[str, tuple]:
    return {"beta": ("float", 1.0, 10.0), "tau": ("float", 0.0, 1.0)}


@register_ranker("trueskill")
class TrueSkillRanker(BaseRanker):
    """Ratings kept as `trueskill.Rating`; free-for-all votes through `TrueSkill.rate`."""

    name = "trueskill"
    config_cls = TrueSkillConfig

    def __init__(self, models: Iterable[str] = (), config: TrueSkillConfig | None = None) -> None:
        ts = require_trueskill()
        self.config = c = config or TrueSkillConfig()
        if not isinstance(c, TrueSkillConfig):
            raise ConfigError(f"TrueSkillRanker expects a TrueSkillConfig, got {type(c).__name__}.")
        self.env = ts.TrueSkill(mu=c.mu, sigma=c.sigma, beta=c.beta, tau=c.tau,
                                draw_probability=c.draw_probability)
        self._tie_env = ts.TrueSkill(mu=c.mu, sigma=c.sigma, beta=c.beta, tau=c.tau,
                                     draw_probability=max(c.draw_probability, c.tie_draw_probability))
        self.ratings: list[Any] = []
        super().__init__(models)

    def _add(self, index: int) -> None:
        self.ratings.append(self.env.create_rating())

    def _update(self, idx: list[int], outcome: Outcome) -> None:
        ranks = list(outcome.ranks)
        if len(set(ranks)) == 1:
            return  # a declared tie of everyone: treated as no information, like K-Sort
        env = self.env if len(set(ranks)) == len(ranks) else self._tie_env
        groups = [(self.ratings[i],) for i in idx]
        new = env.rate(groups, ranks=ranks)
        for i, (r,) in zip(idx, new, strict=True):
            self.ratings[i] = r

    def _scores(self) -> np.ndarray:
        eta = self.config.eta
        return np.array([r.mu - eta * r.sigma for r in self.ratings])
