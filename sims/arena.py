"""Pure experiment runner for K-Sort Arena's convergence protocol and its add-a-model experiment.

Paper: "K-Sort Arena: Efficient and Reliable Benchmarking for Generative Models via K-wise Human
Preferences" (Li et al., arXiv 2408.14468), §4 and Figs. 3–6.

Follows the paper: N = 50 simulated models ranked from scratch; outcomes decided by hidden
shuffled true ranks, with 0 % or 5 % inconsistency noise; the metric is the MSE between estimated
and true rank positions, (1/N)·Σ_i (rank_est(i) − rank_true(i))²; "converged" = the comparisons
after which the MSE is consistently zero. Fig. 6: add a model to a converged ranking of 50, it
starts at rank 51 with true rank 31.

Our own design [inferred]:
- "Consistently zero" = zero at every evaluated vote of a window of `window` votes (the paper
  gives no window; the reference brief used 200). `votes_to_converge` is the number of votes
  applied when that zero run started (the first vote after which the MSE stays zero), `None`
  when no full window fits in `max_votes`. A run stops once the window is complete.
- One vote = one judged match of K models (K = 2 for the pairwise baselines).
- Estimated ranks come from `ranker.score_array()` with a stable sort (ties keep insertion order).
- Seeds: voters from `seed`, matchmaking from a separate stream (seed, 7), so changing the
  matchmaker never changes the truth.
- Looser criteria (`first_stable_below`): MSE ≤ a threshold for `window` votes, read from the same
  curve. A run stops when the strict (zero) window completes; any looser window has completed by
  then, so the looser counts need no longer run.
- Pairwise constraints per vote (`constraints_per_vote`): K(K−1)/2 for a rank vote, K−1 for a
  best-of-K vote; the simulated voters never tie, so every vote carries exactly that many.
- `diagnostics=True` also records which models were ever directly constrained against their true
  neighbour, and a "capped" curve: the rank MSE with positions clamped at N−(K−1), i.e. the bottom
  K−1 true models counted as one block. A best-of-K vote never orders two models that both lose,
  and the bottom K−1 models of the board can never win a K-vote (a K-group holds at most K−2
  models below the second-to-last), so best mode has no direct evidence among them; the capped
  curve measures convergence on what the votes can order.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from methods.errors import ConfigError
from methods.ksort import KSortConfig, propose_ucb
from methods.ranking import make_ranker
from methods.ranking.base import BaseRanker
from sims.voters import VoterConfig, VoterPopulation


def estimated_positions(scores: np.ndarray) -> np.ndarray:
    """pos[i] = place of model i in the leaderboard (0 = best)."""
    order = np.argsort(-scores, kind="stable")
    pos = np.empty(scores.size, dtype=np.int64)
    pos[order] = np.arange(scores.size)
    return pos


def rank_mse(scores: np.ndarray, true_position: np.ndarray) -> float:
    """The paper's metric: mean squared difference of estimated and true rank positions."""
    diff = estimated_positions(np.asarray(scores, dtype=float)) - np.asarray(true_position)
    return float(np.mean(diff * diff))


def capped_mse(scores: np.ndarray, true_position: np.ndarray, cap: int) -> float:
    """Rank MSE with every position clamped at `cap` (models at or below `cap` are one block)."""
    est = np.minimum(estimated_positions(np.asarray(scores, dtype=float)), cap)
    diff = est - np.minimum(np.asarray(true_position), cap)
    return float(np.mean(diff * diff))


def constraints_per_vote(k: int, vote_mode: str = "rank") -> int:
    """Pairwise constraints in one tie-free K vote: K(K−1)/2 ("rank") or K−1 ("best")."""
    if vote_mode not in ("rank", "best") or k < 2:
        raise ConfigError(f"constraints_per_vote needs K ≥ 2 and vote_mode 'rank' or 'best', got "
                          f"K={k!r}, vote_mode={vote_mode!r}.")
    return k * (k - 1) // 2 if vote_mode == "rank" else k - 1


def first_stable_zero(mse: np.ndarray, votes: np.ndarray, window: int) -> int | None:
    """First vote count v with MSE == 0 at every evaluation in [v, v + window); None if none."""
    return first_stable_below(mse, votes, window, 0.0)


def first_stable_below(mse: np.ndarray, votes: np.ndarray, window: int, threshold: float = 0.0
                       ) -> int | None:
    """First vote count v with MSE ≤ `threshold` at every evaluation in [v, v + window); else None."""
    run_start = None
    for k in range(len(mse)):
        if mse[k] > threshold:
            run_start = None
            continue
        run_start = k if run_start is None else run_start
        if votes[k] - votes[run_start] + 1 >= window:
            return int(votes[run_start])
    return None


def _voters(n_models: int, noise: float, seed: int, voter_config: VoterConfig | None,
            vote_mode: str) -> VoterPopulation:
    if voter_config is None:
        voter_config = VoterConfig(n_models=n_models, noise="flip", flip_prob=noise,
                                   vote_mode=vote_mode, seed=seed)
    return VoterPopulation(voter_config)


