"""The ranker interface shared by K-Sort and its baselines, votes, and the `RANKERS` registry.

Paper: "K-Sort Arena: Efficient and Reliable Benchmarking for Generative Models via K-wise Human
Preferences" (Li et al., arXiv 2408.14468, CVPR 2025).

What follows the paper: a vote is a judgement of K models shown together, in one of two modes:
"best" (one winner, or a declared tie: K−1 pairwise constraints, the losers unordered) and
"rank" (a full ranking with ties allowed: K(K−1)/2 constraints).

Our own design [inferred]: the `Ranker` protocol, the `Outcome` value type, `BaseRanker`'s
bookkeeping (pairwise meeting counts, validation before any state changes so that a bad vote
leaves the leaderboard untouched), and random matchmaking as the default for every baseline.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from methods.errors import EvfarmUserError, UnknownNameError, did_you_mean
from methods.registry import Registry, config_from_dict

VOTE_MODES = ("best", "rank")


class VoteError(EvfarmUserError, ValueError):
    """A vote (or a match request) that cannot be applied; the leaderboard is left unchanged."""


@dataclass(frozen=True)
class Outcome:
    """One judge's verdict on K models shown together.

    `ranks[i]` is the place of the i-th model of the match (0 = best; equal values = tie).
    In "best" mode only the winner is distinguished: ranks are 0 for the winner and 1 for the
    rest, who stay *unordered* (no constraint among them); all-equal ranks declare a tie.
    """

    ranks: tuple[int, ...]
    mode: str = "rank"

    def __post_init__(self) -> None:
        if self.mode not in VOTE_MODES:
            raise VoteError(f"Vote mode must be one of {VOTE_MODES}, got {self.mode!r}.")
        if len(self.ranks) < 2:
            raise VoteError(f"A vote needs at least 2 ranks, got {list(self.ranks)}.")
        if any(int(r) != r or r < 0 for r in self.ranks):
            raise VoteError(f"Ranks must be non-negative integers (0 = best), got {list(self.ranks)}.")
        if self.mode == "best":
            winners = sum(1 for r in self.ranks if r == 0)
            tie = len(set(self.ranks)) == 1
            if not tie and (winners != 1 or set(self.ranks) != {0, 1}):
                raise VoteError(
                    f"A 'best' vote has exactly one 0 (the winner) and 1 elsewhere, or all-equal "
                    f"ranks for a tie; got {list(self.ranks)}. Use Outcome.best_of(k, winner)."
                )

    @classmethod
    def best_of(cls, k: int, winner: int | None) -> Outcome:
        """Best-of-K: `winner` is the index of the chosen model, `None` declares a tie."""
        if winner is None:
            return cls(tuple([0] * k), "best")
        if not 0 <= winner < k:
            raise VoteError(f"Winner index must be in [0, {k}), got {winner}.")
        return cls(tuple(0 if i == winner else 1 for i in range(k)), "best")

    @classmethod
    def full_ranking(cls, ranks: Sequence[int]) -> Outcome:
        return cls(tuple(int(r) for r in ranks), "rank")

    @property
    def k(self) -> int:
        return len(self.ranks)

    def pairs(self) -> list[tuple[int, int, float]]:
        """Pairwise constraints (i, j, s): s = 1 if i beat j, 0.5 if they tied.

        "best": winner beats every other model (K−1 pairs), or all pairs tie when a tie was
        declared. "rank": every pair, a tie where ranks are equal.
        """
        out: list[tuple[int, int, float]] = []
        r = self.ranks
        if self.mode == "best" and len(set(r)) > 1:
            w = r.index(0)
            return [(w, j, 1.0) for j in range(self.k) if j != w]
        for i in range(self.k):
            for j in range(i + 1, self.k):
                if r[i] < r[j]:
                    out.append((i, j, 1.0))
                elif r[j] < r[i]:
                    out.append((j, i, 1.0))
                else:
                    out.append((i, j, 0.5))
        return out

    def constraint_matrix(self) -> np.ndarray:
        """D[i, j] = +1 if i beat j, −1 if j beat i, 0 for no constraint or a tie."""
        d = np.zeros((self.k, self.k))
        for i, j, s in self.pairs():
            if s == 1.0:
                d[i, j], d[j, i] = 1.0, -1.0
        return d


@runtime_checkable
class Ranker(Protocol):
    """What the arena runner, actors and sweeps need from any ranking method."""

    def add_model(self, name: str) -> None: ...

    def update(self, models_in_match: Sequence[str], outcome: Outcome) -> None: ...

    def scores(self) -> dict[str, float]: ...

    def ranking(self) -> list[str]: ...

    def propose_match(self, k: int, rng: np.random.Generator) -> tuple[str, ...]: ...


class BaseRanker:
    """Model bookkeeping, validation and random matchmaking shared by every ranker.

    Subclasses implement `_add(index)`, `_update(indices, outcome)` and `_scores() -> ndarray`.
    """

    name = "base"
    config_cls: type | None = None  # each registered ranker sets its frozen config class

    def __init__(self, models: Iterable[str] = ()) -> None:
        self._names: list[str] = []
        self._index: dict[str, int] = {}
        self._meet = np.zeros((0, 0), dtype=np.int64)  # n_iq: times i and q were in one match
        self.n_votes = 0
        for m in models:
            self.add_model(m)

    @classmethod
    def create(cls, **config: Any) -> BaseRanker:
        """A fresh ranker without models, its config built from `config` (unknown keys refused)."""
        if cls.config_cls is None:
            return cls()
        return cls(config=config_from_dict(cls.config_cls, config))  # type: ignore[call-arg]

    # --- bookkeeping -------------------------------------------------------------------------
    @property
    def models(self) -> list[str]:
        return list(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def add_model(self, name: str) -> None:
        if not isinstance(name, str) or not name:
            raise VoteError(f"A model name must be a non-empty string, got {name!r}.")
        if name in self._index:
            raise VoteError(f"Model {name!r} is already on the leaderboard; pick a new name.")
        n = len(self._names)
        meet = np.zeros((n + 1, n + 1), dtype=np.int64)
        meet[:n, :n] = self._meet
        self._add(n)  # subclass state first: if it fails, nothing is half-added
        self._meet = meet
        self._index[name] = n
        self._names.append(name)

    def comparisons(self) -> dict[str, int]:
        """Total comparisons per model (Σ_q n_iq), the quantity K-Sort's pivot minimises."""
        tot = self._meet.sum(axis=1)
        return {m: int(tot[i]) for i, m in enumerate(self._names)}

    def meetings(self) -> np.ndarray:
        return self._meet.copy()

    # --- voting ------------------------------------------------------------------------------
    def indices(self, models_in_match: Sequence[str]) -> list[int]:
        """Validate a match and map it to indices; raises before any state is touched."""
        models = list(models_in_match)
        unknown = [m for m in models if m not in self._index]
        if unknown:
            raise UnknownNameError(
                f"The vote names model(s) {unknown} that are not on the leaderboard. "
                f"{did_you_mean(str(unknown[0]), self._names)} Add them with add_model() first."
            )
        if len(set(models)) != len(models):
            raise VoteError(f"A match must show distinct models, got duplicates in {models}.")
        return [self._index[m] for m in models]

    def update(self, models_in_match: Sequence[str], outcome: Outcome) -> None:
        if not isinstance(outcome, Outcome):
            raise VoteError(f"Expected an Outcome, got {type(outcome).__name__}; build one with "
                            f"Outcome.best_of() or Outcome.full_ranking().")
        idx = self.indices(models_in_match)
        if len(idx) != outcome.k:
            raise VoteError(f"The vote ranks {outcome.k} models but the match shows {len(idx)} "
                            f"({list(models_in_match)}); give one rank per model.")
        self._update(idx, outcome)
        ii = np.asarray(idx)
        self._meet[np.ix_(ii, ii)] += 1
        self._meet[ii, ii] -= 1  # a model never meets itself
        self.n_votes += 1

    # --- reading -----------------------------------------------------------------------------
    def scores(self) -> dict[str, float]:
        s = self._scores()
        return {m: float(s[i]) for i, m in enumerate(self._names)}

    def score_array(self) -> np.ndarray:
        """Scores in insertion order (fast path for simulations)."""
        return np.asarray(self._scores(), dtype=float)

    def ranking(self) -> list[str]:
        """Best first; ties keep insertion order (a stable sort), so results are deterministic."""
        order = np.argsort(-self.score_array(), kind="stable")
        return [self._names[i] for i in order]

    # --- matchmaking -------------------------------------------------------------------------
    def check_k(self, k: int) -> None:
        if not isinstance(k, (int, np.integer)) or k < 2:
            raise VoteError(f"A match shows K ≥ 2 models, got K={k!r}.")
        if k > len(self._names):
            raise VoteError(f"K={k} is larger than the pool of {len(self._names)} models; "
                            f"lower K or add models.")

    def propose_match(self, k: int, rng: np.random.Generator) -> tuple[str, ...]:
        """Random matchmaking (Chatbot Arena's baseline): K distinct models, uniformly."""
        return self.propose_random(k, rng)

    def propose_random(self, k: int, rng: np.random.Generator) -> tuple[str, ...]:
        self.check_k(k)
        pick = rng.choice(len(self._names), size=k, replace=False)
        return tuple(self._names[i] for i in pick)

    # --- subclass hooks ----------------------------------------------------------------------
    def _add(self, index: int) -> None:
        raise NotImplementedError(f"{type(self).__name__} must implement _add(index).")

    def _update(self, idx: list[int], outcome: Outcome) -> None:
        raise NotImplementedError(f"{type(self).__name__} must implement _update(idx, outcome).")

    def _scores(self) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__} must implement _scores().")

    def state(self) -> dict[str, Any]:
        """A plain-dict snapshot (for result rows): scores and comparison counts per model."""
        return {"scores": self.scores(), "comparisons": self.comparisons()}


RANKERS: Registry[type[BaseRanker]] = Registry("ranker", BaseRanker, classes=True, home="methods.ranking")
register_ranker = RANKERS.register
