"""K-Sort Arena's ranking engine: K-wise Bayesian skill updates and UCB matchmaking.

Paper: "K-Sort Arena: Efficient and Reliable Benchmarking for Generative Models via K-wise Human
Preferences" (Zhikai Li et al., arXiv 2408.14468, CVPR 2025). The official app is a Hugging Face
Space whose core code could not be read, so nothing here follows official code.

Follows the paper:
- Capability model: skill θ_i ~ N(μ_i, σ_i²); a judge sees X_i ~ N(θ_i, β²), β the
  preference noise, separate from σ. Leaderboard score S_i = μ_i − η·σ_i, η = 3.
- Pairwise update (Eqs. 4–8) with c² = 2β² + σ_i² + σ_q², t = (μ_w − μ_l)/c, V = φ/Φ,
  W = V(V + t): μ_w += σ_w²/c·V(t), σ_w² *= 1 − σ_w²/c²·W(t); the loser mirrored. This is the
  TrueSkill two-player, no-draw update (checked against the `trueskill` package in the tests).
- K-wise "full pairing" update (Eqs. 9–10): every model sums the pairwise terms against every
  other model it has a constraint with, all from the pre-vote (μ, σ). Eq. 9's "r_q > r_q" typo is
  read as "q ranked below i".
- Matchmaking (Eqs. 11–14): pivot = the model with the fewest comparisons (ties at random);
  K−1 opponents = the unused models with the highest U(pivot, q) = ±|S_p − S_q| + α·sqrt(ln n /
  n_pq), α = 1.

Our own design [inferred]:
- Defaults μ0 = 25, σ0 = 25/3, β = 25/6 (the `trueskill` package's; the paper states none) and
  τ = 0 (the paper's update has no dynamics term; τ > 0 adds τ² to σ² before each update).
- A variance floor σ² ≥ (floor_frac·σ0)², default floor_frac = 0.01 (σ² ≥ 1e-4·σ0²): Eq. 10
  alone drives σ² negative when K is large. From the prior (all μ = μ0, σ = σ0, t = 0) each of a
  full ranking's K−1 terms removes σ0²·W(0)/c² = 0.255 of σ² (trueskill defaults), so the first
  vote's factor 1 − (K−1)·0.255 is < 0 for K ≥ 5 (not K ≥ 6, as an earlier version said).
- The UCB sign: the paper's text says exploitation favours *similar* skill but the printed
  formula maximises +|ΔS|. `ucb_reading="similar"` (default) uses −|ΔS|, `"printed"` the
  literal +|ΔS|; benchmarks show only "similar" converges (sweeps/bench_ksort.py).
- n_pq = 0 is an infinite bonus; unmet candidates are then ordered by the exploitation term
  (most similar first under "similar"), ties at random. n counts votes so far; ln n = 0 for n ≤ 1.
- Ties (equal ranks in "rank" mode, a declared tie in "best" mode) carry no constraint: Eqs. 9–10
  have no draw term.

Three readings of the K-wise variance update, `KSortConfig.kwise_update` (sweeps/bench_ksort.py
measures all three at K = 2…8):
- "simultaneous" [paper] (default): Eqs. 9–10 as printed, every term from the pre-vote (μ, σ),
  the K−1 variance terms summed inside one factor 1 − σ_i²·Σ_q W/c_iq². This factor can be ≤ 0
  (K ≥ 5 from the prior); the update does not crash: σ² is held at the floor and the ranker
  counts such votes (`KSortRanker.negative_variance_votes`, `floored_votes`), which the bench
  reports.
- "sequential" [inferred]: the K(K−1)/2 (rank) or K−1 (best) constraints applied one at a time as
  two-player updates (Eqs. 4–8), each from the (μ, σ) the previous one left. Order: by the
  winner's place, then the loser's (1st–2nd, 1st–3rd, …, 2nd–3rd, …); within a vote the order
  matters a little, across votes not at all. Each factor is in (0, 1), so σ² stays positive.
- "damped" [ours, after Weng & Lin 2011, Alg. 1]: the simultaneous sums with Weng–Lin's damping
  γ = σ_i/c_iq on each variance term (the paper has none). It still goes negative from the prior
  for K ≥ 8 (factor 1 − (K−1)·0.161). `gamma=True` is the older spelling of this reading and is
  kept for stored configs.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.special import log_ndtr

from methods.errors import ConfigError
from methods.ranking.base import BaseRanker, Outcome, register_ranker

UCB_READINGS = ("similar", "printed")
PIVOT_RULES = ("fewest", "random")
OPPONENT_RULES = ("ucb", "random")
KWISE_READINGS = ("simultaneous", "sequential", "damped")
_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


@dataclass(frozen=True)
class KSortConfig:
    """Hyper-parameters of K-Sort's Bayesian ranker and matchmaker (see the module docstring)."""

    version: int = 1
    mu0: float = 25.0
    sigma0: float = 25.0 / 3.0
    beta: float = 25.0 / 6.0
    tau: float = 0.0
    eta: float = 3.0
    floor_frac: float = 0.01
    alpha: float = 1.0
    ucb_reading: str = "similar"
    pivot: str = "fewest"
    opponents: str = "ucb"
    gamma: bool = False  # older spelling of kwise_update="damped"
    kwise_update: str = "simultaneous"

    def __post_init__(self) -> None:
        if self.version != 1:
            raise ConfigError(f"KSortConfig version 1 expected, got {self.version}; migrate the config.")
        for name in ("sigma0", "beta"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"KSortConfig.{name} must be > 0, got {getattr(self, name)!r}.")
        for name in ("tau", "eta", "alpha"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"KSortConfig.{name} must be ≥ 0, got {getattr(self, name)!r}.")
        if not 0 < self.floor_frac < 1:
            raise ConfigError(f"KSortConfig.floor_frac must be in (0, 1), got {self.floor_frac!r}; "
                              f"0.01 keeps σ² ≥ 1e-4·σ0².")
        for name, allowed in (("ucb_reading", UCB_READINGS), ("pivot", PIVOT_RULES),
                              ("opponents", OPPONENT_RULES), ("kwise_update", KWISE_READINGS)):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"KSortConfig.{name} must be one of {allowed}, "
                                  f"got {getattr(self, name)!r}.")

        if self.gamma and self.kwise_update == "sequential":
            raise ConfigError("KSortConfig.gamma=True is the damped reading; it cannot be combined with "
                              "kwise_update='sequential'. Set kwise_update='damped' and drop gamma.")

    @property
    def reading(self) -> str:
        """The K-wise variance reading in force ("damped" when the older `gamma=True` is set)."""
        return "damped" if self.gamma else self.kwise_update

    @property
    def sigma_floor(self) -> float:
        return self.floor_frac * self.sigma0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def search_space() -> dict[str, tuple]:
    """Tunable knobs for an Optuna study (plain dicts, house rule 8)."""
    return {
        "alpha": ("float", 0.0, 3.0),
        "beta": ("float", 1.0, 10.0),
        "eta": ("float", 0.0, 3.0),
        "ucb_reading": ("categorical", list(UCB_READINGS)),
    }


