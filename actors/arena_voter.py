"""Simulated arena voters as Ray actors, and the one owner of an arena's state.

Paper: "K-Sort Arena: Efficient and Reliable Benchmarking for Generative Models via K-wise Human
Preferences" (Li et al., arXiv 2408.14468), §4: a ranker proposes matches, judges vote, the
leaderboard is updated and scored (rank MSE) against hidden true ranks. The maths lives in
`methods/ksort.py`, `methods/ranking/` and `sims/` (voters, `rank_mse`); nothing here is maths.

Our own design [inferred]:
- `ArenaVoter` (a `@ray.remote` class) holds voter populations (`sims.voters.VoterPopulation`),
  built on first use and cached by their config, and turns matches into votes. It never sees a
  ranker: it returns plain dicts ``{"ranks": [...], "mode": ...}``. Voter actors form a *shared
  pool per run* (named actors, `voter_pool`), so several arena owners use the same voters.
  The pool takes its actors' `.options(...)` as a plain dict: the caller (a sweep, through
  `cluster.resources.actor_options`) resolves the named profile, so actors never import cluster.
- Vote number v is drawn from the stream (voter seed, 3, v) (`vote_batch([match], v)`), so a vote
  depends only on the truth seed and its index: which voter actor serves it, how a batch is split
  across actors, and a retry after a voter actor died all give the same vote.
- `ArenaOwner` is the single writer of the arena state (DESIGN house rule 4): it holds the ranker,
  proposes a batch of matches, splits it across the voter actors, applies the votes one by one
  (scoring the MSE after each vote, so convergence is counted per vote), and returns result rows
  for the sink: one "vote_batch" row and one "leaderboard" row per batch. Its state travels
  between trial chunks as a checkpoint (`snapshot`/`restore`).
- Matches of a batch are all proposed from the same (pre-batch) state. For state-dependent
  matchmaking (K-Sort's pivot + UCB) that staleness matters, so those sweeps use 1 vote per batch;
  for random matchmaking batching changes nothing (see sweeps/arena_convergence.py).
"""
from __future__ import annotations

import copy
import json
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import ray

from methods.ranking.base import BaseRanker, Outcome
from sims.arena import estimated_positions, rank_mse
from sims.voters import VoterConfig, VoterPopulation


@ray.remote
class ArenaVoter:
    """A slot of simulated voters: voter config + matches in, plain vote dicts out."""

    def __init__(self) -> None:
        self._populations: dict[str, VoterPopulation] = {}
        self.votes_cast = 0

    def _population(self, config: dict[str, Any]) -> VoterPopulation:
        key = json.dumps(config, sort_keys=True)
        if key not in self._populations:
            if len(self._populations) >= 8:  # a few concurrent trials; drop the oldest truth
                self._populations.pop(next(iter(self._populations)))
            self._populations[key] = VoterPopulation(VoterConfig(**config))
        return self._populations[key]

    def truth(self, config: dict[str, Any]) -> dict[str, list]:
        """Model names and their true positions (0 = best); used only to score a leaderboard."""
        pop = self._population(config)
        return {"names": list(pop.names), "positions": pop.position.tolist()}

    def votes(self, config: dict[str, Any], matches: list[list[str]], first_vote: int) -> list[dict]:
        pop = self._population(config)
        out = [pop.vote_batch([m], first_vote + i)[0] for i, m in enumerate(matches)]
        self.votes_cast += len(out)
        return [{"ranks": list(o.ranks), "mode": o.mode} for o in out]

    def info(self) -> dict[str, Any]:
        """What this actor holds: voter populations and a vote count — never a ranker."""
        return {"pid": os.getpid(), "votes_cast": self.votes_cast,
                "populations": len(self._populations), "attributes": sorted(vars(self))}


class VoterPool:
    """The run's shared voter actors (named), created by whichever owner asks first.

    `refresh()` replaces a voter actor that died (for example with the evaluator that created
    it); because votes depend only on their index, a retried batch is the batch that would have
    been.
    """

    def __init__(self, pool_id: str, n: int, options: Mapping[str, Any]) -> None:
        self.pool_id, self.n, self.options = pool_id, n, dict(options)
        self.handles: list[Any] = []
        self.refresh()

    def refresh(self) -> None:
        """Replace the dead voter actors, keeping live handles: dropping the handle of the process
        that created an actor stops that actor (measured: a blanket refresh killed healthy ones)."""
        self.handles = [h if h is not None and _alive(h) else
                        ArenaVoter.options(name=f"evfarm-arena-voter-{self.pool_id}-{i}",
                                           get_if_exists=True, **self.options).remote()
                        for i, h in enumerate(self.handles or [None] * self.n)]

    def close(self) -> None:
        """Stop the voter actors (a sweep's evaluators take theirs down with them)."""
        for handle in self.handles:
            ray.kill(handle, no_restart=True)
        self.handles = []


def _alive(handle: Any, timeout: float = 60.0) -> bool:
    try:
        ray.get(handle.info.remote(), timeout=timeout)
    except ray.exceptions.RayActorError:
        return False
    except ray.exceptions.GetTimeoutError:
        pass  # still starting (waiting for CPUs): alive
    return True


