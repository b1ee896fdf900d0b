"""Simulated voter populations for K-Sort Arena's convergence experiments.

Paper: "K-Sort Arena: Efficient and Reliable Benchmarking for Generative Models via K-wise Human
Preferences" (Li et al., arXiv 2408.14468), §4: every simulated model gets a shuffled ground-truth
rank, used only to decide outcomes and to score the ranking; the noisy setting has "a 5 % chance of
inconsistency between the comparison results and the labels".

Follows the paper: hidden shuffled true ranking; flip noise for K = 2 (the pair's result flips with
probability p).

Our own design [inferred]:
- Noise for K > 2 ("flip" mode): with probability p one random *adjacent* pair of the true order
  of the K shown models is swapped (the reference brief's rule; the paper does not say).
- "thurstone" noise: each voter perceives skill + N(0, sd²) per model and ranks by that; true
  skills are N−1−position, so sd is in units of the gap between neighbouring models.
- Voter bias: each voter has a fixed offset N(0, bias_sd²) per model (a taste), added to every
  perception.
- A share of adversarial voters (they reverse their perceived order) and careless voters (a
  uniformly random order). Kinds are assigned to voters once, by seed; each vote comes from a
  voter drawn uniformly.
- Determinism: the truth and the voters come from `seed`; `vote()` draws from one stream seeded by
  `seed`; `vote_batch(matches, batch_index)` draws from a stream seeded by (seed, batch_index), so
  voter actors reproduce a batch without sharing state.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from methods.errors import ConfigError, UnknownNameError, did_you_mean
from methods.ranking.base import VOTE_MODES, Outcome, VoteError

NOISE_MODELS = ("none", "flip", "thurstone")
VOTER_KINDS = ("honest", "adversarial", "careless")


@dataclass(frozen=True)
class VoterConfig:
    """A voter population over `n_models` simulated models (see the module docstring)."""

    version: int = 1
    n_models: int = 50
    noise: str = "flip"
    flip_prob: float = 0.0
    thurstone_sd: float = 1.0
    bias_sd: float = 0.0
    adversarial_share: float = 0.0
    careless_share: float = 0.0
    n_voters: int = 100
    vote_mode: str = "rank"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.version != 1:
            raise ConfigError(f"VoterConfig version 1 expected, got {self.version}.")
        if self.n_models < 2 or self.n_voters < 1:
            raise ConfigError(f"VoterConfig needs n_models ≥ 2 and n_voters ≥ 1, got "
                              f"n_models={self.n_models}, n_voters={self.n_voters}.")
        if self.noise not in NOISE_MODELS:
            raise ConfigError(f"VoterConfig.noise must be one of {NOISE_MODELS}, got {self.noise!r}.")
        if self.vote_mode not in VOTE_MODES:
            raise ConfigError(f"VoterConfig.vote_mode must be one of {VOTE_MODES}, "
                              f"got {self.vote_mode!r}.")
        for name in ("flip_prob", "adversarial_share", "careless_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"VoterConfig.{name} is a probability in [0, 1], "
                                  f"got {getattr(self, name)!r}.")
        if self.adversarial_share + self.careless_share > 1.0:
            raise ConfigError(f"adversarial_share + careless_share must be ≤ 1, got "
                              f"{self.adversarial_share} + {self.careless_share}.")
        if self.thurstone_sd < 0 or self.bias_sd < 0:
            raise ConfigError(f"thurstone_sd and bias_sd must be ≥ 0, got {self.thurstone_sd}, "
                              f"{self.bias_sd}.")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def search_space() -> dict[str, tuple]:
    return {"flip_prob": ("float", 0.0, 0.2), "thurstone_sd": ("float", 0.0, 3.0),
            "bias_sd": ("float", 0.0, 2.0), "adversarial_share": ("float", 0.0, 0.3)}


def model_names(n: int) -> list[str]:
    width = max(2, len(str(n - 1)))
    return [f"m{i:0{width}d}" for i in range(n)]


class VoterPopulation:
    """Hidden truth + voters; turns a match (K model names) into an `Outcome`."""

    def __init__(self, config: VoterConfig | None = None) -> None:
        self.config = c = config or VoterConfig()
        rng = np.random.default_rng([c.seed, 0])
        self.names = model_names(c.n_models)
        # position[i] = true place of model i (0 = best), shuffled so names carry no information
        self.position = rng.permutation(c.n_models)
        self._index = {m: i for i, m in enumerate(self.names)}
        self.kinds = self._assign_kinds(rng)
        self.bias = rng.normal(0.0, c.bias_sd, size=(c.n_voters, c.n_models)) if c.bias_sd else None
        self._stream = np.random.default_rng([c.seed, 1])

    def _assign_kinds(self, rng: np.random.Generator) -> np.ndarray:
        c = self.config
        n_adv = int(round(c.adversarial_share * c.n_voters))
        n_care = min(int(round(c.careless_share * c.n_voters)), c.n_voters - n_adv)
        kinds = np.array(["honest"] * c.n_voters, dtype=object)
        kinds[:n_adv] = "adversarial"
        kinds[n_adv:n_adv + n_care] = "careless"
        return kinds[rng.permutation(c.n_voters)]

    # --- the truth ---------------------------------------------------------------------------
    @property
    def n_models(self) -> int:
        return len(self.names)

    def true_skill(self) -> np.ndarray:
        return (self.n_models - 1 - self.position).astype(float)

    def true_ranking(self) -> list[str]:
        return [self.names[i] for i in np.argsort(self.position)]

    def true_positions(self, names: Sequence[str]) -> np.ndarray:
        return self.position[self._indices(names)]

    def add_model(self, name: str, true_position: int, seed: int = 0) -> None:
        """Insert a new model at `true_position` (0 = best); models at or below it move down."""
        if name in self._index:
            raise VoteError(f"Model {name!r} already exists in the voter population.")
        if not 0 <= true_position <= self.n_models:
            raise VoteError(f"true_position must be in [0, {self.n_models}], got {true_position}.")
        self.position = np.append(np.where(self.position >= true_position, self.position + 1,
                                           self.position), true_position)
        self._index[name] = len(self.names)
        self.names.append(name)
        if self.bias is not None:
            col = np.random.default_rng([self.config.seed, 2, seed]).normal(
                0.0, self.config.bias_sd, size=(self.config.n_voters, 1))
            self.bias = np.hstack([self.bias, col])

    # --- votes -------------------------------------------------------------------------------
    def _indices(self, names: Sequence[str]) -> np.ndarray:
        try:
            return np.array([self._index[m] for m in names])
        except KeyError as e:
            raise UnknownNameError(f"Voters know no model {e.args[0]!r}. "
                                   f"{did_you_mean(str(e.args[0]), self.names)}") from None

    def vote(self, models: Sequence[str], rng: np.random.Generator | None = None) -> Outcome:
        """One vote on the shown models, from a randomly drawn voter."""
        rng = self._stream if rng is None else rng
        idx = self._indices(models)
        if len(idx) < 2 or len(set(idx.tolist())) != len(idx):
            raise VoteError(f"A vote needs ≥ 2 distinct models, got {list(models)}.")
        voter = int(rng.integers(self.config.n_voters))
        order = self._perceived_order(idx, voter, rng)  # positions into `models`, best first
        ranks = np.empty(len(idx), dtype=int)
        ranks[order] = np.arange(len(idx))
        if self.config.vote_mode == "best":
            return Outcome.best_of(len(idx), int(order[0]))
        return Outcome.full_ranking(ranks.tolist())

    def _perceived_order(self, idx: np.ndarray, voter: int, rng: np.random.Generator) -> np.ndarray:
        c = self.config
        kind = self.kinds[voter]
        k = len(idx)
        if kind == "careless":
            return rng.permutation(k)
        perceived = self.true_skill()[idx]
        if self.bias is not None:
            perceived = perceived + self.bias[voter, idx]
        if c.noise == "thurstone" and c.thurstone_sd > 0:
            perceived = perceived + rng.normal(0.0, c.thurstone_sd, size=k)
        order = np.argsort(-perceived, kind="stable")
        if c.noise == "flip" and c.flip_prob > 0 and rng.random() < c.flip_prob:
            j = int(rng.integers(k - 1))  # K = 2: j = 0, the result flips
            order[[j, j + 1]] = order[[j + 1, j]]
        if kind == "adversarial":
            order = order[::-1].copy()
        return order

    def vote_batch(self, matches: Sequence[Sequence[str]], batch_index: int) -> list[Outcome]:
        """Votes on many matches from the (seed, batch_index) stream: reproducible per batch."""
        rng = np.random.default_rng([self.config.seed, 3, int(batch_index)])
        return [self.vote(m, rng) for m in matches]