# --- the maths: pure functions on arrays -------------------------------------------------------
def v_func(t: np.ndarray | float) -> np.ndarray:
    """V(t) = φ(t)/Φ(t), computed in log space so large negative t (an upset) stays finite."""
    t = np.asarray(t, dtype=float)
    return np.exp(-0.5 * t * t - _LOG_SQRT_2PI - log_ndtr(t))


def w_func(t: np.ndarray | float) -> np.ndarray:
    """W(t) = V(t)·(V(t) + t), in (0, 1)."""
    v = v_func(t)
    return v * (v + np.asarray(t, dtype=float))


def kwise_raw(mu: np.ndarray, sigma: np.ndarray, d: np.ndarray, beta: float, tau: float = 0.0,
              reading: str = "simultaneous") -> tuple[np.ndarray, np.ndarray]:
    """One vote's update before any floor: (new μ, new σ², which may be ≤ 0 when simultaneous).

    `reading` is one of KWISE_READINGS (see the module docstring). The sequential reading applies
    each pairwise constraint in turn and so never leaves (0, σ²].
    """
    mu = np.asarray(mu, dtype=float)
    var = np.asarray(sigma, dtype=float) ** 2 + tau * tau
    if reading == "sequential":
        return _sequential(mu.copy(), var.copy(), d, beta)
    if reading not in KWISE_READINGS:
        raise ConfigError(f"kwise reading must be one of {KWISE_READINGS}, got {reading!r}.")
    c = np.sqrt(2.0 * beta * beta + var[:, None] + var[None, :])
    t = d * (mu[:, None] - mu[None, :]) / c  # from i's side: positive when i beat a weaker q
    active = d != 0
    v = np.where(active, v_func(t), 0.0)
    w = np.where(active, w_func(t), 0.0)
    new_mu = mu + var * np.sum(d * v / c, axis=1)
    # Weng–Lin's γ = σ_i/c_iq damps the variance term only (Alg. 1 of Weng & Lin 2011)
    damp = np.sqrt(var)[:, None] / c if reading == "damped" else 1.0
    shrink = 1.0 - var * np.sum(damp * w / (c * c), axis=1)
    return new_mu, var * shrink


