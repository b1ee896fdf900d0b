"""The `openskill` package (Weng–Lin Bayesian approximation) as a ranker.

Papers: "A Bayesian Approximation Method for Online Ranking" (Weng & Lin, JMLR 2011); compared
against in "K-Sort Arena" (Li et al., arXiv 2408.14468), whose Eqs. 9–10 are closest to
openskill's `ThurstoneMostellerFull` with γ = 1 (reference brief §1.6).

Our own design [inferred]: the model is chosen by name (`ThurstoneMostellerFull` by default) with
the library's defaults (μ 25, σ 25/3, β 25/6, κ 1e-4, τ 25/300); ties and the unordered losers of
a "best" vote are passed as equal ranks, which openskill rates as draws. Score = `ordinal()`,
μ − 3σ.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from methods.errors import ConfigError, did_you_mean
from methods.ranking.base import BaseRanker, Outcome, register_ranker

OPENSKILL_MODELS = ("ThurstoneMostellerFull", "ThurstoneMostellerPart", "BradleyTerryFull",
                    "BradleyTerryPart", "PlackettLuce")

try:  # optional dependency: a clear error on use, never at import of the package
    import openskill.models as _osm
except ImportError:  # pragma: no cover - exercised only on a broken install
    _osm = None


@dataclass(frozen=True)
class OpenSkillConfig:
    version: int = 1
    model: str = "ThurstoneMostellerFull"
    mu: float = 25.0
    sigma: float = 25.0 / 3.0
    beta: float = 25.0 / 6.0
    tau: float = 25.0 / 300.0
    kappa: float = 1e-4

    def __post_init__(self) -> None:
        if self.version != 1:
            raise ConfigError(f"OpenSkillConfig version 1 expected, got {self.version}.")
        if self.model not in OPENSKILL_MODELS:
            raise ConfigError(f"OpenSkillConfig.model {self.model!r} is unknown. "
                              f"{did_you_mean(self.model, OPENSKILL_MODELS)}")
        if not (self.sigma > 0 and self.beta > 0 and self.tau >= 0 and self.kappa > 0):
            raise ConfigError(f"OpenSkillConfig needs sigma, beta, kappa > 0 and tau ≥ 0; got "
                              f"{self.to_dict()}.")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def search_space() -> dict[str, tuple]:
    return {"model": ("categorical", list(OPENSKILL_MODELS)), "beta": ("float", 1.0, 10.0)}


@register_ranker("openskill")
class OpenSkillRanker(BaseRanker):
    """Ratings kept as openskill rating objects; votes through `model.rate(teams, ranks)`."""

    name = "openskill"
    config_cls = OpenSkillConfig

    def __init__(self, models: Iterable[str] = (), config: OpenSkillConfig | None = None) -> None:
        if _osm is None:
            raise ConfigError("The 'openskill' ranker needs the `openskill` package (pyproject "
                              "lists openskill>=6), but it is not installed; reinstall the project.")
        self.config = c = config or OpenSkillConfig()
        if not isinstance(c, OpenSkillConfig):
            raise ConfigError(f"OpenSkillRanker expects an OpenSkillConfig, got {type(c).__name__}.")
        self.model = getattr(_osm, c.model)(mu=c.mu, sigma=c.sigma, beta=c.beta, tau=c.tau,
                                            kappa=c.kappa)
        self.ratings: list[Any] = []
        super().__init__(models)

    def _add(self, index: int) -> None:
        self.ratings.append(self.model.rating())

    def _update(self, idx: list[int], outcome: Outcome) -> None:
        if len(set(outcome.ranks)) == 1:
            return  # a declared tie of everyone carries no ordering
        teams = [[self.ratings[i]] for i in idx]
        new = self.model.rate(teams, ranks=[float(r) for r in outcome.ranks])
        for i, (r,) in zip(idx, new, strict=True):
            self.ratings[i] = r

    def _scores(self) -> np.ndarray:
        return np.array([r.ordinal() for r in self.ratings])