MATCHMAKERS = ("native", "ucb", "random")


def first_touch(mse: np.ndarray, votes: np.ndarray, threshold: float = 0.0) -> int | None:
    """First evaluated vote with MSE ≤ `threshold` (the loosest reading of "converged")."""
    hit = np.flatnonzero(np.asarray(mse) <= threshold)
    return int(np.asarray(votes)[hit[0]]) if hit.size else None


def _play(ranker: BaseRanker, voters: VoterPopulation, k: int, rng: np.random.Generator,
          matchmaker: str = "native") -> tuple[tuple[str, ...], Any]:
    if matchmaker == "ucb":
        match = propose_ucb(ranker, k, rng)
    elif matchmaker == "random":
        match = ranker.propose_random(k, rng)
    else:
        match = ranker.propose_match(k, rng)
    outcome = voters.vote(match)
    ranker.update(match, outcome)
    return match, outcome


class _Diagnostics:
    """Direct constraints between true neighbours and the capped MSE curve (see the docstring)."""

    def __init__(self, ranker: BaseRanker, voters: VoterPopulation, k: int) -> None:
        self.true_pos = voters.true_positions(ranker.models)
        self.n = len(self.true_pos)
        self.cap = self.n - (k - 1)
        self.direct = np.zeros((self.n, self.n), dtype=np.int64)  # constraint counts, by true position
        self.capped: list[float] = []
        self._index = {m: i for i, m in enumerate(ranker.models)}

    def observe(self, match: tuple[str, ...], outcome: Any) -> None:
        pos = [int(self.true_pos[self._index[m]]) for m in match]
        for i, j, s in outcome.pairs():
            if s == 1.0:
                a, b = pos[i], pos[j]
                self.direct[a, b] += 1
                self.direct[b, a] += 1

    def evaluate(self, scores: np.ndarray) -> None:
        self.capped.append(capped_mse(scores, self.true_pos, self.cap))

    def report(self, scores: np.ndarray, votes: list[int], window: int) -> dict[str, Any]:
        never = [p for p in range(self.n - 1) if not self.direct[p, p + 1]]
        est = estimated_positions(scores)
        by_true = np.empty(self.n, dtype=np.int64)
        by_true[self.true_pos] = est  # by_true[p] = estimated place of the model truly at p
        swapped = [p for p in range(self.n - 1) if by_true[p] > by_true[p + 1]]
        err = (est - self.true_pos) ** 2.0
        total = float(err.sum())
        bottom = float(err[self.true_pos >= self.cap].sum())
        return {"cap": self.cap, "capped_curve": self.capped,
                "capped_votes_to_converge": first_stable_zero(np.array(self.capped),
                                                              np.array(votes), window),
                "final_capped_mse": self.capped[-1] if self.capped else None,
                "adjacent_pairs_compared": self.n - 1 - len(never),
                "adjacent_pairs_never": never,
                # true neighbours (p, p+1) left in the wrong order, and how often each was compared
                "swapped_neighbours": swapped,
                "swapped_neighbours_direct": [int(self.direct[p, p + 1]) for p in swapped],
                "neighbour_direct_median": float(np.median(np.diag(self.direct, 1))),
                "bottom_error_share": bottom / total if total else 0.0}


def _converge_loop(ranker: BaseRanker, voters: VoterPopulation, k: int, rng: np.random.Generator,
                   max_votes: int, window: int, eval_every: int, matchmaker: str = "native",
                   diag: _Diagnostics | None = None) -> tuple[list[int], list[float], int | None]:
    """Vote until the MSE has been zero for `window` votes or `max_votes` is reached."""
    true_pos = voters.true_positions(ranker.models)
    votes: list[int] = []
    curve: list[float] = []
    run_start: int | None = None
    for v in range(1, max_votes + 1):
        match, outcome = _play(ranker, voters, k, rng, matchmaker)
        if diag is not None:
            diag.observe(match, outcome)
        if v % eval_every and v != max_votes:
            continue
        scores = ranker.score_array()
        mse = rank_mse(scores, true_pos)
        if diag is not None:
            diag.evaluate(scores)
        votes.append(v)
        curve.append(mse)
        if mse != 0:
            run_start = None
            continue
        run_start = v if run_start is None else run_start
        if v - run_start + 1 >= window:
            return votes, curve, run_start
    return votes, curve, None