def _sequential(mu: np.ndarray, var: np.ndarray, d: np.ndarray, beta: float
                ) -> tuple[np.ndarray, np.ndarray]:
    """Each constraint of `d` as a two-player update (Eqs. 4–8), in place, one after the other."""
    k = d.shape[0]
    wins = (d > 0).sum(axis=1)  # more wins = a better place; orders the pairs
    order = np.argsort(-wins, kind="stable")
    for a in range(k):
        for b in range(a + 1, k):
            i, j = int(order[a]), int(order[b])
            if d[i, j] == 0:
                continue
            w, lo = (i, j) if d[i, j] > 0 else (j, i)
            c2 = 2.0 * beta * beta + var[w] + var[lo]
            c = math.sqrt(c2)
            t = (mu[w] - mu[lo]) / c
            v, ww = float(v_func(t)), float(w_func(t))
            mu[w], mu[lo] = mu[w] + var[w] / c * v, mu[lo] - var[lo] / c * v
            var[w], var[lo] = var[w] * (1.0 - var[w] / c2 * ww), var[lo] * (1.0 - var[lo] / c2 * ww)
    return mu, var


def kwise_update(mu: np.ndarray, sigma: np.ndarray, d: np.ndarray, beta: float,
                 sigma_floor: float, tau: float = 0.0, gamma: bool = False,
                 reading: str = "simultaneous") -> tuple[np.ndarray, np.ndarray]:
    """Eqs. 9–10: the full-pairing update of K models from one vote.

    Args:
        mu, sigma: (K,) pre-vote means and standard deviations.
        d: (K, K) constraints, d[i, q] = +1 if i beat q, −1 if q beat i, 0 for none or a tie.
        beta: preference noise β (the same for every model).
        sigma_floor: σ never drops below this (a raw σ² ≤ 0 lands on the floor, no error).
        tau: dynamics; τ² is added to σ² first (0 = the paper's update).
        gamma: the older spelling of reading="damped".
        reading: "simultaneous" [paper], "sequential" [inferred] or "damped" [ours].

    Returns:
        The post-vote (μ, σ), new arrays.
    """
    new_mu, raw_var = kwise_raw(mu, sigma, d, beta, tau, "damped" if gamma else reading)
    return new_mu, np.sqrt(np.maximum(raw_var, sigma_floor * sigma_floor))


def prior_shrink(k: int, config: KSortConfig | None = None, mode: str = "rank") -> float:
    """Factor σ²_new/σ²_old of the top model after one noise-free K vote from the prior, no floor.

    ≤ 0 means the reading in force would make σ² non-positive on the very first vote.
    """
    cfg = config or KSortConfig()
    out = Outcome.full_ranking(list(range(k))) if mode == "rank" else Outcome.best_of(k, 0)
    mu, sg = np.full(k, cfg.mu0), np.full(k, cfg.sigma0)
    _, raw = kwise_raw(mu, sg, out.constraint_matrix(), cfg.beta, cfg.tau, cfg.reading)
    return float(raw[0] / (cfg.sigma0 ** 2 + cfg.tau ** 2))


def pairwise_update(winner: tuple[float, float], loser: tuple[float, float], beta: float,
                    sigma_floor: float = 0.0, tau: float = 0.0
                    ) -> tuple[tuple[float, float], tuple[float, float]]:
    """Eqs. 4–8 for one winner and one loser: ((μ_w, σ_w), (μ_l, σ_l)) after the vote."""
    mu = np.array([winner[0], loser[0]])
    sigma = np.array([winner[1], loser[1]])
    d = np.array([[0.0, 1.0], [-1.0, 0.0]])
    new_mu, new_sigma = kwise_update(mu, sigma, d, beta, sigma_floor, tau)
    return (float(new_mu[0]), float(new_sigma[0])), (float(new_mu[1]), float(new_sigma[1]))