class ArenaOwner:
    """The one owner of an arena: ranker, matchmaking rng, vote counters, convergence tracking."""

    def __init__(self, ranker: BaseRanker, k: int, voter_config: dict[str, Any],
                 true_positions: np.ndarray, rng: np.random.Generator, *, horizon: int,
                 batch_votes: int = 1, window: int = 200, eval_every: int = 1, top_k: int = 5,
                 board_every: int = 100) -> None:
        ranker.check_k(k)
        self.ranker, self.k, self.voter_config, self.rng = ranker, k, dict(voter_config), rng
        self.true_positions = np.asarray(true_positions)
        self.horizon, self.batch_votes = horizon, batch_votes
        self.window, self.eval_every = window, eval_every
        self.top_k, self.board_every = top_k, board_every
        self.n_votes = self.n_batches = 0
        self.run_start: int | None = None
        self.converged_at: int | None = None
        self.last_mse: float | None = None

    # --- one batch ---------------------------------------------------------------------------
    def _collect(self, voters: VoterPool, matches: list[tuple[str, ...]], timeout: float,
                 retries: int = 2) -> list[dict]:
        """Split the batch across the voter actors; vote indices keep the draws independent."""
        n = min(voters.n, len(matches))
        bounds = np.linspace(0, len(matches), n + 1).astype(int)
        attempt = 0
        while True:
            refs = [voters.handles[(self.n_batches + j) % voters.n].votes.remote(
                        self.voter_config, [list(m) for m in matches[a:b]], self.n_votes + a)
                    for j, (a, b) in enumerate(zip(bounds[:-1], bounds[1:], strict=True))]
            try:
                return [v for part in ray.get(refs, timeout=timeout) for v in part]
            except ray.exceptions.GetTimeoutError:
                raise TimeoutError(f"Voter actors gave no votes within {timeout:.0f} s: the cluster "
                                   f"may lack CPUs for their options {voters.options}; lower "
                                   f"study.actors or voter_actors.") from None
            except ray.exceptions.RayActorError:
                if attempt == retries:
                    raise
                attempt += 1
                voters.refresh()  # same vote indices: the retried votes are the same votes

    def step(self, voters: VoterPool, until: int, timeout: float = 300.0) -> list[dict]:
        """Propose, vote, apply one batch (never past `until` votes); returns its two rows."""
        size = min(self.batch_votes, until - self.n_votes)
        matches = [self.ranker.propose_match(self.k, self.rng) for _ in range(size)]
        votes = self._collect(voters, matches, timeout)
        applied = 0
        for match, vote in zip(matches, votes, strict=True):
            self.ranker.update(match, Outcome(tuple(vote["ranks"]), vote["mode"]))
            self.n_votes += 1
            applied += 1
            if self.n_votes % self.eval_every == 0 or self.n_votes == self.horizon:
                self._score()
            if self.converged_at is not None:
                break  # the window is complete: later votes of the batch are not applied
        self.n_batches += 1
        return self._rows(matches[:applied], votes[:applied])

    def _score(self) -> None:
        self.last_mse = rank_mse(self.ranker.score_array(), self.true_positions)
        if self.last_mse != 0:
            self.run_start = None
            return
        self.run_start = self.n_votes if self.run_start is None else self.run_start
        if self.n_votes - self.run_start + 1 >= self.window:
            self.converged_at = self.run_start

    def _rows(self, matches: list[tuple[str, ...]], votes: list[dict]) -> list[dict]:
        b = self.n_batches - 1
        est = estimated_positions(self.ranker.score_array())
        k = min(self.top_k, est.size)
        top = float(np.mean(est[self.true_positions < k] < k))  # share of the true top-k in ours
        board = {}
        if self.n_votes % self.board_every < len(votes) or self.done:
            names, scores, order = self.ranker.models, self.ranker.score_array(), np.argsort(est)
            board = {"ranking": json.dumps([names[i] for i in order]),  # best first
                     "scores": json.dumps([round(float(scores[i]), 4) for i in order])}
        vote_row = {"row_kind": "vote_batch", "step": b, "votes_total": self.n_votes,
                    "batch_size": len(votes), "matches": json.dumps([list(m) for m in matches]),
                    "ranks": json.dumps([v["ranks"] for v in votes])}
        board_row = {"row_kind": "leaderboard", "step": b, "votes_total": self.n_votes,
                     "rank_mse": self.last_mse, "topk_overlap": top, **board}
        return [vote_row, board_row]

    @property
    def done(self) -> bool:
        return self.converged_at is not None or self.n_votes >= self.horizon

    def run(self, voters: VoterPool, until: int | None = None) -> list[dict]:
        """Batches until converged, the horizon, or `until` votes (a chunk's end); their rows."""
        until = self.horizon if until is None else min(until, self.horizon)
        rows: list[dict] = []
        while not self.done and self.n_votes < until:
            rows += self.step(voters, until)
        return rows

    # --- checkpoints between chunks ----------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        return dict(vars(self))

    @classmethod
    def restore(cls, snapshot: dict[str, Any]) -> ArenaOwner:
        owner = cls.__new__(cls)
        # a deep copy: arrays that came through Ray's object store are read-only views
        owner.__dict__.update(copy.deepcopy(snapshot))
        return owner