def run_convergence(ranker_name: str, K: int, noise: float, seed: int, max_votes: int,
                    window: int = 200, *, n_models: int = 50, config: Any = None,
                    voter_config: VoterConfig | None = None, vote_mode: str = "rank",
                    eval_every: int = 1, matchmaker: str = "native",
                    diagnostics: bool = False) -> dict[str, Any]:
    """The paper's convergence protocol for one ranker.

    `matchmaker`: "native" = the ranker's own (K-Sort: pivot + UCB; baselines: random), "ucb" =
    K-Sort's matchmaker with default settings over this ranker's scores, "random". With
    `eval_every` > 1 the MSE is read every `eval_every` votes (a coarser convergence count, for
    rankers whose `scores()` refits, such as Bradley–Terry).

    Returns dict(curve=[MSE after each evaluated vote], votes=[vote counts of the curve],
    votes_to_converge=int | None, final_mse, n_votes, vote_mode, ...); a K-Sort ranker adds
    negative_variance_votes, floored_votes (see methods/ksort.py) and final_mse_mu (the board
    by μ alone), `diagnostics=True` the
    fields of the capped curve and neighbour coverage (module docstring).
    """
    if max_votes < 1 or window < 1 or eval_every < 1:
        raise ConfigError(f"max_votes, window and eval_every must be ≥ 1, got {max_votes}, "
                          f"{window}, {eval_every}.")
    if matchmaker not in MATCHMAKERS:
        raise ConfigError(f"matchmaker must be one of {MATCHMAKERS}, got {matchmaker!r}.")
    if not 0.0 <= noise <= 1.0:
        raise ConfigError(f"noise is a flip probability in [0, 1], got {noise!r}.")
    voters = _voters(n_models, noise, seed, voter_config, vote_mode)
    ranker = make_ranker(ranker_name, voters.names, config)
    ranker.check_k(K)
    rng = np.random.default_rng([seed, 7])
    diag = _Diagnostics(ranker, voters, K) if diagnostics else None
    votes, curve, conv = _converge_loop(ranker, voters, K, rng, max_votes, window, eval_every,
                                        matchmaker, diag)
    out = {"ranker": ranker_name, "K": K, "noise": noise, "seed": seed, "window": window,
           "matchmaker": matchmaker, "eval_every": eval_every,
           "vote_mode": voters.config.vote_mode,
           "curve": curve, "votes": votes, "votes_to_converge": conv,
           "final_mse": curve[-1] if curve else None, "n_votes": votes[-1] if votes else 0}
    for key in ("negative_variance_votes", "floored_votes"):
        if hasattr(ranker, key):
            out[key] = int(getattr(ranker, key))
    if hasattr(ranker, "mu"):  # K-Sort: the board by μ alone (η = 0), to tell μ errors from σ's
        out["final_mse_mu"] = rank_mse(np.asarray(ranker.mu), voters.true_positions(ranker.models))
    if diag is not None:
        out.update(diag.report(ranker.score_array(), votes, window))
    return out


def run_add_model(ranker_name: str = "ksort", K: int = 4, seed: int = 0, *, n_models: int = 50,
                  new_true_rank: int = 31, pivot: str = "fewest", opponents: str = "ucb",
                  noise: float = 0.0, warmup_max_votes: int = 3000, window: int = 200,
                  max_new_votes: int = 300, settle_window: int = 20,
                  config: Any = None) -> dict[str, Any]:
    """Fig. 6: converge `n_models`, add one whose true rank is `new_true_rank` (1-based), keep voting.

    `pivot`/`opponents` override K-Sort's matchmaking ("fewest"|"random", "ucb"|"random"); other
    rankers always use random matches. `votes_to_settle` = the first vote (after the addition)
    from which the new model sits at its true rank for `settle_window` consecutive votes.
    """
    if not 1 <= new_true_rank <= n_models + 1:
        raise ConfigError(f"new_true_rank must be in [1, {n_models + 1}], got {new_true_rank}.")
    voters = _voters(n_models, noise, seed, None, "rank")
    if ranker_name == "ksort":
        config = replace(config or KSortConfig(), pivot=pivot, opponents=opponents)
    # Warm up with the default matchmaker, then switch: the experiment is about the newcomer.
    warm_config = replace(config, pivot="fewest", opponents="ucb") if ranker_name == "ksort" else config
    ranker = make_ranker(ranker_name, voters.names, warm_config)
    rng = np.random.default_rng([seed, 7])
    _, _, conv = _converge_loop(ranker, voters, K, rng, warmup_max_votes, window, 1)
    if ranker_name == "ksort":
        ranker.config = config
    new = "new"
    voters.add_model(new, new_true_rank - 1, seed)
    ranker.add_model(new)
    true_pos = voters.true_positions(ranker.models)
    new_rank: list[int] = [int(estimated_positions(ranker.score_array())[-1]) + 1]
    mse: list[float] = [rank_mse(ranker.score_array(), true_pos)]
    settle, run_start = None, None
    for v in range(1, max_new_votes + 1):
        _play(ranker, voters, K, rng)
        s = ranker.score_array()
        new_rank.append(int(estimated_positions(s)[-1]) + 1)
        mse.append(rank_mse(s, true_pos))
        if new_rank[-1] == new_true_rank:
            run_start = v if run_start is None else run_start
            if v - run_start + 1 >= settle_window:
                settle = run_start
                break
        else:
            run_start = None
    return {"ranker": ranker_name, "K": K, "seed": seed, "pivot": pivot, "opponents": opponents,
            "warmup_votes_to_converge": conv, "new_rank": new_rank, "mse": mse,
            "votes_to_settle": settle, "start_rank": new_rank[0], "true_rank": new_true_rank}