def ucb_values(scores: np.ndarray, pivot: int, meet_row: np.ndarray, n_votes: int, alpha: float,
               reading: str) -> tuple[np.ndarray, np.ndarray]:
    """Eq. 13 for every candidate q against `pivot`: (finite part, unmet mask).

    The finite part is ±|S_p − S_q| + α·sqrt(ln n / n_pq) over met pairs; an unmet pair has an
    infinite bonus, returned as the mask so that callers can order unmet pairs by exploitation.
    """
    sign = -1.0 if reading == "similar" else 1.0
    exploit = sign * np.abs(scores[pivot] - scores)
    unmet = meet_row == 0
    log_n = math.log(n_votes) if n_votes > 1 else 0.0
    bonus = alpha * np.sqrt(log_n / np.maximum(meet_row, 1))
    return exploit + np.where(unmet, 0.0, bonus), unmet


def propose_ucb(ranker: BaseRanker, k: int, rng: np.random.Generator, *, alpha: float = 1.0,
                reading: str = "similar", pivot: str = "fewest", opponents: str = "ucb"
                ) -> tuple[str, ...]:
    """K-Sort's matchmaker (Eqs. 11–14) over any ranker's scores and meeting counts.

    pivot: "fewest" = argmin_i Σ_q n_iq (ties at random) or "random"; opponents: "ucb" = the
    K−1 highest U(pivot, q), unmet pairs first, or "random".
    """
    ranker.check_k(k)
    names, meet = ranker.models, ranker.meetings()
    if pivot == "random":
        p = int(rng.integers(len(names)))
    else:
        total = meet.sum(axis=1)
        p = int(rng.choice(np.flatnonzero(total == total.min())))
    others = np.delete(np.arange(len(names)), p)
    if opponents == "random":
        chosen = rng.choice(others, size=k - 1, replace=False)
    else:
        value, unmet = ucb_values(ranker.score_array(), p, meet[p], ranker.n_votes, alpha, reading)
        # lexsort: the last key is primary → unmet first, then higher U, then a random tie-break
        order = np.lexsort((rng.random(others.size), -value[others], ~unmet[others]))
        chosen = others[order[: k - 1]]
    return tuple(names[i] for i in (p, *chosen.tolist()))


@register_ranker("ksort")
class KSortRanker(BaseRanker):
    """K-Sort Arena: Gaussian skills, K-wise full-pairing updates, pivot + UCB matchmaking."""

    name = "ksort"
    config_cls = KSortConfig

    def __init__(self, models: Iterable[str] = (), config: KSortConfig | None = None) -> None:
        self.config = config or KSortConfig()
        if not isinstance(self.config, KSortConfig):
            raise ConfigError(f"KSortRanker expects a KSortConfig, got {type(self.config).__name__}.")
        self.mu = np.zeros(0)
        self.sigma = np.zeros(0)
        self.negative_variance_votes = 0  # votes whose raw Eq. 10 gave some σ² ≤ 0
        self.floored_votes = 0  # votes that put some σ on the floor (including the above)
        super().__init__(models)

    def _add(self, index: int) -> None:
        self.mu = np.append(self.mu, self.config.mu0)
        self.sigma = np.append(self.sigma, self.config.sigma0)

    def _update(self, idx: list[int], outcome: Outcome) -> None:
        d = outcome.constraint_matrix()
        cfg = self.config
        ii = np.asarray(idx)
        mu, raw_var = kwise_raw(self.mu[ii], self.sigma[ii], d, cfg.beta, cfg.tau, cfg.reading)
        floor2 = cfg.sigma_floor * cfg.sigma_floor
        self.negative_variance_votes += bool(np.any(raw_var <= 0.0))
        self.floored_votes += bool(np.any(raw_var < floor2))
        self.mu[ii], self.sigma[ii] = mu, np.sqrt(np.maximum(raw_var, floor2))

    def _scores(self) -> np.ndarray:
        return self.mu - self.config.eta * self.sigma

    def propose_match(self, k: int, rng: np.random.Generator) -> tuple[str, ...]:
        """Pivot by fewest comparisons, then the K−1 opponents with the highest U(pivot, q)."""
        c = self.config
        return propose_ucb(self, k, rng, alpha=c.alpha, reading=c.ucb_reading, pivot=c.pivot,
                           opponents=c.opponents)

    def state(self) -> dict[str, Any]:
        out = super().state()
        out["mu"] = {m: float(self.mu[i]) for i, m in enumerate(self._names)}
        out["sigma"] = {m: float(self.sigma[i]) for i, m in enumerate(self._names)}
        out["negative_variance_votes"] = self.negative_variance_votes
        out["floored_votes"] = self.floored_votes
        return out
