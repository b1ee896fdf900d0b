"""The arena-convergence task: one trial = one (or, in Optuna mode, a few) K-Sort Arena convergence runs.

A task for the generic evaluator (`actors/task.py`), run by `sweeps/arena_convergence.py` (paper,
defaults and measured choices are cited there): built once per evaluator actor, it joins the run's
shared voter actors (`actors.arena_voter.VoterPool`); every trial builds fresh `ArenaOwner`s (or
restores them from the checkpoint of the last landed chunk) and runs them for the chunk's share of
the horizon. Rows "vote_batch" and "leaderboard" land per batch; the last chunk reports the votes
to convergence (a run that does not converge counts as its horizon). Our own design [inferred].

Trial params, grid mode: `arm` ('ranker:K'), `noise` (flip probability), `replicate`. Optuna mode:
K-Sort and voter parameters (`methods.ksort` / `sims.voters` search spaces) for `tune_arm`, over
`tune_replicates` fixed truths.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from actors.arena_voter import ArenaOwner, VoterPool
from actors.task import register_task
from methods import ksort
from methods.config_dict import ConfigDict
from methods.errors import ConfigError
from methods.ranking import RANKERS, make_ranker
from methods.ranking.base import BaseRanker
from sims.voters import VoterConfig


def parse_arm(arm: str) -> tuple[str, int]:
    """'ksort:4' → ('ksort', 4); the ranker must be registered."""
    name, _, k = str(arm).partition(":")
    if not k.isdigit() or int(k) < 2:
        raise ConfigError(f"An arm is 'ranker:K' with K ≥ 2 (e.g. 'ksort:4'), got {arm!r}.")
    RANKERS.get(name)  # unknown names list the known ones
    return name, int(k)


@dataclass(frozen=True)
class ArenaTaskConfig(ConfigDict):
    """What every trial of one arena sweep shares (field meanings: sweeps/arena_convergence.py).

    pool_id: names the run's shared voter actors; voter_options: their Ray `.options()` (the
    sweep resolves a named profile); study_seed: truth seed of replicate r = r + 1000·study_seed.
    """

    pool_id: str = "arena"
    voter_actors: int = 2
    voter_options: dict[str, Any] = field(default_factory=dict)
    n_models: int = 50
    vote_mode: str = "rank"
    window: int = 200
    max_votes: int = 2500
    horizons: dict[str, int] = field(default_factory=lambda: {"elo": 60000, "bradley_terry": 6000})
    batch_votes: int = 1
    random_batch_votes: int = 250
    bt_eval_every: int = 5
    top_k: int = 5
    board_every: int = 100
    tune_arm: str = "ksort:4"
    tune_noise_model: str = "flip"
    tune_replicates: int = 2
    study_seed: int = 0
    version: int = 1

    def __post_init__(self) -> None:
        if self.version != 1:
            raise ConfigError(f"ArenaTaskConfig version 1 expected, got {self.version}.")
        parse_arm(self.tune_arm)
        counts = ("voter_actors", "n_models", "window", "max_votes", "batch_votes", "random_batch_votes",
                  "bt_eval_every", "top_k", "board_every", "tune_replicates")
        bad = [f"{n}={getattr(self, n)!r}" for n in counts if getattr(self, n) < 1]
        bad += [f"horizons[{k!r}]={v!r}" for k, v in self.horizons.items() if not isinstance(v, int) or v < 1]
        if bad:
            raise ConfigError(f"Counts must be ≥ 1; got {', '.join(bad)}.")
        for name in self.horizons:
            RANKERS.get(name)
        VoterConfig(noise=self.tune_noise_model, vote_mode=self.vote_mode)  # validates both

    def horizon(self, ranker: str) -> int:
        return self.horizons.get(ranker, self.max_votes)


@register_task("arena_convergence")
class ArenaTask:
    """Built once per evaluator actor; every trial builds fresh arena owners (or restores them)."""

    def __init__(self, cfg: ArenaTaskConfig) -> None:
        self.cfg = cfg
        self.pool = VoterPool(cfg.pool_id, cfg.voter_actors, cfg.voter_options)

    def _runs(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        cfg = self.cfg
        if "arm" in params:  # grid: one run
            ranker, k = parse_arm(params["arm"])
            base = {"noise": "flip", "flip_prob": float(params["noise"])}
            return [dict(ranker=ranker, k=k, voters=base, ksort={},
                         truth_seed=int(params["replicate"]) + 1000 * cfg.study_seed)]
        ranker, k = parse_arm(cfg.tune_arm)
        ks_fields = {f.name for f in fields(ksort.KSortConfig)}
        voter_over = {n: v for n, v in params.items() if n not in ks_fields}
        return [dict(ranker=ranker, k=k, voters={"noise": cfg.tune_noise_model, **voter_over},
                     ksort={n: v for n, v in params.items() if n in ks_fields},
                     truth_seed=r + 1000 * cfg.study_seed) for r in range(cfg.tune_replicates)]

    def _owner(self, run: dict[str, Any]) -> ArenaOwner:
        cfg = self.cfg
        vcfg = {"n_models": cfg.n_models, "vote_mode": cfg.vote_mode, "seed": run["truth_seed"],
                **run["voters"]}
        truth = self.pool.handles[0].truth.remote(vcfg)
        import ray

        truth = ray.get(truth, timeout=300)
        config = ksort.KSortConfig(**run["ksort"]) if run["ranker"] == "ksort" else None
        ranker = make_ranker(run["ranker"], truth["names"], config)
        random_mm = type(ranker).propose_match is BaseRanker.propose_match
        return ArenaOwner(
            ranker, run["k"], vcfg, np.asarray(truth["positions"]),
            np.random.default_rng([run["truth_seed"], 7]), horizon=cfg.horizon(run["ranker"]),
            batch_votes=cfg.random_batch_votes if random_mm else cfg.batch_votes,
            window=cfg.window, eval_every=cfg.bt_eval_every if run["ranker"] == "bradley_terry" else 1,
            top_k=cfg.top_k, board_every=cfg.board_every)

    def evaluate(self, params: dict[str, Any], *, seed: int, trial: int, chunk: int, n_chunks: int,
                 checkpoint: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        t0 = time.perf_counter()
        if checkpoint is not None:
            owners = [ArenaOwner.restore(s) for s in checkpoint]
        elif chunk == 0:
            owners = [self._owner(r) for r in self._runs(params)]
        else:
            raise ConfigError(f"Trial {trial} chunk {chunk} arrived without the arena checkpoint "
                              f"of chunk {chunk - 1}; rerun the trial from chunk 0.")
        rows: list[dict[str, Any]] = []
        for i, owner in enumerate(owners):
            until = math.ceil(owner.horizon * (chunk + 1) / n_chunks)
            extra = {"run": i, "truth_seed": owner.voter_config["seed"]}
            rows += [{**r, **extra} for r in owner.run(self.pool, until)]
        if chunk < n_chunks - 1:
            return {"rows": rows, "checkpoint": [o.snapshot() for o in owners]}
        conv = [o.converged_at for o in owners]
        censored = [float(o.horizon if o.converged_at is None else o.converged_at) for o in owners]
        metrics = {"ranker": owners[0].ranker.name, "K": owners[0].k,
                   "votes_to_converge": None if conv[0] is None else float(conv[0]),
                   "converged": sum(c is not None for c in conv), "n_runs": len(owners),
                   "final_mse": float(np.mean([o.last_mse for o in owners])),
                   "n_votes": int(sum(o.n_votes for o in owners)), "horizon": owners[0].horizon,
                   "batch_votes": owners[0].batch_votes, "window": self.cfg.window,
                   "votes_per_run": json.dumps(conv), "chunk_seconds": time.perf_counter() - t0}
        return {"rows": rows, "objectives": {"votes": float(np.mean(censored))}, "metrics": metrics}
